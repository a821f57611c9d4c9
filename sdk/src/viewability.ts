/** The IAB rule: an item counts as seen once at least half of it stayed visible 1 s in a row. */
export const VISIBLE_RATIO = 0.5;
export const VISIBLE_MS = 1000;

type Timers = {
  set: (fn: () => void, ms: number) => unknown;
  clear: (handle: unknown) => void;
};

const realTimers: Timers = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (handle) => clearTimeout(handle as number),
};

/** Tracks visibility changes per item key and calls `seen` once per key. */
export class Viewability {
  private pending: Record<string, unknown> = {};
  private done: Record<string, 1> = {};

  constructor(
    private readonly seen: (key: string) => void,
    private readonly timers: Timers = realTimers,
  ) {}

  change(key: string, ratio: number): void {
    if (this.done[key]) return;
    const running = key in this.pending;
    if (ratio >= VISIBLE_RATIO && !running) {
      this.pending[key] = this.timers.set(() => {
        delete this.pending[key];
        this.done[key] = 1;
        this.seen(key);
      }, VISIBLE_MS);
    } else if (ratio < VISIBLE_RATIO && running) {
      this.timers.clear(this.pending[key]);
      delete this.pending[key];
    }
  }

  /** A hidden page shows nothing: every running count starts over. */
  reset(): void {
    for (const key in this.pending) this.timers.clear(this.pending[key]);
    this.pending = {};
  }
}
