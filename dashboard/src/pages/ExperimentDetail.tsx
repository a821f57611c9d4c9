import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useParams } from "react-router";
import { api, call, type Schemas } from "../api/client";
import { LineChart } from "../components/charts";
import { TenantNav } from "../components/TenantNav";
import { Badge, Button, Card, Confirm, Loading, ProblemView, formatDate, formatMoney, formatNumber, formatPercent } from "../components/ui";
import { TRANSITIONS } from "../experiments";
import { useTenant } from "../hooks";
import { statusTone } from "./Experiments";

type Figures = Schemas["VariantFigures"];
type Comparison = Schemas["ComparisonRead"];

const ROWS: [keyof Figures, string, (v: number | null) => string][] = [
  ["users", "Users", (v) => formatNumber(v)],
  ["impressions", "Impressions", (v) => formatNumber(v)],
  ["clicks", "Clicks", (v) => formatNumber(v)],
  ["ctr", "CTR", (v) => formatPercent(v, 2)],
  ["buyers", "Buyers", (v) => formatNumber(v)],
  ["conversionRate", "Conversion", (v) => formatPercent(v, 2)],
  ["revenuePerVisitor", "Revenue per visitor", (v) => formatMoney(v)],
];
const TESTS: [keyof Schemas["ResultTests"], string, boolean][] = [
  ["ctr", "CTR", true],
  ["conversionRate", "Conversion", true],
  ["revenuePerVisitor", "Revenue per visitor", false],
];
const DAILY_METRIC: Record<string, [string, string]> = {
  ctr: ["ctr", "CTR"],
  conversion_rate: ["conversionRate", "Conversion"],
  revenue_per_visitor: ["revenuePerVisitor", "Revenue per visitor"],
};

function diff(v: number | null, share: boolean) {
  if (v === null) return "—";
  return share ? `${v >= 0 ? "+" : ""}${(v * 100).toFixed(2)} pts` : `${v >= 0 ? "+" : ""}${v.toFixed(2)}`;
}

