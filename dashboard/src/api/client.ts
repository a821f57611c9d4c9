/** The typed api client: paths and bodies come from the generated OpenAPI types. */
import createClient, { type Middleware } from "openapi-fetch";
import { problemFrom, ProblemError } from "./problem";
import type { components, paths } from "./schema";
import { csrfHeaders, getAccessToken, refreshSession } from "./session";

export type Schemas = components["schemas"];

const authorise: Middleware = {
  onRequest({ request }) {
    const token = getAccessToken();
    if (token && !request.headers.has("Authorization")) {
      request.headers.set("Authorization", `Bearer ${token}`);
    }
    if (request.url.includes("/api/v1/auth/")) {
      for (const [name, value] of Object.entries(csrfHeaders())) request.headers.set(name, value);
    }
    return request;
  },
};

export const api = createClient<paths>({
  baseUrl: typeof location === "undefined" ? "" : location.origin,
  credentials: "same-origin",
  // Looked up at call time, not captured at start-up (tests replace it).
  fetch: (request: Request) => globalThis.fetch(request),
});
api.use(authorise);

interface Outcome<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** Run a call, refreshing the session once on 401; the data, or a thrown ProblemError. */
export async function call<T>(send: () => Promise<Outcome<T>>): Promise<T> {
  let outcome: Outcome<T>;
  try {
    outcome = await send();
    if (outcome.response.status === 401 && getAccessToken() !== null && (await refreshSession())) {
      outcome = await send();
    }
  } catch (error) {
    if (error instanceof ProblemError) throw error;
    throw problemFrom(0, null);
  }
  if (!outcome.response.ok) throw problemFrom(outcome.response.status, outcome.error);
  return outcome.data as T;
}

/** An authenticated fetch for what the typed client does not cover (CSV, event stream). */
export async function authorisedFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const send = () =>
    fetch(`${location.origin}${path}`, {
      ...init,
      credentials: "same-origin",
      headers: { ...(init.headers ?? {}), Authorization: `Bearer ${getAccessToken() ?? ""}` },
    });
  let answer = await send();
  if (answer.status === 401 && (await refreshSession())) answer = await send();
  if (!answer.ok) {
    let body: unknown = null;
    try {
      body = await answer.json();
    } catch {
      body = null;
    }
    throw problemFrom(answer.status, body);
  }
  return answer;
}
