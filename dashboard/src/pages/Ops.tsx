import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { api, call, type Schemas } from "../api/client";
import { useAuth } from "../auth";
import { LaneBacklog } from "../components/LaneBacklog";
import { Badge, Button, Card, Confirm, Empty, Loading, PageTitle, ProblemView, formatDate, formatNumber } from "../components/ui";

type DeadLetter = Schemas["DeadLetterRead"];
type QueueMinute = Schemas["QueueMinuteRead"];

const rate = (perMinute: number) => `${perMinute === 0 ? "0" : perMinute < 10 ? perMinute.toFixed(1) : formatNumber(Math.round(perMinute))}/min`;

/** Processed (blue) and failed (red) messages per minute over the last hour, on one scale. */
export function ThroughputChart({ queue, minutes }: { queue: string; minutes: QueueMinute[] }) {
  const w = 120;
  const h = 32;
  const top = Math.max(1, ...minutes.map((m) => Math.max(m.processed, m.failed)));
  const n = Math.max(1, minutes.length - 1);
  const line = (pick: (m: QueueMinute) => number) =>
    minutes.map((m, i) => `${i === 0 ? "M" : "L"}${((w * i) / n).toFixed(1)},${(2 + (h - 4) * (1 - pick(m) / top)).toFixed(1)}`).join("");
  const processed = minutes.reduce((sum, m) => sum + m.processed, 0);
  const failed = minutes.reduce((sum, m) => sum + m.failed, 0);
  const label = `${queue} over the last ${minutes.length} minutes: ${formatNumber(processed)} processed, ${formatNumber(failed)} failed, at most ${formatNumber(top)} a minute`;
  return (
    <svg viewBox={`0 0 ${w} ${h}`} width={w} height={h} role="img" aria-label={label} className="inline-block align-middle">
      <title>{label}</title>
      <path d={line((m) => m.processed)} fill="none" className="stroke-blue-700 dark:stroke-blue-300" strokeWidth={1.5} />
      {failed > 0 && <path d={line((m) => m.failed)} fill="none" className="stroke-red-700 dark:stroke-red-400" strokeWidth={1.5} />}
    </svg>
  );
}

const seconds = (s: number | null | undefined) => (s === null || s === undefined ? "—" : s < 120 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);

/** The operators' console: what waits, what is claimed and late, who is alive, what died and
 * each tenant's models, refreshed every 5 seconds. */
