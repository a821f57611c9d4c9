import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useState, type FormEvent } from "react";
import { Link } from "react-router";
import { api, call, type Schemas } from "../api/client";
import { asProblem } from "../api/problem";
import { TenantNav } from "../components/TenantNav";
import { UsageCard } from "../components/Usage";
import { Badge, Button, Card, Field, Loading, ProblemView, Select, formatDate, formatNumber } from "../components/ui";
import { useTenant } from "../hooks";

const STRATEGIES = ["collaborative", "content_based", "trending", "frequently_bought_together"] as const;
type Config = Schemas["TenantConfig"];

type ConfigFormProps = {
  id: string;
  config: Config;
  readOnly: boolean;
  // Kept by the page: the form is mounted again when the saved tenant comes back.
  saved: boolean;
  onSaved: (saved: boolean) => void;
};

function ConfigForm({ id, config, readOnly, saved, onSaved }: ConfigFormProps) {
  const queries = useQueryClient();
  const [strategy, setStrategy] = useState(config.defaultStrategy ?? "");
  const [origins, setOrigins] = useState((config.allowedOrigins ?? []).join("\n"));
  const [reads, setReads] = useState(String(config.rateLimits?.readsPerMinute ?? ""));
  const [writes, setWrites] = useState(String(config.rateLimits?.writesPerMinute ?? ""));
  const [answerCache, setAnswerCache] = useState(String(config.answerCacheSeconds ?? ""));
  const save = useMutation({
    mutationFn: () => {
      const next: Config = {
        ...config,
        defaultStrategy: (strategy || null) as Config["defaultStrategy"],
        allowedOrigins: origins.split(/\s+/).filter(Boolean),
        rateLimits: {
          readsPerMinute: reads ? Number(reads) : null,
          writesPerMinute: writes ? Number(writes) : null,
        },
        answerCacheSeconds: answerCache ? Number(answerCache) : null,
      };
      return call(() => api.PATCH("/api/v1/tenants/{tenant_id}", { params: { path: { tenant_id: id } }, body: { config: next } }));
    },
    onSuccess: () => {
      onSaved(true);
      void queries.invalidateQueries({ queryKey: ["tenant", id] });
    },
  });
  const problem = save.error ? asProblem(save.error) : null;
  const originsId = "allowed-origins";
  return (
    <form
      className="space-y-3"
      onSubmit={(e: FormEvent) => {
        e.preventDefault();
        onSaved(false);
        save.mutate();
      }}
    >
      <ProblemView error={problem} />
      <Select label="Default strategy" value={strategy} onChange={(e) => setStrategy(e.target.value)} disabled={readOnly}>
        <option value="">collaborative (platform default)</option>
        {STRATEGIES.map((s) => (
          <option key={s} value={s}>
            {s}
          </option>
        ))}
      </Select>
      <div className="space-y-1">
        <label htmlFor={originsId} className="block text-sm font-medium">
          Allowed origins (one per line)
        </label>
        <textarea
          id={originsId}
          rows={3}
          value={origins}
          onChange={(e) => setOrigins(e.target.value)}
          disabled={readOnly}
          className="block w-full rounded-md border border-slate-400 bg-white px-3 py-2 font-mono text-sm dark:border-slate-500 dark:bg-slate-900"
        />
        {problem?.fieldMessage("allowedOrigins") && <p className="text-sm text-red-700 dark:text-red-400">{problem.fieldMessage("allowedOrigins")}</p>}
      </div>
      <div className="grid gap-3 sm:grid-cols-2">
        <Field label="Reads per minute" type="number" min={1} value={reads} onChange={(e) => setReads(e.target.value)} disabled={readOnly} hint="Empty: 1,000" />
        <Field label="Writes per minute" type="number" min={1} value={writes} onChange={(e) => setWrites(e.target.value)} disabled={readOnly} hint="Empty: 500" />
      </div>
      <Field
        label="Answer cache (seconds)"
        type="number"
        min={0}
        max={3600}
        value={answerCache}
        onChange={(e) => setAnswerCache(e.target.value)}
        disabled={readOnly}
        error={problem?.fieldMessage("answerCacheSeconds")}
        hint="How long a recommendation answer may be served unchanged (0 to 3600; 0 computes every answer afresh). Empty: the server's default, 5 minutes."
      />
      <p className="text-xs text-slate-600 dark:text-slate-400">Widget configs are cached by storefronts for 60 seconds.</p>
      <div className="flex items-center gap-3">
        <Button type="submit" disabled={readOnly || save.isPending}>
          Save configuration
        </Button>
        {saved && <span role="status" className="text-sm text-green-800 dark:text-green-300">Saved</span>}
      </div>
    </form>
  );
}

