import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Viewability } from "../src/viewability";

describe("the IAB viewability rule", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("counts an item half visible for one continuous second, once", () => {
    const seen: string[] = [];
    const view = new Viewability((key) => seen.push(key));
    view.change("0", 0.6);
    vi.advanceTimersByTime(999);
    expect(seen).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(seen).toEqual(["0"]);
    view.change("0", 0);
    view.change("0", 1);
    vi.advanceTimersByTime(5000);
    expect(seen).toEqual(["0"]);
  });

  it("does not count an item scrolled past quickly", () => {
    const seen: string[] = [];
    const view = new Viewability((key) => seen.push(key));
    view.change("0", 1);
    vi.advanceTimersByTime(600);
    view.change("0", 0.2);
    vi.advanceTimersByTime(600);
    view.change("0", 0.7);
    vi.advanceTimersByTime(600);
    expect(seen).toEqual([]);
  });

  it("does not count an item less than half visible", () => {
    const seen: string[] = [];
    const view = new Viewability((key) => seen.push(key));
    view.change("1", 0.49);
    vi.advanceTimersByTime(3000);
    expect(seen).toEqual([]);
  });

  it("starts over when the page is hidden", () => {
    const seen: string[] = [];
    const view = new Viewability((key) => seen.push(key));
    view.change("0", 1);
    vi.advanceTimersByTime(800);
    view.reset();
    vi.advanceTimersByTime(800);
    expect(seen).toEqual([]);
  });
});
