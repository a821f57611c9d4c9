import { useQueries, useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { api, authorisedFetch, call } from "../api/client";
import { asProblem } from "../api/problem";
import { LineChart } from "../components/charts";
import { TenantNav } from "../components/TenantNav";
import { Button, Card, Empty, Field, Loading, ProblemView, Select, formatMoney, formatNumber, formatPercent } from "../components/ui";
import { daysAgo, useTenant } from "../hooks";

const METRICS = [
  ["impressions", "Impressions", "#2563eb"],
  ["clicks", "Clicks", "#7c3aed"],
  ["ctr", "CTR", "#0d9488"],
  ["conversions", "Conversions", "#c2410c"],
  ["revenue", "Revenue", "#15803d"],
  ["attributedRevenue", "Attributed revenue", "#be185d"],
] as const;
const STRATEGIES = ["collaborative", "content_based", "trending", "frequently_bought_together"];

export default function Analytics() {
  const { id } = useTenant();
  const [from, setFrom] = useState(daysAgo(29));
  const [to, setTo] = useState(daysAgo(0));
  const [placementId, setPlacement] = useState("");
  const [strategy, setStrategy] = useState("");
  const [exportError, setExportError] = useState<unknown>(null);
  const period = { from, to };
  const overview = useQuery({
    queryKey: ["overview", id, from, to, placementId, strategy],
    queryFn: () =>
      call(() =>
        api.GET("/api/v1/tenants/{tenant_id}/analytics/overview", {
          params: { path: { tenant_id: id }, query: { ...period, placementId: placementId || null, strategy: strategy || null } },
        }),
      ),
  });
  const series = useQueries({
    queries: METRICS.map(([metric]) => ({
      queryKey: ["timeseries", id, metric, from, to],
      queryFn: () =>
        call(() =>
          api.GET("/api/v1/tenants/{tenant_id}/analytics/timeseries", {
            params: { path: { tenant_id: id }, query: { ...period, metric, interval: "day" } },
          }),
        ),
    })),
  });
  const top = useQuery({
    queryKey: ["top", id, from, to],
    queryFn: () =>
      call(() => api.GET("/api/v1/tenants/{tenant_id}/analytics/top-products", { params: { path: { tenant_id: id }, query: { ...period, sort: "clicks", limit: 10 } } })),
  });
  const exportCsv = async () => {
    setExportError(null);
    try {
      const answer = await authorisedFetch(`/api/v1/tenants/${id}/analytics/export?format=csv&from=${from}&to=${to}`);
      const url = URL.createObjectURL(await answer.blob());
      const link = document.createElement("a");
      link.href = url;
      link.download = `analytics-${from}-${to}.csv`;
      link.click();
      URL.revokeObjectURL(url);
    } catch (e) {
      setExportError(asProblem(e));
    }
  };
  const o = overview.data;
  const kpis = o
    ? ([
        ["Impressions", formatNumber(o.impressions)],
        ["Clicks", formatNumber(o.clicks)],
        ["CTR", formatPercent(o.ctr)],
        ["Conversions", formatNumber(o.conversions)],
        ["Revenue", formatMoney(o.revenue)],
        ["Attributed revenue", formatMoney(o.attributedRevenue)],
        ["Events", formatNumber(o.events)],
        ["Active users", formatNumber(o.activeUsers)],
      ] as const)
    : [];
  return (
    <>
      <TenantNav />
      <h1 className="mb-4 text-2xl font-bold">Analytics</h1>
      <Card>
        <form className="grid gap-3 sm:grid-cols-2 lg:grid-cols-5" onSubmit={(e) => e.preventDefault()}>
          <Field label="From" type="date" value={from} max={to} onChange={(e) => setFrom(e.target.value)} />
          <Field label="To" type="date" value={to} min={from} onChange={(e) => setTo(e.target.value)} />
          <Field label="Placement" value={placementId} placeholder="all placements" onChange={(e) => setPlacement(e.target.value)} />
          <Select label="Strategy" value={strategy} onChange={(e) => setStrategy(e.target.value)}>
            <option value="">all strategies</option>
            {STRATEGIES.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </Select>
          <div className="flex items-end">
            <Button tone="secondary" onClick={exportCsv}>
              Export CSV
            </Button>
          </div>
        </form>
        <p className="mt-2 text-xs text-slate-600 dark:text-slate-400">Placement and strategy narrow the figures below; the charts show the whole tenant.</p>
        <div className="mt-2">
          <ProblemView error={exportError ?? overview.error} />
        </div>
      </Card>
      <div className="mt-4 grid grid-cols-2 gap-3 md:grid-cols-4" aria-live="polite">
        {overview.isPending ? (
          <Loading />
        ) : (
          kpis.map(([label, value]) => (
            <div key={label} className="rounded-lg border border-slate-200 bg-white p-3 dark:border-slate-700 dark:bg-slate-900" data-testid={`kpi-${label}`}>
              <p className="text-xs text-slate-600 dark:text-slate-400">{label}</p>
              <p className="text-xl font-semibold">{value}</p>
            </div>
          ))
        )}
      </div>
      <div className="mt-4 grid grid-cols-1 gap-4 lg:grid-cols-2">
        {METRICS.map(([metric, label, colour], i) => {
          const result = series[i];
          return (
            <Card key={metric} title={label}>
              {result.isPending ? (
                <Loading />
              ) : result.error ? (
                <ProblemView error={result.error} />
              ) : (
                <LineChart
                  title={label}
                  series={[{ name: label, colour, points: (result.data?.points ?? []).map((p) => ({ x: p.start, y: p.value })) }]}
                  format={metric === "ctr" ? (v) => formatPercent(v) : metric.toLowerCase().includes("revenue") ? (v) => formatMoney(v) : undefined}
                />
              )}
            </Card>
          );
        })}
      </div>
      <div className="mt-4">
        <Card title="Top products by clicks">
          <ProblemView error={top.error} />
          {top.isPending ? (
            <Loading />
          ) : (top.data?.data ?? []).length === 0 ? (
            <Empty>No product was clicked in this period.</Empty>
          ) : (
            <div className="relative overflow-x-auto">
              <table className="w-full text-left text-sm">
                <thead>
                  <tr className="border-b border-slate-200 dark:border-slate-700">
                    <th className="py-2 pr-3">Product</th>
                    <th className="py-2 pr-3 text-right">Impressions</th>
                    <th className="py-2 pr-3 text-right">Clicks</th>
                    <th className="py-2 pr-3 text-right">CTR</th>
                    <th className="py-2 pr-3 text-right">Conversions</th>
                    <th className="py-2 text-right">Revenue</th>
                  </tr>
                </thead>
                <tbody>
                  {top.data?.data.map((p) => (
                    <tr key={p.productId} className="border-b border-slate-100 dark:border-slate-800">
                      <td className="py-2 pr-3">{p.name ?? p.productId}</td>
                      <td className="py-2 pr-3 text-right">{formatNumber(p.impressions)}</td>
                      <td className="py-2 pr-3 text-right">{formatNumber(p.clicks)}</td>
                      <td className="py-2 pr-3 text-right">{formatPercent(p.ctr)}</td>
                      <td className="py-2 pr-3 text-right">{formatNumber(p.conversions)}</td>
                      <td className="py-2 text-right">{formatMoney(p.revenue)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </Card>
      </div>
    </>
  );
}
