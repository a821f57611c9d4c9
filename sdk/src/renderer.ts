import { CSS } from "./styles";
import type { Item, Widget } from "./types";
import { safeUrl } from "./url";

const LAYOUTS = ["grid", "carousel", "list"];

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  // Catalog text is always text: a name like `<img onerror=...>` shows as those characters.
  if (text != null) node.textContent = text;
  return node;
}

function clamp(value: unknown, low: number, high: number, fallback: number): number {
  const n = Number(value);
  return n >= low && n <= high ? Math.floor(n) : fallback;
}

// Building a currency formatter costs about a millisecond: one per currency per page.
const formatters: Record<string, Intl.NumberFormat | null> = {};

export function price(item: Item): string {
  const amount = item.price;
  if (typeof amount !== "number" || !Number.isFinite(amount)) return "";
  const currency = item.currency || "";
  if (!(currency in formatters)) {
    try {
      formatters[currency] = currency
        ? new Intl.NumberFormat(undefined, { style: "currency", currency })
        : null;
    } catch {
      formatters[currency] = null; // an unknown currency code: plain number below
    }
  }
  const format = formatters[currency];
  return format ? format.format(amount) : amount.toFixed(2);
}

/** The placement's layout as the widget config says, with the spec's defaults. */
export function layoutOf(widget: Widget) {
  const theme = widget.theme || {};
  const colour = /^#[0-9a-fA-F]{6}$/.test(theme.primaryColor || "") ? theme.primaryColor : "#2563EB";
  return {
    layout: LAYOUTS.indexOf(widget.layout || "") >= 0 ? (widget.layout as string) : "grid",
    columns: clamp(widget.columns, 2, 6, 4),
    maxItems: clamp(widget.maxItems, 1, 50, 8),
    showPrice: widget.showPrice !== false,
    cta: typeof widget.ctaText === "string" && widget.ctaText ? widget.ctaText : "View Product",
    colour: colour as string,
    font: typeof theme.fontFamily === "string" ? theme.fontFamily : "",
  };
}

/** Paints the items into the host's shadow root; returns one element per item, in order. */
export function paint(host: HTMLElement, items: Item[], widget: Widget, base: string): HTMLElement[] {
  const look = layoutOf(widget);
  const root = host.shadowRoot || host.attachShadow({ mode: "open" });
  while (root.firstChild) root.removeChild(root.firstChild);
  const style = el("style");
  style.textContent = CSS;
  const frame = el("div", `r ${look.layout}`);
  frame.style.setProperty("--c", String(look.columns));
  frame.style.setProperty("--p", look.colour);
  if (look.font) frame.style.fontFamily = look.font;
  const list = el("ul", "w");
  const nodes: HTMLElement[] = [];
  for (const item of items.slice(0, look.maxItems)) {
    const cell = el("li", "i");
    cell.setAttribute("data-recomengine-item", String(item.productId));
    const link = el("a");
    const href = safeUrl(item.url, base);
    if (href) link.href = href;
    const image = safeUrl(item.imageUrl, base);
    if (image) {
      const img = el("img");
      img.src = image;
      img.alt = "";
      img.loading = "lazy";
      link.appendChild(img);
    }
    const body = el("span");
    body.appendChild(el("span", "n", item.name == null ? "" : String(item.name)));
    if (look.showPrice) body.appendChild(el("span", "p", price(item)));
    body.appendChild(el("span", "b", look.cta));
    link.appendChild(body);
    cell.appendChild(link);
    list.appendChild(cell);
    nodes.push(cell);
  }
  frame.appendChild(list);
  if (look.layout === "carousel") {
    list.tabIndex = 0;
    list.setAttribute("role", "region");
    list.setAttribute("aria-label", "Recommendations");
    const step = (direction: number) =>
      list.scrollBy({ left: direction * list.clientWidth, behavior: "smooth" });
    for (const direction of [-1, 1]) {
      const button = el("button", "v", direction < 0 ? "‹" : "›");
      button.type = "button";
      button.setAttribute("data-d", String(direction));
      button.setAttribute("aria-label", direction < 0 ? "Previous" : "Next");
      button.onclick = () => step(direction);
      frame.appendChild(button);
    }
    list.onkeydown = (event: KeyboardEvent) => {
      if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
        event.preventDefault();
        step(event.key === "ArrowLeft" ? -1 : 1);
      }
    };
  }
  root.appendChild(style);
  root.appendChild(frame);
  return nodes;
}
