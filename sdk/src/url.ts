/** Only http(s) links and images reach the page: `javascript:`, `data:` and the like are dropped. */
export function safeUrl(value: unknown, base: string): string | null {
  if (typeof value !== "string" || !value) return null;
  try {
    const url = new URL(value, base);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

/** The API base: `data-api-base` when given, else the origin of the script's own src. */
export function apiBaseOf(src: string | null, override: string | null, page = location.href): string {
  const chosen = override || src || "";
  try {
    const url = new URL(chosen, page);
    return override ? url.href.replace(/\/+$/, "") : url.origin;
  } catch {
    return "";
  }
}