export default function Ops() {
  const { me } = useAuth();
  const queries = useQueryClient();
  const allowed = me?.isOperator === true;
  const refetchInterval = 5000;
  const queues = useQuery({ queryKey: ["ops", "queues"], enabled: allowed, refetchInterval, queryFn: () => call(() => api.GET("/api/v1/ops/queues")) });
  const workers = useQuery({ queryKey: ["ops", "workers"], enabled: allowed, refetchInterval, queryFn: () => call(() => api.GET("/api/v1/ops/workers")) });
  const dead = useQuery({
    queryKey: ["ops", "dead"],
    enabled: allowed,
    refetchInterval,
    queryFn: () => call(() => api.GET("/api/v1/ops/dead-letters", { params: { query: { limit: 100 } } })),
  });
  const models = useQuery({ queryKey: ["ops", "models"], enabled: allowed, refetchInterval: 30_000, queryFn: () => call(() => api.GET("/api/v1/ops/models")) });
  const [inspecting, setInspecting] = useState<DeadLetter | null>(null);
  const [replaying, setReplaying] = useState<{ ids?: string[]; label: string } | null>(null);
  const replay = useMutation({
    mutationFn: (body: Schemas["ReplayCommand"]) => call(() => api.POST("/api/v1/ops/dead-letters/replay", { body })),
    onSuccess: () => {
      setReplaying(null);
      void queries.invalidateQueries({ queryKey: ["ops"] });
    },
  });
  if (!allowed) {
    return (
      <>
        <PageTitle>Operations</PageTitle>
        <div role="alert" className="rounded-md border border-amber-300 bg-amber-50 p-3 text-sm dark:border-amber-700 dark:bg-amber-950">
          <p className="font-semibold">Operators only</p>
          <p>This console is for platform operators. Ask one to run “recomengine create-admin --operator” for your account.</p>
        </div>
      </>
    );
  }
  const table = "w-full text-left text-sm";
  const th = "py-2 pr-3";
  return (
    <>
      <PageTitle>Operations</PageTitle>
      <div className="grid grid-cols-1 gap-4">
        <Card title="Queues">
          <ProblemView error={queues.error} />
          {queues.isPending ? (
            <Loading />
          ) : (
            <div className="relative overflow-x-auto">
              <table className={table}>
                <thead>
                  <tr className="border-b border-slate-200 dark:border-slate-700">
                    <th className={th}>Queue</th>
                    <th className={`${th} text-right`}>Ready</th>
                    <th className={`${th} text-right`}>In progress</th>
                    <th className={`${th} text-right`}>Delayed</th>
                    <th className={`${th} text-right`}>Dead letters</th>
                    <th className={`${th} text-right`}>Oldest waiting</th>
                    <th className={`${th} text-right`}>Oldest claimed</th>
                    <th className={`${th} text-right`}>Taken back from stuck workers</th>
                    <th className="py-2">Throughput, last hour</th>
                  </tr>
                </thead>
                <tbody>
                  {(queues.data?.data ?? []).map((q) => (
                    <tr key={q.queue} className="border-b border-slate-100 dark:border-slate-800" data-testid={`queue-${q.queue}`}>
                      <td className={th}>{q.queue}</td>
                      <td className={`${th} text-right`}>{formatNumber(q.ready)}</td>
                      <td className={`${th} text-right`}>{formatNumber(q.inProgress)}</td>
                      <td className={`${th} text-right`}>{formatNumber(q.delayed)}</td>
                      <td className={`${th} text-right`}>{q.deadLetters > 0 ? <Badge tone="red">{formatNumber(q.deadLetters)}</Badge> : "0"}</td>
                      <td className={`${th} text-right`}>{seconds(q.lagSeconds)}</td>
                      <td className={`${th} text-right`}>{seconds(q.oldestClaimedSeconds)}</td>
                      <td className={`${th} text-right`}>{formatNumber(q.requeuedFromStuck)}</td>
                      <td className="py-2" data-testid={`throughput-${q.queue}`} data-processed-last-hour={q.processedLastHour} data-failed-last-hour={q.failedLastHour}>
                        <span className="flex items-center gap-2 whitespace-nowrap">
                          <ThroughputChart queue={q.queue} minutes={q.throughput} />
                          <span>
                            {rate(q.processedPerMinute)}
                            {q.failedLastHour > 0 && <span className="block text-xs text-red-800 dark:text-red-300">failed {rate(q.failedPerMinute)}, {formatNumber(q.failedLastHour)} this hour</span>}
                          </span>
                        </span>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </Card>
        <Card title="Ingestion lanes: backlog per tenant">{queues.data ? <LaneBacklog queues={queues.data.data} /> : <Loading />}</Card>
        <Card title="Workers and scheduler">
          <ProblemView error={workers.error} />
          {workers.data && (
            <>
              <p className="mb-2 text-sm">
                Scheduler: {workers.data.scheduler.alive ? <Badge tone="green">alive</Badge> : <Badge tone="red">down</Badge>} last heartbeat {formatDate(workers.data.scheduler.lastHeartbeatAt)}
                {workers.data.scheduler.pid ? ` (${workers.data.scheduler.host ?? "?"} pid ${workers.data.scheduler.pid})` : ""}
              </p>
              {workers.data.data.length === 0 ? (
                <Empty>No worker has sent a heartbeat.</Empty>
              ) : (
                <ul className="divide-y divide-slate-200 text-sm dark:divide-slate-700">
                  {workers.data.data.map((w) => (
                    <li key={w.id} className="flex flex-wrap items-center gap-2 py-2">
                      {w.alive ? <Badge tone="green">alive</Badge> : <Badge tone="red">silent</Badge>}
                      <span className="font-mono text-xs">
                        {w.host ?? "?"} pid {w.pid ?? "?"}
                        {w.threads ? `, ${w.threads} threads` : ""}
                      </span>
                      <span>queues: {w.queues.join(", ")}</span>
                      <span className="text-slate-600 dark:text-slate-400">heartbeat {formatDate(w.lastHeartbeatAt)}</span>
                    </li>
                  ))}
                </ul>
              )}
            </>
          )}
        </Card>
        <Card
          title="Dead letters"
          actions={
            (dead.data?.data.length ?? 0) > 0 && (
              <Button tone="secondary" onClick={() => setReplaying({ label: "every dead letter" })}>
                Replay all
              </Button>
            )
          }
        >
          <ProblemView error={dead.error ?? replay.error} />
          {replay.isSuccess && <p role="status" className="mb-2 text-sm text-green-800 dark:text-green-300">Replayed {replay.data.replayed} message(s).</p>}
          {dead.isPending ? (
            <Loading />
          ) : (dead.data?.data ?? []).length === 0 ? (
            <Empty>No dead letters.</Empty>
          ) : (
            <ul className="divide-y divide-slate-200 text-sm dark:divide-slate-700">
              {dead.data?.data.map((d) => (
                <li key={d.id} className="flex flex-wrap items-center gap-2 py-2" data-testid="dead-letter">
                  <Badge>{d.queue}</Badge>
                  <span className="font-mono text-xs">{d.actor}</span>
                  <span className="text-slate-600 dark:text-slate-400">
                    failed {formatDate(d.failedAt)} after {d.retries} retries: {d.error}
                  </span>
                  <span className="ml-auto flex gap-2">
                    <Button tone="secondary" onClick={() => setInspecting(d)}>
                      Inspect
                    </Button>
                    <Button onClick={() => setReplaying({ ids: [d.id], label: `${d.actor} (${d.id})` })}>Replay</Button>
                  </span>
                </li>
              ))}
            </ul>
          )}
          {inspecting && (
            <div className="mt-3">
              <h3 className="text-sm font-semibold">Arguments of {inspecting.actor}</h3>
              <pre className="mt-1 max-h-64 overflow-auto whitespace-pre-wrap break-all rounded bg-slate-100 p-2 text-xs dark:bg-slate-800" data-testid="dead-letter-args">
                {inspecting.args}
              </pre>
              <p className="mt-1 text-xs text-slate-600 dark:text-slate-400">{inspecting.error}</p>
            </div>
          )}
        </Card>
        <Card title="Models per tenant">
          <ProblemView error={models.error} />
          {models.isPending ? (
            <Loading />
          ) : (
            <div className="relative overflow-x-auto">
              <table className={table}>
                <thead>
                  <tr className="border-b border-slate-200 dark:border-slate-700">
                    <th className={th}>Tenant</th>
                    <th className={th}>Version</th>
                    <th className={th}>Last full retrain</th>
                    <th className={th}>Last incremental</th>
                    <th className={`${th} text-right`}>Duration</th>
                    <th className="py-2">Failures</th>
                  </tr>
                </thead>
                <tbody>
                  {(models.data?.data ?? []).map((m) => (
                    <tr key={m.tenantId} className="border-b border-slate-100 dark:border-slate-800">
                      <td className={th}>{m.tenantName}</td>
                      <td className={`${th} font-mono text-xs`}>{m.modelVersion ?? "—"}</td>
                      <td className={th}>{formatDate(m.lastFullRetrainAt)}</td>
                      <td className={th}>
                        {formatDate(m.lastIncrementalRetrainAt)}
                        {m.lastIncrementalRetrainSeconds !== null ? ` (${seconds(m.lastIncrementalRetrainSeconds)})` : ""}
                      </td>
                      <td className={`${th} text-right`}>{seconds(m.lastDurationSeconds)}</td>
                      <td className="py-2">
                        {m.failures > 0 ? (
                          <span title={m.lastError ?? ""}>
                            <Badge tone="red">{m.failures}</Badge> last {formatDate(m.lastFailureAt)}
                          </span>
                        ) : (
                          "0"
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </Card>
      </div>
      <Confirm
        open={replaying !== null}
        title="Replay dead letters?"
        confirmLabel="Replay"
        tone="primary"
        onCancel={() => setReplaying(null)}
        onConfirm={() => replaying && replay.mutate(replaying.ids ? { ids: replaying.ids } : {})}
      >
        <p className="text-sm">Put {replaying?.label} back on its queue with retries reset.</p>
      </Confirm>
    </>
  );
}
