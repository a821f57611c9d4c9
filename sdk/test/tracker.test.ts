import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { EventQueue } from "../src/queue";
import { type Outcome, Tracker } from "../src/tracker";
import type { TrackEvent } from "../src/types";

const event = (productId: string): TrackEvent => ({ eventType: "recommendation_clicked", productId });

describe("the event tracker", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("sends queued events together after two seconds", async () => {
    const sent: TrackEvent[][] = [];
    const tracker = new Tracker(
      new EventQueue(null, "q"),
      async (events) => {
        sent.push(events);
        return "done";
      },
      () => undefined,
    );
    tracker.add(event("a"));
    tracker.add(event("b"));
    await vi.advanceTimersByTimeAsync(1999);
    expect(sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sent.map((batch) => batch.map((e) => e.productId))).toEqual([["a", "b"]]);
  });

  it("retries a failed batch with backoff and sends it once it goes through", async () => {
    const outcomes: Outcome[] = ["retry", "retry", "done"];
    let calls = 0;
    const queue = new EventQueue(null, "q");
    const tracker = new Tracker(
      queue,
      async () => {
        calls++;
        const outcome = outcomes.shift();
        if (!outcome) throw new Error("sent too often");
        return outcome;
      },
      () => undefined,
    );
    tracker.add(event("a"), true);
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(20000);
    expect(calls).toBe(3);
    expect(queue.size).toBe(0);
    await vi.advanceTimersByTimeAsync(60000);
    expect(calls).toBe(3);
  });

  it("treats a network failure as a reason to retry, keeping the events", async () => {
    const queue = new EventQueue(null, "q");
    const tracker = new Tracker(
      queue,
      async () => {
        throw new TypeError("Failed to fetch");
      },
      () => undefined,
    );
    tracker.add(event("a"), true);
    await vi.advanceTimersByTimeAsync(0);
    expect(queue.size).toBe(1);
  });

  it("clears the queue when the tenant requires consent", async () => {
    const queue = new EventQueue(null, "q");
    let asked = 0;
    const tracker = new Tracker(
      queue,
      async () => "consent",
      () => {
        asked++;
        tracker.clear();
      },
    );
    tracker.add(event("a"), true);
    await vi.advanceTimersByTimeAsync(0);
    expect(asked).toBe(1);
    expect(queue.size).toBe(0);
  });

  it("sends at once when a batch is full", async () => {
    const sizes: number[] = [];
    const tracker = new Tracker(
      new EventQueue(null, "q"),
      async (events) => {
        sizes.push(events.length);
        return "done";
      },
      () => undefined,
    );
    for (let i = 0; i < 100; i++) tracker.add(event(`p${i}`));
    await vi.advanceTimersByTimeAsync(0);
    expect(sizes).toEqual([100]);
  });
});
