import type { TrackEvent } from "./types";

/** Events kept at most this long in the browser before they are dropped unsent. */
export const MAX_AGE_MS = 24 * 3600 * 1000;
/** The local queue is bounded: the oldest events go first when it is full. */
export const MAX_QUEUED = 500;
export const MAX_BATCH = 100;

export interface Queued {
  e: TrackEvent;
  t: number;
}

export interface KeyValue {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Keeps what is younger than a day, at most MAX_QUEUED of the newest. */
export function prune(items: Queued[], now: number): Queued[] {
  const fresh = items.filter((q) => q?.e && now - q.t < MAX_AGE_MS && q.t <= now + 60000);
  return fresh.slice(-MAX_QUEUED);
}

/** Delay before retry `attempt` (1, 2, ...): doubling from 2 s, capped at 5 min, with jitter. */
export function backoff(attempt: number, random: number = Math.random()): number {
  const base = Math.min(2000 * 2 ** Math.max(attempt - 1, 0), 300000);
  return Math.round(base * (0.75 + random / 2));
}

/** A bounded event queue that survives a reload (localStorage when the page allows it). */
export class EventQueue {
  private items: Queued[];

  constructor(
    private readonly store: KeyValue | null,
    private readonly key: string,
    private readonly now: () => number = Date.now,
  ) {
    let loaded: Queued[] = [];
    try {
      loaded = JSON.parse(store?.getItem(key) || "[]");
    } catch {
      // a corrupt or foreign value: start afresh
    }
    this.items = prune(Array.isArray(loaded) ? loaded : [], now());
  }

  get size(): number {
    return this.items.length;
  }

  push(event: TrackEvent): void {
    this.items.push({ e: event, t: this.now() });
    this.items = prune(this.items, this.now());
    this.save();
  }

  /** The oldest events, at most one batch, without removing them. */
  peek(): TrackEvent[] {
    this.items = prune(this.items, this.now());
    return this.items.slice(0, MAX_BATCH).map((q) => q.e);
  }

  /** Removes the given events once the API has them (by identity: new ones may have come). */
  remove(sent: TrackEvent[]): void {
    this.items = this.items.filter((q) => sent.indexOf(q.e) < 0);
    this.save();
  }

  clear(): void {
    this.items = [];
    try {
      this.store?.removeItem(this.key);
    } catch {
      // storage refused: nothing kept anyway
    }
  }

  private save(): void {
    try {
      this.store?.setItem(this.key, JSON.stringify(this.items));
    } catch {
      // private mode or quota: the queue lives in memory only
    }
  }
}
