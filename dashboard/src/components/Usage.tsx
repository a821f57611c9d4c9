import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { api, authorisedFetch, call, type Schemas } from "../api/client";
import { asProblem } from "../api/problem";
import { Badge, Button, Card, Loading, ProblemView, formatMoney, formatNumber, formatPercent } from "./ui";

type Usage = Schemas["UsageRead"];
type Alert = Schemas["AlertRead"];

/** The current UTC month as YYYY-MM. */
export function thisMonth(): string {
  return new Date().toISOString().slice(0, 7);
}

function useUsage(id: string, month: string) {
  return useQuery({
    queryKey: ["usage", id, month],
    queryFn: () => call(() => api.GET("/api/v1/tenants/{tenant_id}/usage", { params: { path: { tenant_id: id }, query: { month } } })),
  });
}

const METRIC_LABEL = { events: "events", recommendationRequests: "recommendation requests" } as const;

function alertText(alert: Alert, usage: Usage): string {
  const what = METRIC_LABEL[alert.metric];
  const plan = alert.environment === "test" ? "the test keys' Sandbox limits" : `the ${usage.planTitle} plan`;
  const head = `${alert.threshold}% of the ${formatNumber(alert.included)} ${what} included in ${plan} this month`;
  if (alert.threshold < 100) return `This tenant has used ${head}.`;
  const refused = alert.environment === "test" ? usage.test.writesRefused : usage.writesRefused;
  if (alert.metric === "events" && refused) return `This tenant has used ${head}: event writes get 429 quota_exceeded; recommendations keep working.`;
  if (alert.environment === "live" && usage.overage.amountUsd > 0) return `This tenant has used ${head}: further usage accrues overage.`;
  return `This tenant has used ${head}.`;
}

/** The allowance banners of the current month (the highest threshold per metric), above every
 * tenant page. */
export function UsageBanner({ id }: { id: string }) {
  const usage = useUsage(id, thisMonth());
  const data = usage.data;
  if (!data || data.alerts.length === 0) return null;
  const highest = new Map<string, Alert>();
  for (const alert of data.alerts) {
    const key = `${alert.environment}-${alert.metric}`;
    const seen = highest.get(key);
    if (!seen || seen.threshold < alert.threshold) highest.set(key, alert);
  }
  return (
    <>
      {[...highest.values()].map((alert) => (
        <p
          key={`${alert.environment}-${alert.metric}`}
          role="alert"
          data-testid="usage-banner"
          className={`rounded-md border p-2 text-sm ${
            alert.threshold >= 100
              ? "border-red-300 bg-red-50 text-red-900 dark:border-red-800 dark:bg-red-950 dark:text-red-100"
              : "border-amber-300 bg-amber-50 text-amber-900 dark:border-amber-700 dark:bg-amber-950 dark:text-amber-100"
          }`}
        >
          {alertText(alert, data)}
        </p>
      ))}
    </>
  );
}

function Meter({ label, used, included, share }: { label: string; used: number; included: number | null; share: number | null }) {
  const width = share === null ? 0 : Math.min(100, share * 100);
  const tone = share !== null && share >= 1 ? "bg-red-600" : share !== null && share >= 0.8 ? "bg-amber-500" : "bg-blue-600";
  return (
    <div>
      <div className="flex flex-wrap justify-between gap-2 text-sm">
        <span className="text-slate-600 dark:text-slate-400">{label}</span>
        <span>
          <strong>{formatNumber(used)}</strong> of {included === null ? "custom" : formatNumber(included)}
          {share !== null && ` (${formatPercent(share)})`}
        </span>
      </div>
      <div
        className="mt-1 h-2 w-full rounded bg-slate-200 dark:bg-slate-700"
        role="meter"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(width)}
      >
        <div className={`h-2 rounded ${tone}`} style={{ width: `${width}%` }} />
      </div>
    </div>
  );
}

