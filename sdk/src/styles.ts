/** The widget's own styles, inside its shadow root: nothing leaks in or out. */
export const CSS =
  // all:initial keeps the page's inherited styles out; the font family alone comes from the page.
  ":host{all:initial;display:block;font-family:inherit}" +
  ".r{position:relative;font-size:14px;line-height:1.4;color:#111}" +
  ".w{display:grid;grid-template-columns:repeat(var(--c),minmax(0,1fr));gap:12px;margin:0;padding:0}" +
  ".carousel .w{display:flex;overflow-x:auto;scroll-snap-type:x mandatory;scroll-behavior:smooth;outline:0}" +
  ".carousel .i{flex:0 0 calc((100% - 12px * (var(--c) - 1)) / var(--c));scroll-snap-align:start}" +
  ".list .w{grid-template-columns:1fr}" +
  ".list a{display:flex;gap:12px;align-items:center}.list img{width:72px}" +
  ".i{list-style:none;min-width:0}" +
  "a{color:inherit;text-decoration:none;display:block}" +
  "img{display:block;width:100%;height:auto;border-radius:6px}" +
  ".n{display:block;margin:6px 0 2px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}" +
  ".p{display:block;font-weight:600}" +
  ".b{display:inline-block;margin-top:6px;padding:4px 10px;border-radius:4px;background:var(--p);color:#fff}" +
  ".v{position:absolute;top:35%;border:0;border-radius:50%;width:32px;height:32px;background:var(--p);color:#fff;cursor:pointer}" +
  ".v[data-d='-1']{left:-8px}.v[data-d='1']{right:-8px}";