export default function ExperimentDetail() {
  const { id, readOnly } = useTenant();
  const { expId = "" } = useParams();
  const queries = useQueryClient();
  const path = { tenant_id: id, experiment_id: expId };
  const experiment = useQuery({
    queryKey: ["experiment", id, expId],
    queryFn: () => call(() => api.GET("/api/v1/tenants/{tenant_id}/experiments/{experiment_id}", { params: { path } })),
  });
  const results = useQuery({
    queryKey: ["results", id, expId],
    queryFn: () => call(() => api.GET("/api/v1/tenants/{tenant_id}/experiments/{experiment_id}/results", { params: { path } })),
  });
  const daily = useQuery({
    queryKey: ["results-daily", id, expId],
    queryFn: () => call(() => api.GET("/api/v1/tenants/{tenant_id}/experiments/{experiment_id}/results/daily", { params: { path } })),
  });
  const [pending, setPending] = useState<(typeof TRANSITIONS)[string][number] | null>(null);
  const transition = useMutation({
    mutationFn: (status: string) =>
      call(() =>
        api.PATCH("/api/v1/tenants/{tenant_id}/experiments/{experiment_id}", {
          params: { path },
          body: { status: status as Schemas["ExperimentStatusChange"]["status"] },
        }),
      ),
    onSuccess: () => {
      setPending(null);
      void queries.invalidateQueries({ queryKey: ["experiment", id, expId] });
      void queries.invalidateQueries({ queryKey: ["results", id, expId] });
      void queries.invalidateQueries({ queryKey: ["results-daily", id, expId] });
      void queries.invalidateQueries({ queryKey: ["experiments", id] });
    },
  });
  const e = experiment.data;
  const r = results.data;
  const [dailyKey, dailyLabel] = DAILY_METRIC[e?.metric ?? "ctr"] ?? DAILY_METRIC.ctr;
  return (
    <>
      <TenantNav />
      {experiment.isPending ? (
        <Loading />
      ) : !e ? (
        <ProblemView error={experiment.error} />
      ) : (
        <>
          <div className="mb-4 flex flex-wrap items-center gap-3">
            <h1 className="text-2xl font-bold">{e.name}</h1>
            <Badge tone={statusTone(e.status)}>{e.status}</Badge>
            <div className="ml-auto flex gap-2">
              {(TRANSITIONS[e.status] ?? []).map((t) => (
                <Button key={t.to} tone={t.to === "completed" ? "danger" : "primary"} disabled={readOnly} onClick={() => setPending(t)}>
                  {t.label}
                </Button>
              ))}
            </div>
          </div>
          <ProblemView error={transition.error} />
          <p className="mb-4 text-sm text-slate-700 dark:text-slate-300">
            Placement <strong>{e.placementId}</strong>: {e.controlStrategy} (control) vs {e.variantStrategy} (variant), {e.trafficSplit}% of users to the variant, judged on {e.metric}. Started {formatDate(e.startedAt)}.
          </p>
          <ProblemView error={results.error} />
          {r && (
            <div className="space-y-4">
              <div className="flex flex-wrap gap-2">
                {r.lowConfidence && (
                  <div className="rounded-md border border-amber-300 bg-amber-50 p-3 text-sm text-amber-900 dark:border-amber-700 dark:bg-amber-950 dark:text-amber-100">
                    <Badge tone="amber">Low confidence</Badge> Too few users or events so far: the differences below may be chance. Let it run longer before deciding.
                  </div>
                )}
                {r.srm.mismatch && (
                  <div className="rounded-md border border-red-300 bg-red-50 p-3 text-sm text-red-900 dark:border-red-800 dark:bg-red-950 dark:text-red-100">
                    <Badge tone="red">Sample ratio mismatch</Badge> The users are not split {100 - r.srm.expectedSplit}/{r.srm.expectedSplit} as configured (p = {r.srm.pValue.toPrecision(2)}): something sends one arm more traffic, so the results cannot be trusted.
                  </div>
                )}
              </div>
              <Card title="Results">
                <div className="relative overflow-x-auto">
                  <table className="w-full text-left text-sm" data-testid="results-table">
                    <thead>
                      <tr className="border-b border-slate-200 dark:border-slate-700">
                        <th className="py-2 pr-3">Figure</th>
                        <th className="py-2 pr-3 text-right">Control</th>
                        <th className="py-2 text-right">Variant</th>
                      </tr>
                    </thead>
                    <tbody>
                      {ROWS.map(([key, label, format]) => (
                        <tr key={key} className="border-b border-slate-100 dark:border-slate-800">
                          <th scope="row" className="py-2 pr-3 font-normal">{label}</th>
                          <td className="py-2 pr-3 text-right">{format(r.variants.control[key] as number | null)}</td>
                          <td className="py-2 text-right">{format(r.variants.variant[key] as number | null)}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              </Card>
              <Card title="Tests (variant minus control)">
                <div className="relative overflow-x-auto">
                  <table className="w-full text-left text-sm">
                    <thead>
                      <tr className="border-b border-slate-200 dark:border-slate-700">
                        <th className="py-2 pr-3">Metric</th>
                        <th className="py-2 pr-3 text-right">Difference</th>
                        <th className="py-2 pr-3 text-right">Lift</th>
                        <th className="py-2 pr-3 text-right">95% CI</th>
                        <th className="py-2 pr-3 text-right">p-value</th>
                        <th className="py-2">Significant</th>
                      </tr>
                    </thead>
                    <tbody>
                      {TESTS.map(([key, label, share]) => {
                        const t = r.tests[key] as Comparison;
                        return (
                          <tr key={key} className="border-b border-slate-100 dark:border-slate-800">
                            <th scope="row" className="py-2 pr-3 font-normal">{label}</th>
                            <td className="py-2 pr-3 text-right">{diff(t.absoluteDiff, share)}</td>
                            <td className="py-2 pr-3 text-right">{formatPercent(t.relativeLift)}</td>
                            <td className="py-2 pr-3 text-right">{t.ci ? `${diff(t.ci[0], share)} to ${diff(t.ci[1], share)}` : "—"}</td>
                            <td className="py-2 pr-3 text-right">{t.pValue === null ? "—" : t.pValue.toPrecision(2)}</td>
                            <td className="py-2">{t.significant ? <Badge tone="green">yes</Badge> : <Badge>no</Badge>}</td>
                          </tr>
                        );
                      })}
                    </tbody>
                  </table>
                </div>
              </Card>
            </div>
          )}
          <div className="mt-4">
            <Card title={`${dailyLabel} over time (cumulative)`}>
              <ProblemView error={daily.error} />
              {daily.isPending ? (
                <Loading />
              ) : daily.data && daily.data.days.length > 0 ? (
                <LineChart
                  title={`${dailyLabel} per variant`}
                  format={dailyKey === "revenuePerVisitor" ? (v) => formatMoney(v) : (v) => formatPercent(v, 2)}
                  series={(["control", "variant"] as const).map((arm, i) => ({
                    name: arm,
                    colour: i === 0 ? "#64748b" : "#2563eb",
                    points: daily.data.days.map((d) => ({ x: d.date, y: (d[arm] as Record<string, number | null>)[dailyKey] ?? null })),
                  }))}
                />
              ) : (
                <p className="text-sm text-slate-600 dark:text-slate-400">No days yet: the chart starts when the experiment does.</p>
              )}
            </Card>
          </div>
        </>
      )}
      <Confirm
        open={pending !== null}
        title={`${pending?.label ?? ""} the experiment?`}
        confirmLabel={pending?.label ?? "Confirm"}
        tone={pending?.to === "completed" ? "danger" : "primary"}
        onCancel={() => setPending(null)}
        onConfirm={() => pending && transition.mutate(pending.to)}
      >
        <p className="text-sm">{pending?.explain}</p>
      </Confirm>
    </>
  );
}
