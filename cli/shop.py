"""The demo storefront: static pages that use the built SDK exactly as a customer's shop would
(one script tag pointing at the api's /v1/recomengine.js), written to `.run/shop/` for the web
server to serve under /shop/."""

from __future__ import annotations

import html
import json
from pathlib import Path

from cli.commands.database import ROOT

SHOP_FOLDER = ROOT / ".run" / "shop"
SHOP_ORIGINS = ("http://localhost:3112", "http://127.0.0.1:3112")
SHOP_URL = "http://localhost:3112/shop/"

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1f2937;background:#f9fafb}
header{display:flex;gap:24px;align-items:center;padding:14px 32px;background:#111827;color:#fff}
header a{color:#fff;text-decoration:none}header .brand{font-weight:700;font-size:18px}
main{max-width:1100px;margin:0 auto;padding:24px 32px}
h2{margin:32px 0 12px;font-size:18px}
.product{display:flex;gap:32px;align-items:flex-start;background:#fff;padding:24px;border-radius:8px}
.price{font-size:22px;font-weight:700}
button{background:#2563eb;color:#fff;border:0;border-radius:6px;padding:10px 18px;cursor:pointer}
table{width:100%;border-collapse:collapse;background:#fff}
td,th{padding:8px;border-bottom:1px solid #e5e7eb;text-align:left}
.note{color:#6b7280;font-size:13px}
"""


def _page(*, title: str, api_base: str, key: str, body: str, script: str = "") -> str:
    """One shop page: the SDK's script tag exactly as API.md gives it, then the page."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · RecomEngine demo shop</title>
<style>{_STYLE}</style>
<script src="{html.escape(api_base)}/v1/recomengine.js"
  data-api-key="{html.escape(key)}" async></script>
</head><body>
<header><a class="brand" href="index.html">Demo Grocery</a><a href="index.html">Home</a>
<a href="cart.html">Cart (<span id="cart-count">0</span>)</a></header>
<main>{body}</main>
<script>
const cart = () => JSON.parse(localStorage.getItem("demo-cart") || "[]");
document.getElementById("cart-count").textContent = String(cart().length);
{script}
</script>
</body></html>
"""


def render_shop(*, api_base: str, read_key: str, write_key: str) -> dict[str, str]:
    """The shop's pages by file name."""
    config = json.dumps({"api": api_base, "key": read_key})
    home = _page(
        title="Home",
        api_base=api_base,
        key=read_key,
        body="""<h1>Welcome to the demo grocery</h1>
<p class="note">Everything below is rendered by the RecomEngine SDK from one script tag.</p>
<h2>Recommended for you</h2>
<div data-recomengine-placement="home"></div>
<h2>Trending now</h2>
<div data-recomengine-placement="home-trending" data-strategy="trending"></div>""",
    )
    product = _page(
        title="Product",
        api_base=api_base,
        key=read_key,
        body="""<div class="product"><div><h1 id="name">Loading…</h1>
<p id="category" class="note"></p><p class="price" id="price"></p>
<button id="add">Add to cart</button></div></div>
<h2>Frequently bought together</h2>
<div id="fbt"></div>
<h2>Similar items</h2>
<div id="similar"></div>""",
        script=f"""const shop = {config};
const id = new URLSearchParams(location.search).get("id") || "";
// The placements name the product on this page; the SDK renders them as they are added.
for (const [slot, placement, strategy] of [["fbt", "product-fbt", "frequently_bought_together"],
                                           ["similar", "product-similar", "content_based"]]) {{
  const el = document.createElement("div");
  el.setAttribute("data-recomengine-placement", placement);
  el.setAttribute("data-product-id", id);
  el.setAttribute("data-strategy", strategy);
  document.getElementById(slot).appendChild(el);
}}
let item = null;
const headers = {{"X-API-Key": shop.key}};
fetch(shop.api + "/api/v1/catalog/" + encodeURIComponent(id), {{headers}})
  .then(r => r.ok ? r.json() : Promise.reject(r.status))
  .then(found => {{
    item = found;
    document.getElementById("name").textContent = found.name;
    document.getElementById("category").textContent = found.category || "";
    const price = Number(found.price).toFixed(2);
    document.getElementById("price").textContent = (found.currency || "") + " " + price;
  }})
  .catch(() => {{ document.getElementById("name").textContent = "Product " + id; }});
const whenReady = (fn) => window.RecomEngine ? fn() : setTimeout(() => whenReady(fn), 50);
whenReady(() => RecomEngine.track({{eventType: "product_viewed", productId: id}}));
document.getElementById("add").onclick = () => {{
  const items = cart();
  items.push({{productId: id, name: item ? item.name : id, price: item ? Number(item.price) : 0}});
  localStorage.setItem("demo-cart", JSON.stringify(items));
  document.getElementById("cart-count").textContent = String(items.length);
  whenReady(() => RecomEngine.track({{eventType: "add_to_cart", productId: id}}));
}};""",
    )
    cart = _page(
        title="Cart",
        api_base=api_base,
        # Purchases carry revenue, so they need a read_write key: a real shop posts them from
        # its backend; this local demo uses its own test key in the page.
        key=write_key,
        body="""<h1>Your cart</h1>
<table><thead><tr><th>Product</th><th>Price</th></tr></thead><tbody id="lines"></tbody></table>
<p><button id="checkout">Buy now</button> <span id="status" class="note"></span></p>
<h2>You may also like</h2>
<div data-recomengine-placement="cart" data-strategy="trending"></div>
<p class="note">Demo only: this page holds a read_write test key to post the purchases that a
real shop would send from its backend.</p>""",
        script="""const lines = document.getElementById("lines");
for (const line of cart()) {
  const row = lines.insertRow();
  row.insertCell().textContent = line.name;
  row.insertCell().textContent = Number(line.price).toFixed(2);
}
document.getElementById("checkout").onclick = () => {
  const items = cart();
  const order = "order-" + Date.now();
  for (const line of items) {
    RecomEngine.track({eventType: "purchase", productId: line.productId, sessionId: order,
                       metadata: {price: line.price}});
  }
  localStorage.setItem("demo-cart", "[]");
  document.getElementById("cart-count").textContent = "0";
  document.getElementById("status").textContent = "Thank you! " + items.length + " item(s) bought.";
};""",
    )
    return {"index.html": home, "product.html": product, "cart.html": cart}


def write_shop(*, api_base: str, read_key: str, write_key: str, folder: Path = SHOP_FOLDER) -> Path:
    """Write the shop's pages into `folder` (created if needed); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = render_shop(api_base=api_base, read_key=read_key, write_key=write_key)
    for name, text in pages.items():
        (folder / name).write_text(text, encoding="utf-8")
    # The landing page's live widget reads the same read key the shop's pages already carry.
    (folder / "recomengine.json").write_text(json.dumps({"key": read_key}), encoding="utf-8")
    return folder
