import type { Schemas } from "../api/client";
import { Empty, formatNumber } from "./ui";

type Queue = Schemas["QueueRead"];

const LANES: Record<string, string> = { ingest: "live", ingest_bulk: "bulk" };

const seconds = (s: number) => (s < 120 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);

/** What waits in each ingestion lane per tenant: tenants are served in turn, so one tenant's
 * deep backlog shows here without delaying the others. */
export function LaneBacklog({ queues }: { queues: Queue[] }) {
  const rows = queues.filter((q) => q.queue in LANES).flatMap((q) => (q.tenants ?? []).map((t) => ({ lane: LANES[q.queue], queue: q.queue, ...t })));
  if (rows.length === 0) {
    return <Empty>No tenant has events waiting in the ingestion lanes.</Empty>;
  }
  const th = "py-2 pr-3";
  return (
    <div className="relative overflow-x-auto">
      <table className="w-full text-left text-sm">
        <thead>
          <tr className="border-b border-slate-200 dark:border-slate-700">
            <th className={th}>Lane</th>
            <th className={th}>Tenant</th>
            <th className={`${th} text-right`}>Messages</th>
            <th className={`${th} text-right`}>Events</th>
            <th className="py-2 text-right">Oldest waiting</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={`${r.queue}-${r.tenantId}`} className="border-b border-slate-100 dark:border-slate-800" data-testid={`lane-${r.queue}-${r.tenantId}`}>
              <td className={th}>{r.lane}</td>
              <td className={`${th} font-mono text-xs`}>{r.tenantId}</td>
              <td className={`${th} text-right`}>{formatNumber(r.messages)}</td>
              <td className={`${th} text-right`}>{formatNumber(r.events)}</td>
              <td className="py-2 text-right">{seconds(r.oldestSeconds)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