export default function TenantDetail() {
  const { id, tenant, query, readOnly } = useTenant();
  const readiness = useQuery({
    queryKey: ["readiness", id],
    queryFn: () => call(() => api.GET("/api/v1/tenants/{tenant_id}/recommendations/readiness", { params: { path: { tenant_id: id } } })),
  });
  const runs = useQuery({
    queryKey: ["retrains", id],
    queryFn: () => call(() => api.GET("/api/v1/tenants/{tenant_id}/retrain", { params: { path: { tenant_id: id } } })),
  });
  const retrain = useMutation({
    mutationFn: () => call(() => api.POST("/api/v1/tenants/{tenant_id}/retrain", { params: { path: { tenant_id: id } } })),
  });
  const took = (seconds: number | null | undefined) => (seconds === null || seconds === undefined ? "" : ` (${seconds.toFixed(1)} s)`);
  const [formKey, setFormKey] = useState(0);
  const [configSaved, setConfigSaved] = useState(false);
  useEffect(() => setFormKey((k) => k + 1), [tenant?.updatedAt]);
  if (query.isPending) return <><TenantNav /><Loading /></>;
  if (!tenant) return <><TenantNav /><ProblemView error={query.error} /></>;
  const usage = tenant.usage;
  const strategies = (readiness.data?.strategies ?? {}) as Record<string, { ready?: boolean }>;
  return (
    <>
      <TenantNav />
      <h1 className="mb-4 text-2xl font-bold">Tenant overview</h1>
      <div className="grid grid-cols-1 gap-4 lg:grid-cols-2">
        <Card title="Usage this month">
          <dl className="grid grid-cols-2 gap-3 text-sm sm:grid-cols-3">
            {(
              [
                ["Events", usage.eventsThisMonth],
                ["Catalog items", usage.catalogItems],
                ["Running experiments", usage.runningExperiments],
                ["Widgets", usage.widgets],
              ] as const
            ).map(([label, value]) => (
              <div key={label}>
                <dt className="text-slate-600 dark:text-slate-400">{label}</dt>
                <dd className="text-lg font-semibold">{formatNumber(value)}</dd>
              </div>
            ))}
            <div>
              <dt className="text-slate-600 dark:text-slate-400">API keys</dt>
              <dd className="text-lg font-semibold">
                <Link to={`/dashboard/tenants/${id}/api-keys`} className="text-blue-700 underline dark:text-blue-300">
                  {usage.apiKeys} of {usage.maxApiKeys}
                </Link>
              </dd>
            </div>
          </dl>
        </Card>
        <Card
          title="Model"
          actions={
            <Button tone="secondary" disabled={readOnly || retrain.isPending} onClick={() => retrain.mutate()}>
              Retrain now
            </Button>
          }
        >
          <ProblemView error={readiness.error ?? runs.error ?? retrain.error} />
          {retrain.isSuccess && <p role="status" className="mb-2 text-sm text-green-800 dark:text-green-300">A full retrain is queued.</p>}
          <dl className="grid grid-cols-1 gap-2 text-sm sm:grid-cols-2">
            <div>
              <dt className="text-slate-600 dark:text-slate-400">Model version</dt>
              <dd className="font-mono">{readiness.data?.modelVersion ?? "not trained yet"}</dd>
            </div>
            <div>
              <dt className="text-slate-600 dark:text-slate-400">Trained at</dt>
              <dd>{formatDate(readiness.data?.trainedAt)}</dd>
            </div>
            <div>
              <dt className="text-slate-600 dark:text-slate-400">Last full retrain</dt>
              <dd data-testid="last-full-retrain">
                {formatDate(runs.data?.lastFullRetrainAt)}
                {took(runs.data?.lastFullRetrainSeconds)}
              </dd>
            </div>
            <div>
              <dt className="text-slate-600 dark:text-slate-400">Last incremental retrain</dt>
              <dd>
                {formatDate(runs.data?.lastIncrementalRetrainAt)}
                {took(runs.data?.lastIncrementalRetrainSeconds)}
              </dd>
            </div>
            {(runs.data?.failures ?? 0) > 0 && (
              <div>
                <dt className="text-slate-600 dark:text-slate-400">Failed retrains</dt>
                <dd>
                  <Badge tone="red">{runs.data?.failures}</Badge> last {formatDate(runs.data?.lastFailureAt)}
                </dd>
              </div>
            )}
          </dl>
          <h3 className="mt-3 text-sm font-semibold">Data readiness</h3>
          <ul className="mt-1 flex flex-wrap gap-2">
            {STRATEGIES.map((s) => (
              <li key={s}>
                <Badge tone={strategies[s]?.ready ? "green" : "amber"}>
                  {s}: {strategies[s]?.ready ? "ready" : "not enough data"}
                </Badge>
              </li>
            ))}
          </ul>
        </Card>
        <div className="lg:col-span-2">
          <UsageCard id={id} />
        </div>
        <div className="lg:col-span-2">
          <Card title="Configuration">
            <ConfigForm
              key={formKey}
              id={id}
              config={tenant.config as Config}
              readOnly={readOnly}
              saved={configSaved}
              onSaved={setConfigSaved}
            />
          </Card>
        </div>
      </div>
    </>
  );
}
