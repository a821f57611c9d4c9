import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link } from "react-router";
import { api, call, type Schemas } from "../api/client";
import { asProblem } from "../api/problem";
import { Badge, Button, Card, Confirm, Empty, Field, Loading, PageTitle, ProblemView, formatDate } from "../components/ui";

type Tenant = Schemas["TenantRead"];

export default function Tenants() {
  const queries = useQueryClient();
  const list = useQuery({ queryKey: ["tenants"], queryFn: () => call(() => api.GET("/api/v1/tenants")) });
  const [search, setSearch] = useState("");
  const [name, setName] = useState("");
  const [deleting, setDeleting] = useState<Tenant | null>(null);
  const refresh = () => queries.invalidateQueries({ queryKey: ["tenants"] });
  const create = useMutation({
    mutationFn: (tenantName: string) => call(() => api.POST("/api/v1/tenants", { body: { name: tenantName } })),
    onSuccess: () => {
      setName("");
      void refresh();
    },
  });
  const setStatus = useMutation({
    mutationFn: ({ id, status }: { id: string; status: "active" | "suspended" }) =>
      call(() => api.PATCH("/api/v1/tenants/{tenant_id}", { params: { path: { tenant_id: id } }, body: { status } })),
    onSuccess: (_data, vars) => {
      void refresh();
      void queries.invalidateQueries({ queryKey: ["tenant", vars.id] });
    },
  });
  const remove = useMutation({
    mutationFn: (id: string) => call(() => api.DELETE("/api/v1/tenants/{tenant_id}", { params: { path: { tenant_id: id } } })),
    onSuccess: () => {
      setDeleting(null);
      void refresh();
    },
  });
  const tenants = (list.data?.data ?? []).filter((t) => t.name.toLowerCase().includes(search.trim().toLowerCase()));
  const createProblem = create.error ? asProblem(create.error) : null;
  return (
    <>
      <PageTitle>Tenants</PageTitle>
      <div className="grid grid-cols-1 gap-4 lg:grid-cols-3">
        <div className="lg:col-span-2">
          <Card
            title="Your tenants"
            actions={<div className="w-full sm:w-64"><Field label="Search tenants" type="search" value={search} onChange={(e) => setSearch(e.target.value)} /></div>}
          >
            <ProblemView error={list.error ?? setStatus.error ?? remove.error} />
            {list.isPending ? (
              <Loading />
            ) : tenants.length === 0 ? (
              <Empty>{search ? "No tenant matches this search." : "No tenants yet: create your first one."}</Empty>
            ) : (
              <ul className="divide-y divide-slate-200 dark:divide-slate-700">
                {tenants.map((t) => (
                  <li key={t.id} className="flex flex-wrap items-center gap-3 py-3">
                    <div className="min-w-0 flex-1">
                      <Link to={`/dashboard/tenants/${t.id}`} className="font-medium text-blue-700 underline dark:text-blue-300">
                        {t.name}
                      </Link>
                      <p className="text-xs text-slate-600 dark:text-slate-400">Created {formatDate(t.createdAt)}</p>
                    </div>
                    <Badge tone={t.status === "active" ? "green" : "amber"}>{t.status}</Badge>
                    <Button
                      tone="secondary"
                      onClick={() => setStatus.mutate({ id: t.id, status: t.status === "active" ? "suspended" : "active" })}
                      aria-label={`${t.status === "active" ? "Suspend" : "Reactivate"} ${t.name}`}
                    >
                      {t.status === "active" ? "Suspend" : "Reactivate"}
                    </Button>
                    <Button tone="danger" onClick={() => setDeleting(t)} aria-label={`Delete ${t.name}`}>
                      Delete
                    </Button>
                  </li>
                ))}
              </ul>
            )}
          </Card>
        </div>
        <Card title="New tenant">
          <form
            className="space-y-3"
            onSubmit={(e: FormEvent) => {
              e.preventDefault();
              create.mutate(name);
            }}
          >
            <ProblemView error={createProblem && createProblem.errors.length === 0 ? createProblem : null} />
            <Field label="Tenant name" value={name} onChange={(e) => setName(e.target.value)} required error={createProblem?.fieldMessage("name")} />
            <Button type="submit" disabled={create.isPending}>
              Create tenant
            </Button>
          </form>
        </Card>
      </div>
      <Confirm
        open={deleting !== null}
        title={`Delete ${deleting?.name ?? ""}?`}
        typed={deleting?.name}
        confirmLabel="Delete tenant"
        onCancel={() => setDeleting(null)}
        onConfirm={() => deleting && remove.mutate(deleting.id)}
      >
        <p className="text-sm">Its keys stop working at once and its data is purged after 30 days.</p>
      </Confirm>
    </>
  );
}