/** A month's metered usage against the plan: meters, overage, days and the CSV. */
export function UsageCard({ id }: { id: string }) {
  const [month, setMonth] = useState(thisMonth());
  const usage = useUsage(id, month);
  const [exportError, setExportError] = useState<ReturnType<typeof asProblem> | null>(null);
  const exportCsv = async () => {
    setExportError(null);
    try {
      const answer = await authorisedFetch(`/api/v1/tenants/${id}/usage/export?format=csv&month=${month}`);
      const url = URL.createObjectURL(await answer.blob());
      const link = document.createElement("a");
      link.href = url;
      link.download = `usage-${month}.csv`;
      link.click();
      URL.revokeObjectURL(url);
    } catch (e) {
      setExportError(asProblem(e));
    }
  };
  const data = usage.data;
  const days = (data?.days ?? []).filter((d) => d.events + d.recommendationRequests + d.testEvents + d.testRecommendationRequests > 0);
  return (
    <Card
      title="Plan and metered usage"
      actions={
        <div className="flex flex-wrap items-center gap-2">
          <label className="text-sm" htmlFor="usage-month">
            Month
          </label>
          <input
            id="usage-month"
            type="month"
            value={month}
            max={thisMonth()}
            onChange={(e) => e.target.value && setMonth(e.target.value)}
            className="rounded-md border border-slate-400 bg-white px-2 py-1 text-sm dark:border-slate-500 dark:bg-slate-900"
          />
          <Button tone="secondary" onClick={() => void exportCsv()}>
            Export CSV
          </Button>
        </div>
      }
    >
      <ProblemView error={usage.error ?? exportError} />
      {usage.isPending && <Loading />}
      {data && (
        <div className="space-y-3" data-testid="usage">
          <p className="text-sm">
            Plan <Badge tone="blue">{data.planTitle}</Badge>{" "}
            {data.writesRefused && <Badge tone="red">event writes refused: quota exceeded</Badge>}
          </p>
          <Meter label="Events (accepted after dedupe)" used={data.events} included={data.allowances.events as number | null} share={data.shareUsed.events as number | null} />
          <Meter
            label="Recommendation requests (answered)"
            used={data.recommendationRequests}
            included={data.allowances.recommendationRequests as number | null}
            share={data.shareUsed.recommendationRequests as number | null}
          />
          <p className="text-sm" data-testid="overage">
            Overage this month:{" "}
            {data.overage.events + data.overage.recommendationRequests === 0
              ? "none"
              : `${formatNumber(data.overage.events)} events and ${formatNumber(data.overage.recommendationRequests)} requests past the allowances, ${formatMoney(data.overage.amountUsd)}`}
          </p>
          <p className="text-xs text-slate-600 dark:text-slate-400">
            Test keys (rk_test_): {formatNumber(data.test.events)} events and {formatNumber(data.test.recommendationRequests)} requests on Sandbox limits, never billed
            {data.test.writesRefused ? "; their event writes are refused until next month" : ""}.
          </p>
          {days.length > 0 && (
            <details>
              <summary className="cursor-pointer text-sm">Per day ({days.length} {days.length === 1 ? "day" : "days"} with usage)</summary>
              <table className="mt-2 w-full text-left text-sm">
                <thead>
                  <tr>
                    <th scope="col">Day (UTC)</th>
                    <th scope="col" className="text-right">Events</th>
                    <th scope="col" className="text-right">Requests</th>
                    <th scope="col" className="text-right">Test events</th>
                    <th scope="col" className="text-right">Test requests</th>
                  </tr>
                </thead>
                <tbody>
                  {days.map((d) => (
                    <tr key={d.day}>
                      <td>{d.day}</td>
                      <td className="text-right">{formatNumber(d.events)}</td>
                      <td className="text-right">{formatNumber(d.recommendationRequests)}</td>
                      <td className="text-right">{formatNumber(d.testEvents)}</td>
                      <td className="text-right">{formatNumber(d.testRecommendationRequests)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </details>
          )}
        </div>
      )}
    </Card>
  );
}
