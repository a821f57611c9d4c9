/** The admin's session: the access token lives in memory only; the refresh token is an
 * HttpOnly cookie the api rotates, echoed with the CSRF header on every refresh. */
const CSRF_COOKIE = "recomengine_csrf";
const CSRF_HEADER = "X-CSRF-Token";
// Refresh a minute before the access token expires, so a request never meets an expired one.
const REFRESH_MARGIN_SECONDS = 60;

let accessToken: string | null = null;
let timer: ReturnType<typeof setTimeout> | undefined;
let inFlight: Promise<boolean> | null = null;
const endListeners = new Set<() => void>();

export function getAccessToken(): string | null {
  return accessToken;
}

export function csrfToken(): string {
  const match = document.cookie.split("; ").find((c) => c.startsWith(`${CSRF_COOKIE}=`));
  return match ? decodeURIComponent(match.slice(CSRF_COOKIE.length + 1)) : "";
}

export function csrfHeaders(): Record<string, string> {
  return { [CSRF_HEADER]: csrfToken() };
}

export function startSession(token: string, expiresIn: number): void {
  accessToken = token;
  clearTimeout(timer);
  const delay = Math.max(5, expiresIn - REFRESH_MARGIN_SECONDS) * 1000;
  timer = setTimeout(() => void refreshSession(), delay);
}

export function endSession(): void {
  const hadSession = accessToken !== null;
  accessToken = null;
  clearTimeout(timer);
  if (hadSession) endListeners.forEach((listener) => listener());
}

/** Called when a session ends by itself (refresh refused): the app goes back to sign-in. */
export function onSessionEnd(listener: () => void): () => void {
  endListeners.add(listener);
  return () => endListeners.delete(listener);
}

/** Trade the refresh cookie for a new access token; false when there is no valid session. */
export function refreshSession(): Promise<boolean> {
  if (inFlight) return inFlight;
  inFlight = (async () => {
    try {
      const answer = await fetch(`${location.origin}/api/v1/auth/refresh`, {
        method: "POST",
        credentials: "same-origin",
        headers: csrfHeaders(),
      });
      if (!answer.ok) {
        endSession();
        return false;
      }
      const body = (await answer.json()) as { accessToken: string; expiresIn: number };
      startSession(body.accessToken, body.expiresIn);
      return true;
    } catch {
      return false;
    } finally {
      inFlight = null;
    }
  })();
  return inFlight;
}
