/**
 * RecomEngine storefront SDK: finds its own script tag, renders every placement element on the
 * page (and those added later), and tracks impressions and clicks. Only `window.RecomEngine`
 * is global.
 */
import { type Client, fetchRecommendations, fetchWidget, postEvents, postMerge, type Query } from "./api";
import { EventQueue, type KeyValue } from "./queue";
import { paint } from "./renderer";
import { Tracker } from "./tracker";
import type { Answer, TrackEvent } from "./types";
import { apiBaseOf } from "./url";
import { Viewability } from "./viewability";

interface InitOptions {
  apiKey: string;
  userId?: string;
  userToken?: string;
  apiBase?: string;
  requireConsent?: boolean;
}

const PLACEMENT = "data-recomengine-placement";
const STATE = "data-recomengine-state";
const ANON_KEY = "recomengine:anon";
const CONSENT_KEY = "recomengine:consent";
const REQUIRE_KEY = "recomengine:requireConsent";

(() => {
  const w = window as unknown as { RecomEngine?: unknown };
  if (w.RecomEngine) return;
  const doc = document;
  const script =
    (doc.currentScript as HTMLScriptElement | null) ||
    doc.querySelector<HTMLScriptElement>("script[data-api-key][src*='recomengine']");
  let storage: KeyValue | null = null;
  try {
    storage = localStorage;
    storage.getItem(ANON_KEY);
  } catch {
    storage = null; // storage blocked: ids and the queue live in memory only
  }
  const read = (key: string) => (storage ? storage.getItem(key) : null);
  const write = (key: string, value: string) => {
    try {
      storage?.setItem(key, value);
    } catch {
      // quota or privacy mode
    }
  };

  let client: Client | null = null;
  let userId = "";
  let tracker: Tracker | null = null;
  let requireConsent = false;
  const stored = read(CONSENT_KEY);
  let consented: boolean | null = stored === "1" ? true : stored === "0" ? false : null;
  const rendered = new WeakMap<Element, () => void>();
  const views: Viewability[] = [];

  const random = () => {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    let out = "";
    for (let i = 0; i < bytes.length; i++) out += (bytes[i] + 256).toString(16).slice(1);
    return out;
  };

  const anonymousId = () => {
    let id = read(ANON_KEY);
    if (!id) {
      id = `anon-${random()}`;
      write(ANON_KEY, id);
    }
    return id;
  };

  const tracking = () => consented === true || (consented === null && !requireConsent);

  function ready(): Client {
    if (!client) throw new Error("RecomEngine: call init({apiKey}) first");
    return client;
  }

  function init(options: InitOptions): void {
    if (!options?.apiKey) throw new Error("RecomEngine: apiKey is required");
    const current: Client = {
      apiKey: options.apiKey,
      apiBase: apiBaseOf(script ? script.src : null, options.apiBase || null),
      userToken: options.userToken || null,
    };
    client = current;
    userId = options.userId || anonymousId();
    requireConsent = !!options.requireConsent || read(REQUIRE_KEY) === "1";
    const queue = new EventQueue(storage, `recomengine:queue:${options.apiKey.slice(0, 16)}`);
    const next = new Tracker(
      queue,
      (events, unloading) => postEvents(current, events, unloading, consented),
      () => {
        // The tenant asks for consent first: nothing more is sent or kept until it is given.
        requireConsent = true;
        write(REQUIRE_KEY, "1");
        next.clear();
      },
    );
    tracker = next;
  }

  function track(event: TrackEvent, now = false): boolean {
    if (!tracker || !tracking() || !event?.eventType) return false;
    tracker.add(
      {
        ...event,
        userId: event.userId || userId,
        eventId: event.eventId || random(),
        timestamp: event.timestamp || new Date().toISOString(),
      },
      now || event.eventType === "purchase",
    );
    return true;
  }

  function recommend(options: Partial<Query>): Promise<Answer> {
    return fetchRecommendations(ready(), { userId, ...options });
  }

  function watch(host: Element, nodes: HTMLElement[], answer: Answer, placementId: string) {
    const meta = answer.meta;
    const details = (i: number) => {
      const data: Record<string, unknown> = {
        placementId,
        recommendationId: meta.recommendationId,
        position: i + 1,
        strategy: meta.strategy,
      };
      if (meta.experimentId) {
        data.experimentId = meta.experimentId;
        data.variant = meta.variant;
      }
      return data;
    };
    const emit = (type: string, i: number, now: boolean) =>
      track({ eventType: type, productId: answer.data[i].productId, metadata: details(i) }, now);
    let observer: IntersectionObserver | null = null;
    const view = new Viewability((key) => {
      const i = Number(key);
      emit("recommendation_impressed", i, false);
      observer?.unobserve(nodes[i]);
    });
    if ("IntersectionObserver" in window) {
      observer = new IntersectionObserver(
        (entries) => {
          for (const entry of entries) {
            const ratio = entry.isIntersecting ? entry.intersectionRatio : 0;
            view.change(String(nodes.indexOf(entry.target as HTMLElement)), ratio);
          }
        },
        { threshold: [0, 0.5, 1] },
      );
      for (const node of nodes) observer.observe(node);
    }
    nodes.forEach((node, i) => {
      // Capture, so the click is queued (and its request under way) before any navigation.
      node.addEventListener("click", () => emit("recommendation_clicked", i, true), true);
    });
    views.push(view);
    rendered.set(host, () => {
      observer?.disconnect();
      view.reset();
      views.splice(views.indexOf(view), 1);
    });
  }

  async function render(target: Element | string, options: Partial<Query> = {}): Promise<void> {
    const host = typeof target === "string" ? doc.querySelector(target) : target;
    if (!(host instanceof HTMLElement)) return;
    const attr = (name: string) => host.getAttribute(`data-${name}`);
    const placementId = options.placementId || attr("recomengine-placement") || "";
    const previous = rendered.get(host);
    if (previous) previous();
    rendered.set(host, () => undefined);
    host.setAttribute(STATE, "loading");
    try {
      const current = ready();
      const query: Query = {
        userId,
        placementId: placementId || null,
        productId: attr("product-id"),
        strategy: attr("strategy"),
        limit: attr("limit"),
        category: attr("category"),
        ...options,
      };
      const pending = placementId ? fetchWidget(current, placementId) : Promise.resolve({});
      const answer = await fetchRecommendations(current, query);
      const widget = await pending;
      performance.mark(`recomengine:answer:${placementId}`);
      const nodes = paint(host, answer.data, widget, location.href);
      host.setAttribute(STATE, nodes.length ? "ready" : "empty");
      performance.mark(`recomengine:painted:${placementId}`);
      watch(host, nodes, answer, placementId);
    } catch {
      // A refused key, a suspended tenant, a 500 or no network: the page goes on, empty slot.
      const root = host.shadowRoot;
      if (root) while (root.firstChild) root.removeChild(root.firstChild);
      host.setAttribute(STATE, "error");
    }
  }

  function scan(root: ParentNode): void {
    if (!client) return;
    const found: Element[] = [];
    if (root instanceof Element && root.hasAttribute(PLACEMENT)) found.push(root);
    const inside = root.querySelectorAll(`[${PLACEMENT}]`);
    for (let i = 0; i < inside.length; i++) found.push(inside[i]);
    for (const host of found) if (!rendered.has(host)) render(host);
  }

  function identify(newUserId: string, userToken?: string): void {
    const current = ready();
    if (!newUserId) return;
    const anonymous = read(ANON_KEY);
    const from = userId;
    userId = newUserId;
    current.userToken = userToken || null;
    // The anonymous history joins the user's (the API checks the key or the user's token).
    if (from && from !== newUserId && from === anonymous && tracking()) {
      postMerge(current, from, newUserId).catch(() => undefined);
    }
  }

  function consent(granted: boolean): void {
    consented = !!granted;
    write(CONSENT_KEY, consented ? "1" : "0");
    if (!consented && tracker) tracker.clear();
  }

  w.RecomEngine = {
    init,
    recommend,
    render,
    track: (event: TrackEvent) => track(event),
    identify,
    consent,
  };

  const flushNow = () => tracker?.flush(true);
  addEventListener("pagehide", flushNow);
  doc.addEventListener("visibilitychange", () => {
    if (doc.visibilityState === "hidden") {
      flushNow();
      for (const view of views) view.reset();
    }
  });
  addEventListener("online", () => tracker?.flush());

  const apiKey = script?.getAttribute("data-api-key");
  if (apiKey) {
    try {
      init({
        apiKey,
        userId: script?.getAttribute("data-user-id") || undefined,
        userToken: script?.getAttribute("data-user-token") || undefined,
        apiBase: script?.getAttribute("data-api-base") || undefined,
        requireConsent: script?.hasAttribute("data-require-consent"),
      });
    } catch {
      return;
    }
    const start = () => {
      scan(doc);
      new MutationObserver((mutations) => {
        for (const mutation of mutations) {
          const added = mutation.addedNodes;
          for (let i = 0; i < added.length; i++) if (added[i] instanceof Element) scan(added[i] as Element);
        }
      }).observe(doc.documentElement, { childList: true, subtree: true });
    };
    if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", start);
    else start();
  }
})();
