import type { Outcome } from "./tracker";
import type { Answer, TrackEvent, Widget } from "./types";

export interface Client {
  apiKey: string;
  apiBase: string;
  userToken?: string | null;
}

function headers(client: Client, json?: boolean): Record<string, string> {
  const h: Record<string, string> = { "X-API-Key": client.apiKey };
  if (client.userToken) h["X-User-Token"] = client.userToken;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function getJson(client: Client, path: string, cache?: RequestCache): Promise<Response> {
  return fetch(client.apiBase + path, { headers: headers(client), credentials: "omit", cache });
}

export interface Query {
  userId: string;
  placementId?: string | null;
  productId?: string | null;
  strategy?: string | null;
  limit?: number | string | null;
  category?: string | null;
}

export async function fetchRecommendations(client: Client, query: Query): Promise<Answer> {
  const params: string[] = [];
  for (const name in query) {
    const value = query[name as keyof Query];
    if (value != null && value !== "") params.push(`${name}=${encodeURIComponent(String(value))}`);
  }
  const response = await getJson(client, `/api/v1/recommendations?${params.join("&")}`);
  if (!response.ok) throw new Error(`RecomEngine: recommendations answered ${response.status}`);
  const answer = (await response.json()) as Answer;
  if (!answer || !Array.isArray(answer.data) || !answer.meta) throw new Error("RecomEngine: bad answer");
  return answer;
}

/** The placement's widget config; none (404) or any failure means the defaults. */
export async function fetchWidget(client: Client, placementId: string): Promise<Widget> {
  try {
    // Revalidated on every page (a 304 when unchanged), so an admin's change shows at once.
    const response = await getJson(client, `/api/v1/widgets/${encodeURIComponent(placementId)}`, "no-cache");
    return response.ok ? ((await response.json()) as Widget) : {};
  } catch {
    return {};
  }
}

/** Posts storefront events; `unloading` keeps the request alive after the page is gone. */
export async function postEvents(
  client: Client,
  events: TrackEvent[],
  unloading: boolean,
  consent: boolean | null,
): Promise<Outcome> {
  const response = await fetch(`${client.apiBase}/api/v1/storefront/events`, {
    method: "POST",
    headers: headers(client, true),
    body: JSON.stringify({ events, consent }),
    keepalive: unloading,
    credentials: "omit",
  });
  if (response.status === 403 && (response.headers.get("content-type") || "").indexOf("problem") >= 0) {
    const problem = await response.json().catch(() => ({}));
    if (String(problem.type || "").indexOf("consent") >= 0) return "consent";
  }
  // 429 and 5xx are passing troubles; any other refusal would be refused again: drop it.
  return response.status === 429 || response.status >= 500 ? "retry" : "done";
}

export async function postMerge(client: Client, fromUserId: string, toUserId: string): Promise<void> {
  await fetch(`${client.apiBase}/api/v1/users/merge`, {
    method: "POST",
    headers: headers(client, true),
    body: JSON.stringify({ fromUserId, toUserId }),
    credentials: "omit",
  });
}
