import { useQueries, useQuery } from "@tanstack/react-query";
import { Link } from "react-router";
import { api, call } from "../api/client";
import { Sparkline } from "../components/charts";
import { Card, Empty, Loading, PageTitle, ProblemView, formatMoney, formatNumber, formatPercent } from "../components/ui";
import { daysAgo } from "../hooks";

const KPIS = [
  ["impressions", "Impressions", formatNumber],
  ["clicks", "Clicks", formatNumber],
  ["ctr", "CTR", (v: number | null) => formatPercent(v)],
  ["conversions", "Conversions", formatNumber],
  ["revenue", "Revenue", formatMoney],
  ["attributedRevenue", "Attributed revenue", formatMoney],
] as const;
type Kpi = (typeof KPIS)[number][0];
// Sparklines for the first tenants only: the page stays a handful of calls.
const SPARK_TENANTS = 5;

function change(now: number | null, before: number | null): string {
  if (now === null || before === null) return "no earlier data";
  if (before === 0) return now === 0 ? "no change" : "new this period";
  const pct = ((now - before) / Math.abs(before)) * 100;
  return `${pct >= 0 ? "+" : ""}${pct.toFixed(1)}% vs previous 30 days`;
}

export default function Overview() {
  const current = useQuery({
    queryKey: ["all-overview", "current"],
    queryFn: () => call(() => api.GET("/api/v1/analytics/overview", { params: { query: { from: daysAgo(29), to: daysAgo(0) } } })),
  });
  const previous = useQuery({
    queryKey: ["all-overview", "previous"],
    queryFn: () => call(() => api.GET("/api/v1/analytics/overview", { params: { query: { from: daysAgo(59), to: daysAgo(30) } } })),
  });
  const tenants = (current.data?.tenants ?? []).slice(0, SPARK_TENANTS);
  const sparks = useQueries({
    queries: KPIS.flatMap(([metric]) =>
      tenants.map((t) => ({
        queryKey: ["timeseries", t.tenantId, metric, daysAgo(29), daysAgo(0)],
        queryFn: () =>
          call(() =>
            api.GET("/api/v1/tenants/{tenant_id}/analytics/timeseries", {
              params: { path: { tenant_id: t.tenantId }, query: { from: daysAgo(29), to: daysAgo(0), metric, interval: "day" } },
            }),
          ),
      })),
    ),
  });
  const sparkline = (index: number): (number | null)[] => {
    const mine = sparks.slice(index * tenants.length, (index + 1) * tenants.length).map((q) => q.data?.points ?? []);
    if (mine.length === 0 || mine.some((p) => p.length === 0)) return [];
    return mine[0].map((_, day) => mine.reduce((sum, points) => sum + (points[day]?.value ?? 0), 0));
  };
  const data = current.data;
  return (
    <>
      <PageTitle>Overview</PageTitle>
      <p className="mb-4 text-sm text-slate-600 dark:text-slate-400">All your tenants, the last 30 days.</p>
      <ProblemView error={current.error} />
      {current.isPending ? (
        <Loading />
      ) : data ? (
        <>
          <div className="grid grid-cols-1 gap-3 sm:grid-cols-2 lg:grid-cols-3">
            {KPIS.map(([key, label, format], i) => {
              const now = data[key as Kpi] as number | null;
              const before = previous.data ? (previous.data[key as Kpi] as number | null) : null;
              const values = sparkline(i);
              return (
                <div key={key} className="rounded-lg border border-slate-200 bg-white p-4 dark:border-slate-700 dark:bg-slate-900">
                  <p className="text-sm text-slate-600 dark:text-slate-400">{label}</p>
                  <p className="text-2xl font-bold" data-testid={`overview-${key}`}>
                    {format(now as number)}
                  </p>
                  <p className="text-xs text-slate-600 dark:text-slate-400">{previous.isPending ? "…" : change(now, before)}</p>
                  <div className="mt-2 h-8">{values.length > 0 && key !== "ctr" && <Sparkline values={values} label={`${label} per day`} />}</div>
                </div>
              );
            })}
          </div>
          <div className="mt-6">
            <Card title="Tenants">
              {data.tenants.length === 0 ? (
                <Empty>
                  No tenants yet.{" "}
                  <Link className="text-blue-700 underline dark:text-blue-300" to="/dashboard/tenants">
                    Create one
                  </Link>
                  .
                </Empty>
              ) : (
                <div className="relative overflow-x-auto">
                  <table className="w-full text-left text-sm">
                    <thead>
                      <tr className="border-b border-slate-200 dark:border-slate-700">
                        <th className="py-2 pr-3">Tenant</th>
                        <th className="py-2 pr-3 text-right">Events</th>
                        <th className="py-2 pr-3 text-right">Impressions</th>
                        <th className="py-2 pr-3 text-right">CTR</th>
                        <th className="py-2 text-right">Revenue</th>
                      </tr>
                    </thead>
                    <tbody>
                      {data.tenants.map((t) => (
                        <tr key={t.tenantId} className="border-b border-slate-100 dark:border-slate-800">
                          <td className="py-2 pr-3">
                            <Link className="text-blue-700 underline dark:text-blue-300" to={`/dashboard/tenants/${t.tenantId}/analytics`}>
                              {t.name}
                            </Link>
                          </td>
                          <td className="py-2 pr-3 text-right">{formatNumber(t.events)}</td>
                          <td className="py-2 pr-3 text-right">{formatNumber(t.impressions)}</td>
                          <td className="py-2 pr-3 text-right">{formatPercent(t.ctr)}</td>
                          <td className="py-2 text-right">{formatMoney(t.revenue)}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              )}
            </Card>
          </div>
        </>
      ) : null}
    </>
  );
}
