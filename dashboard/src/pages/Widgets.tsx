import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState, type FormEvent } from "react";
import { api, call, type Schemas } from "../api/client";
import { asProblem } from "../api/problem";
import { TenantNav } from "../components/TenantNav";
import { Button, Card, Field, Loading, ProblemView, Select } from "../components/ui";
import { useTenant } from "../hooks";

type Widget = Schemas["WidgetRead"];
type Form = {
  layout: "grid" | "carousel" | "list";
  columns: string;
  showPrice: boolean;
  ctaText: string;
  maxItems: string;
  primaryColor: string;
  fontFamily: string;
  strategy: string;
};
const STRATEGIES = ["collaborative", "content_based", "trending", "frequently_bought_together"];
const DEFAULTS: Form = { layout: "grid", columns: "4", showPrice: true, ctaText: "View Product", maxItems: "8", primaryColor: "#2563EB", fontFamily: "", strategy: "" };

function formOf(w: Widget | undefined): Form {
  if (!w) return DEFAULTS;
  return {
    layout: w.layout as Form["layout"],
    columns: String(w.columns),
    showPrice: w.showPrice,
    ctaText: w.ctaText,
    maxItems: String(w.maxItems),
    primaryColor: w.theme.primaryColor,
    fontFamily: w.theme.fontFamily ?? "",
    strategy: w.strategy ?? "",
  };
}

const previewKeyName = (tenantId: string) => `recomengine-preview-key:${tenantId}`;

/** The storefront SDK itself, in a frame, rendering this placement with a read key of the tenant.
 * Each saved revision gets its own api base path, so the SDK never reads a cached old config. */
