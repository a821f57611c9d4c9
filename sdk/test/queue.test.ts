import { describe, expect, it } from "vitest";
import { backoff, EventQueue, type KeyValue, MAX_AGE_MS, MAX_BATCH, MAX_QUEUED, prune } from "../src/queue";

class Memory implements KeyValue {
  data: Record<string, string> = {};
  getItem(key: string) {
    return key in this.data ? this.data[key] : null;
  }
  setItem(key: string, value: string) {
    this.data[key] = value;
  }
  removeItem(key: string) {
    delete this.data[key];
  }
}

const event = (productId: string) => ({ eventType: "recommendation_impressed", productId });

describe("the local event queue", () => {
  it("survives a reload through storage", () => {
    const store = new Memory();
    new EventQueue(store, "q").push(event("p1"));
    const reloaded = new EventQueue(store, "q");
    expect(reloaded.peek().map((e) => e.productId)).toEqual(["p1"]);
  });

  it("drops events older than a day", () => {
    let now = 1_000_000;
    const store = new Memory();
    const queue = new EventQueue(store, "q", () => now);
    queue.push(event("old"));
    now += MAX_AGE_MS + 1;
    queue.push(event("new"));
    expect(new EventQueue(store, "q", () => now).peek().map((e) => e.productId)).toEqual(["new"]);
  });

  it("is bounded and keeps the newest events", () => {
    const items = Array.from({ length: MAX_QUEUED + 10 }, (_, i) => ({ e: event(`p${i}`), t: 5 }));
    const kept = prune(items, 10);
    expect(kept).toHaveLength(MAX_QUEUED);
    expect(kept[0].e.productId).toBe("p10");
  });

  it("hands out at most one batch of 100", () => {
    const queue = new EventQueue(null, "q");
    for (let i = 0; i < 150; i++) queue.push(event(`p${i}`));
    expect(queue.peek()).toHaveLength(MAX_BATCH);
  });

  it("removes only the events that were sent", () => {
    const queue = new EventQueue(null, "q");
    queue.push(event("a"));
    const batch = queue.peek();
    queue.push(event("b"));
    queue.remove(batch);
    expect(queue.peek().map((e) => e.productId)).toEqual(["b"]);
  });

  it("starts afresh from a corrupt stored value", () => {
    const store = new Memory();
    store.setItem("q", "{not json");
    expect(new EventQueue(store, "q").size).toBe(0);
  });

  it("is emptied from storage when cleared", () => {
    const store = new Memory();
    const queue = new EventQueue(store, "q");
    queue.push(event("a"));
    queue.clear();
    expect(store.getItem("q")).toBeNull();
  });
});

describe("retry backoff", () => {
  it("doubles from two seconds and is capped at five minutes", () => {
    expect(backoff(1, 0.5)).toBe(2000);
    expect(backoff(2, 0.5)).toBe(4000);
    expect(backoff(3, 0.5)).toBe(8000);
    expect(backoff(30, 0.5)).toBe(300000);
  });

  it("spreads retries by up to a quarter either way", () => {
    expect(backoff(1, 0)).toBe(1500);
    expect(backoff(1, 1)).toBe(2500);
  });
});
