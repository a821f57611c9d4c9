import { describe, expect, it } from "vitest";
import { apiBaseOf, safeUrl } from "../src/url";

describe("links and images", () => {
  it("keep http and https addresses", () => {
    expect(safeUrl("https://shop.example/p/1", "https://shop.example/")).toBe("https://shop.example/p/1");
    expect(safeUrl("/p/2", "http://shop.example/x")).toBe("http://shop.example/p/2");
  });

  it("drop javascript, data and other schemes", () => {
    for (const bad of ["javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,x", "vbscript:x"]) {
      expect(safeUrl(bad, "https://shop.example/")).toBeNull();
    }
  });

  it("drop what is not a string", () => {
    expect(safeUrl(null, "https://shop.example/")).toBeNull();
    expect(safeUrl({ toString: () => "https://x" }, "https://shop.example/")).toBeNull();
  });
});

describe("the API base", () => {
  it("is the origin of the script's own src", () => {
    expect(apiBaseOf("https://api.example:5008/v1/recomengine.js", null, "https://shop.example/")).toBe(
      "https://api.example:5008",
    );
  });

  it("is data-api-base when given, without a trailing slash", () => {
    expect(
      apiBaseOf(
        "https://cdn.example/v1/recomengine.js",
        "https://api.example/base/",
        "https://shop.example/",
      ),
    ).toBe("https://api.example/base");
  });
});