export function WidgetPreview({ apiKey, placementId, revision }: { apiKey: string; placementId: string; revision: number }) {
  const frame = useRef<HTMLIFrameElement>(null);
  useEffect(() => {
    const base = `${location.origin}/preview/${revision}`;
    const config = JSON.stringify({ apiKey, userId: "dashboard-preview", apiBase: base, requireConsent: true }).replace(/</g, "\\u003c");
    const placement = JSON.stringify(placementId).replace(/</g, "\\u003c");
    const doc = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Widget preview</title></head><body style="margin:8px;font-family:system-ui">
<div id="placement" data-recomengine-placement=${JSON.stringify(placementId)}></div>
<script src="${base}/v1/recomengine.js"></script>
<script>
  // The preview never tracks: consent is required and refused before the first render.
  window.RecomEngine.init(${config});
  window.RecomEngine.consent(false);
  window.RecomEngine.render(document.getElementById("placement"), { placementId: ${placement} });
</script></body></html>`;
    if (frame.current) frame.current.srcdoc = doc;
  }, [apiKey, placementId, revision]);
  return <iframe ref={frame} title="Widget preview" data-testid="widget-preview" className="h-96 w-full rounded-md border border-slate-300 bg-white dark:border-slate-600" />;
}

export default function Widgets() {
  const { id, readOnly } = useTenant();
  const queries = useQueryClient();
  const list = useQuery({
    queryKey: ["widgets", id],
    queryFn: () => call(() => api.GET("/api/v1/tenants/{tenant_id}/widgets", { params: { path: { tenant_id: id }, query: { limit: 100 } } })),
  });
  const widgets = list.data?.data ?? [];
  const [placementId, setPlacementId] = useState("home");
  const current = widgets.find((w) => w.placementId === placementId);
  const [form, setForm] = useState<Form>(DEFAULTS);
  const [revision, setRevision] = useState(() => Date.now());
  const [previewKey, setPreviewKey] = useState(() => sessionStorage.getItem(previewKeyName(id)) ?? "");
  useEffect(() => setForm(formOf(current)), [current]);
  const save = useMutation({
    mutationFn: () => {
      const body = {
        layout: form.layout,
        columns: Number(form.columns),
        showPrice: form.showPrice,
        ctaText: form.ctaText,
        maxItems: Number(form.maxItems),
        theme: { primaryColor: form.primaryColor, fontFamily: form.fontFamily || null },
        strategy: (form.strategy || null) as Schemas["WidgetCreate"]["strategy"],
      };
      return current
        ? call(() => api.PUT("/api/v1/tenants/{tenant_id}/widgets/{placement_id}", { params: { path: { tenant_id: id, placement_id: placementId } }, body }))
        : call(() => api.POST("/api/v1/tenants/{tenant_id}/widgets", { params: { path: { tenant_id: id } }, body: { ...body, placementId } }));
    },
    onSuccess: () => {
      setRevision(Date.now());
      void queries.invalidateQueries({ queryKey: ["widgets", id] });
    },
  });
  const makeKey = useMutation({
    mutationFn: () =>
      call(() =>
        api.POST("/api/v1/tenants/{tenant_id}/api-keys", {
          params: { path: { tenant_id: id } },
          body: { name: "dashboard preview", permission: "read", environment: "test" },
        }),
      ),
    onSuccess: (key) => {
      sessionStorage.setItem(previewKeyName(id), key.key);
      setPreviewKey(key.key);
    },
  });
  const problem = save.error ? asProblem(save.error) : null;
  const set = <K extends keyof Form>(field: K, value: Form[K]) => setForm({ ...form, [field]: value });
  return (
    <>
      <TenantNav />
      <h1 className="mb-4 text-2xl font-bold">Widgets</h1>
      <div className="grid grid-cols-1 gap-4 lg:grid-cols-2">
        <Card title="Configuration">
          {list.isPending ? (
            <Loading />
          ) : (
            <form
              className="grid gap-3 sm:grid-cols-2"
              onSubmit={(e: FormEvent) => {
                e.preventDefault();
                save.mutate();
              }}
            >
              <div className="sm:col-span-2">
                <ProblemView error={list.error ?? (problem && problem.errors.length === 0 ? problem : null)} />
              </div>
              <Field
                label="Placement"
                list="placements"
                value={placementId}
                onChange={(e) => setPlacementId(e.target.value)}
                hint={current ? "Saved placement" : "New placement: saving creates it"}
                error={problem?.fieldMessage("placementId")}
              />
              <datalist id="placements">
                {widgets.map((w) => (
                  <option key={w.placementId} value={w.placementId} />
                ))}
              </datalist>
              <Select label="Layout" value={form.layout} onChange={(e) => set("layout", e.target.value as Form["layout"])}>
                <option>grid</option>
                <option>carousel</option>
                <option>list</option>
              </Select>
              <Field label="Columns (2–6)" type="number" min={2} max={6} value={form.columns} onChange={(e) => set("columns", e.target.value)} error={problem?.fieldMessage("columns")} />
              <Field label="Items shown (4–20)" type="number" min={4} max={20} value={form.maxItems} onChange={(e) => set("maxItems", e.target.value)} error={problem?.fieldMessage("maxItems")} />
              <Field label="Button text" value={form.ctaText} maxLength={40} onChange={(e) => set("ctaText", e.target.value)} error={problem?.fieldMessage("ctaText")} />
              <Field label="Primary colour" type="color" value={form.primaryColor} onChange={(e) => set("primaryColor", e.target.value.toUpperCase())} error={problem?.fieldMessage("primaryColor")} />
              <Field label="Font family" value={form.fontFamily} placeholder="the shop's own" onChange={(e) => set("fontFamily", e.target.value)} error={problem?.fieldMessage("fontFamily")} />
              <Select label="Strategy" value={form.strategy} onChange={(e) => set("strategy", e.target.value)}>
                <option value="">tenant default</option>
                {STRATEGIES.map((s) => (
                  <option key={s}>{s}</option>
                ))}
              </Select>
              <label className="flex items-center gap-2 text-sm font-medium sm:col-span-2">
                <input type="checkbox" checked={form.showPrice} onChange={(e) => set("showPrice", e.target.checked)} />
                Show prices
              </label>
              <div className="sm:col-span-2">
                <Button type="submit" disabled={readOnly || save.isPending}>
                  Save and preview
                </Button>
              </div>
            </form>
          )}
        </Card>
        <Card title="Live preview">
          <ProblemView error={makeKey.error} />
          {previewKey ? (
            <WidgetPreview apiKey={previewKey} placementId={placementId} revision={revision} />
          ) : (
            <div className="space-y-3 text-sm">
              <p>The preview runs the real storefront SDK with a read key of this tenant. Keys are shown only once, so the preview needs its own.</p>
              <Field label="Read key for the preview" type="password" autoComplete="off" onBlur={(e) => setPreviewKey(e.target.value.trim())} />
              <Button tone="secondary" disabled={readOnly || makeKey.isPending} onClick={() => makeKey.mutate()}>
                Create a preview key
              </Button>
            </div>
          )}
        </Card>
      </div>
    </>
  );
}
