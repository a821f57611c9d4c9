// The landing page's live widget: the real storefront SDK with the demo tenant's read key.
// The demo command writes that key beside the demo shop (/shop/recomengine.json); without a
// demo tenant the note that the page was built with stays, and nothing else happens.
(function () {
  var host = document.getElementById("live-demo");
  var status = document.getElementById("live-demo-status");
  if (!host || !window.fetch) return;
  fetch("/shop/recomengine.json", { cache: "no-cache" })
    .then(function (response) {
      if (!response.ok) throw new Error("no demo tenant");
      return response.json();
    })
    .then(function (demo) {
      if (!demo || !demo.key) throw new Error("no demo key");
      var slot = document.createElement("div");
      slot.setAttribute("data-recomengine-placement", "landing-live");
      slot.setAttribute("data-strategy", "trending");
      slot.setAttribute("data-limit", "4");
      host.appendChild(slot);
      var script = document.createElement("script");
      // Same origin: the web process relays /v1/ and /api/ to the api.
      script.src = "/v1/recomengine.js";
      script.setAttribute("data-api-key", demo.key);
      script.setAttribute("data-api-base", window.location.origin);
      script.async = true;
      document.head.appendChild(script);
      status.textContent = "Trending in the demo shop now (live, from the demo tenant):";
      host.setAttribute("data-state", "live");
      var shop = document.createElement("p");
      shop.className = "note";
      shop.innerHTML = 'Browse the whole <a href="/shop/">demo shop</a>.';
      host.appendChild(shop);
    })
    .catch(function () {
      status.textContent =
        "No demo tenant on this installation, so there is no live widget here. " +
        "`make up` loads one; the quick start shows how to embed your own.";
      host.setAttribute("data-state", "absent");
    });
})();
