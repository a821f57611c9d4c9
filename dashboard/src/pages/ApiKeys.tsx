import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api, call, type Schemas } from "../api/client";
import { asProblem } from "../api/problem";
import { TenantNav } from "../components/TenantNav";
import { Badge, Button, Card, Confirm, Empty, Field, Loading, ProblemView, Select, formatDate } from "../components/ui";
import { useTenant } from "../hooks";

type Key = Schemas["ApiKeyRead"];

export default function ApiKeys() {
  const { id, readOnly } = useTenant();
  const queries = useQueryClient();
  const keys = useQuery({
    queryKey: ["keys", id],
    queryFn: () => call(() => api.GET("/api/v1/tenants/{tenant_id}/api-keys", { params: { path: { tenant_id: id } } })),
  });
  const [name, setName] = useState("");
  const [permission, setPermission] = useState<"read" | "read_write">("read");
  const [environment, setEnvironment] = useState<"live" | "test">("live");
  const [created, setCreated] = useState<Schemas["ApiKeyCreated"] | null>(null);
  const [copied, setCopied] = useState(false);
  const [revoking, setRevoking] = useState<Key | null>(null);
  const refresh = () => queries.invalidateQueries({ queryKey: ["keys", id] });
  const create = useMutation({
    mutationFn: () =>
      call(() =>
        api.POST("/api/v1/tenants/{tenant_id}/api-keys", {
          params: { path: { tenant_id: id } },
          body: { name, permission, environment },
        }),
      ),
    onSuccess: (key) => {
      setCreated(key);
      setCopied(false);
      setName("");
      void refresh();
    },
  });
  const revoke = useMutation({
    mutationFn: (keyId: string) =>
      call(() => api.DELETE("/api/v1/tenants/{tenant_id}/api-keys/{key_id}", { params: { path: { tenant_id: id, key_id: keyId } } })),
    onSuccess: () => {
      setRevoking(null);
      void refresh();
    },
  });
  const problem = create.error ? asProblem(create.error) : null;
  const rows = keys.data?.data ?? [];
  return (
    <>
      <TenantNav />
      <h1 className="mb-4 text-2xl font-bold">API keys</h1>
      <div className="grid grid-cols-1 gap-4 lg:grid-cols-3">
        <div className="lg:col-span-2">
          <Card title="Keys">
            <ProblemView error={keys.error ?? revoke.error} />
            {keys.isPending ? (
              <Loading />
            ) : rows.length === 0 ? (
              <Empty>No keys yet. Create one to send events and read recommendations.</Empty>
            ) : (
              <div className="relative overflow-x-auto">
                <table className="w-full text-left text-sm">
                  <thead>
                    <tr className="border-b border-slate-200 dark:border-slate-700">
                      <th className="py-2 pr-3">Name</th>
                      <th className="py-2 pr-3">Prefix</th>
                      <th className="py-2 pr-3">Permission</th>
                      <th className="py-2 pr-3">Last used</th>
                      <th className="py-2 pr-3">State</th>
                      <th className="py-2"><span className="sr-only">Actions</span></th>
                    </tr>
                  </thead>
                  <tbody>
                    {rows.map((k) => (
                      <tr key={k.id} className="border-b border-slate-100 dark:border-slate-800" data-testid={`key-${k.name}`}>
                        <td className="py-2 pr-3">{k.name}</td>
                        <td className="py-2 pr-3 font-mono text-xs">{k.prefix}…</td>
                        <td className="py-2 pr-3">{k.permission === "read_write" ? "read & write" : "read"}</td>
                        <td className="py-2 pr-3">{k.lastUsedAt ? formatDate(k.lastUsedAt) : "never"}</td>
                        <td className="py-2 pr-3">{k.revokedAt ? <Badge tone="red">revoked</Badge> : <Badge tone="green">active</Badge>}</td>
                        <td className="py-2 text-right">
                          {!k.revokedAt && (
                            <Button tone="danger" disabled={readOnly} onClick={() => setRevoking(k)} aria-label={`Revoke ${k.name}`}>
                              Revoke
                            </Button>
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
        <Card title="New key">
          {created && (
            <div role="status" className="mb-4 space-y-2 rounded-md border border-green-300 bg-green-50 p-3 text-sm dark:border-green-800 dark:bg-green-950">
              <p className="font-semibold">Copy this key now: it is shown only once.</p>
              <code data-testid="new-key" className="block break-all rounded bg-white p-2 font-mono text-xs dark:bg-slate-900">
                {created.key}
              </code>
              <Button
                tone="secondary"
                onClick={async () => {
                  try {
                    await navigator.clipboard.writeText(created.key);
                    setCopied(true);
                  } catch {
                    setCopied(false);
                  }
                }}
              >
                {copied ? "Copied" : "Copy key"}
              </Button>
            </div>
          )}
          <form
            className="space-y-3"
            onSubmit={(e: FormEvent) => {
              e.preventDefault();
              create.mutate();
            }}
          >
            <ProblemView error={problem && problem.errors.length === 0 ? problem : null} />
            <Field label="Key name" value={name} onChange={(e) => setName(e.target.value)} required error={problem?.fieldMessage("name")} />
            <Select label="Permission" value={permission} onChange={(e) => setPermission(e.target.value as "read" | "read_write")}>
              <option value="read">read (storefront)</option>
              <option value="read_write">read & write (backend)</option>
            </Select>
            <Select label="Environment" value={environment} onChange={(e) => setEnvironment(e.target.value as "live" | "test")}>
              <option value="live">live</option>
              <option value="test">test</option>
            </Select>
            <Button type="submit" disabled={create.isPending || readOnly}>
              Create key
            </Button>
          </form>
        </Card>
      </div>
      <Confirm
        open={revoking !== null}
        title={`Revoke ${revoking?.name ?? ""}?`}
        confirmLabel="Revoke key"
        onCancel={() => setRevoking(null)}
        onConfirm={() => revoking && revoke.mutate(revoking.id)}
      >
        <p className="text-sm">The key stops working at once; this cannot be undone.</p>
      </Confirm>
    </>
  );
}
