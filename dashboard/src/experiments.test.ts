import { describe, expect, it } from "vitest";
import { validateExperiment } from "./experiments";

const ok = { name: "Home test", placementId: "home", controlStrategy: "collaborative", variantStrategy: "trending", trafficSplit: "50", metric: "ctr" };

describe("validateExperiment", () => {
  it("accepts what the api accepts", () => {
    expect(validateExperiment(ok)).toEqual({});
  });

  it("refuses the same strategy on both arms, a bad split and a bad placement as the api does", () => {
    const errors = validateExperiment({ ...ok, variantStrategy: "collaborative", trafficSplit: "101", placementId: "-home", name: " " });
    expect(Object.keys(errors).sort()).toEqual(["name", "placementId", "trafficSplit", "variantStrategy"]);
  });

  it("refuses a fractional split", () => {
    expect(validateExperiment({ ...ok, trafficSplit: "12.5" }).trafficSplit).toBeDefined();
  });
});
