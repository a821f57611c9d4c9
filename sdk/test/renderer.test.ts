import { describe, expect, it } from "vitest";
import { layoutOf, price } from "../src/renderer";

describe("the widget config", () => {
  it("falls back to the spec's defaults", () => {
    expect(layoutOf({})).toEqual({
      layout: "grid",
      columns: 4,
      maxItems: 8,
      showPrice: true,
      cta: "View Product",
      colour: "#2563EB",
      font: "",
    });
  });

  it("is followed when valid and ignored when not", () => {
    const look = layoutOf({
      layout: "carousel",
      columns: 9,
      maxItems: 5,
      showPrice: false,
      ctaText: "Buy",
      theme: { primaryColor: "red;background:url(x)", fontFamily: "Georgia" },
    });
    expect(look).toMatchObject({ layout: "carousel", columns: 4, maxItems: 5, showPrice: false, cta: "Buy" });
    expect(look.colour).toBe("#2563EB");
    expect(layoutOf({ layout: "<script>" }).layout).toBe("grid");
  });
});

describe("prices", () => {
  it("are formatted in their currency, or plainly without one", () => {
    expect(price({ productId: "p", price: 12.5, currency: "EUR" })).toMatch(/12\.50/);
    expect(price({ productId: "p", price: 12.5 })).toBe("12.50");
    expect(price({ productId: "p", price: 3, currency: "NOT-A-CODE" })).toBe("3.00");
    expect(price({ productId: "p", price: null })).toBe("");
  });
});
