import { backoff, type EventQueue, MAX_BATCH } from "./queue";
import type { TrackEvent } from "./types";

/** What became of a batch: sent (or refused for good, so dropped), retry later, or consent needed. */
export type Outcome = "done" | "retry" | "consent";
export type Send = (events: TrackEvent[], unloading: boolean) => Promise<Outcome>;

export const FLUSH_MS = 2000;

/** Batches events (≤ 100, every 2 s or at once on demand), retrying with backoff. */
export class Tracker {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private attempt = 0;
  private busy = false;

  constructor(
    private readonly queue: EventQueue,
    private readonly send: Send,
    private readonly onConsentRequired: () => void,
  ) {
    if (queue.size) this.schedule(FLUSH_MS);
  }

  add(event: TrackEvent, now = false): void {
    this.queue.push(event);
    if (now || this.queue.size >= MAX_BATCH) this.flush();
    else if (!this.attempt) this.schedule(FLUSH_MS);
  }

  clear(): void {
    this.queue.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Sends the oldest batch; `unloading` hands it to the browser to finish after the page. */
  flush(unloading = false): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const batch = this.queue.peek();
    if (!batch.length || (this.busy && !unloading)) return;
    this.busy = true;
    this.send(batch, unloading)
      .catch((): Outcome => "retry")
      .then((outcome) => {
        this.busy = false;
        if (outcome === "consent") {
          this.onConsentRequired();
          return;
        }
        if (outcome === "retry") {
          this.attempt++;
          this.schedule(backoff(this.attempt));
          return;
        }
        this.attempt = 0;
        this.queue.remove(batch);
        if (this.queue.size) this.schedule(0);
      });
  }

  private schedule(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, ms);
  }
}
