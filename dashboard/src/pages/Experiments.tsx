import { useQuery } from "@tanstack/react-query";
import { Link } from "react-router";
import { api, call } from "../api/client";
import { TenantNav } from "../components/TenantNav";
import { Badge, Card, Empty, Loading, ProblemView, formatDate } from "../components/ui";
import { useTenant } from "../hooks";

export const statusTone = (s: string) => (s === "running" ? "green" : s === "paused" ? "amber" : s === "completed" ? "blue" : "slate") as "green" | "amber" | "blue" | "slate";

export default function Experiments() {
  const { id, readOnly } = useTenant();
  const list = useQuery({
    queryKey: ["experiments", id],
    queryFn: () => call(() => api.GET("/api/v1/tenants/{tenant_id}/experiments", { params: { path: { tenant_id: id }, query: { limit: 100 } } })),
  });
  const rows = list.data?.data ?? [];
  return (
    <>
      <TenantNav />
      <div className="mb-4 flex flex-wrap items-center justify-between gap-2">
        <h1 className="text-2xl font-bold">Experiments</h1>
        {!readOnly && (
          <Link to={`/dashboard/tenants/${id}/experiments/new`} className="rounded-md bg-blue-700 px-4 py-2 text-sm font-medium text-white hover:bg-blue-800">
            New experiment
          </Link>
        )}
      </div>
      <Card>
        <ProblemView error={list.error} />
        {list.isPending ? (
          <Loading />
        ) : rows.length === 0 ? (
          <Empty>No experiments yet. An experiment compares two strategies on one placement.</Empty>
        ) : (
          <div className="relative overflow-x-auto">
            <table className="w-full text-left text-sm">
              <thead>
                <tr className="border-b border-slate-200 dark:border-slate-700">
                  <th className="py-2 pr-3">Name</th>
                  <th className="py-2 pr-3">Placement</th>
                  <th className="py-2 pr-3">Control vs variant</th>
                  <th className="py-2 pr-3">Status</th>
                  <th className="py-2">Started</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((e) => (
                  <tr key={e.id} className="border-b border-slate-100 dark:border-slate-800">
                    <td className="py-2 pr-3">
                      <Link className="text-blue-700 underline dark:text-blue-300" to={`/dashboard/tenants/${id}/experiments/${e.id}`}>
                        {e.name}
                      </Link>
                    </td>
                    <td className="py-2 pr-3">{e.placementId}</td>
                    <td className="py-2 pr-3">
                      {e.controlStrategy} vs {e.variantStrategy} ({e.trafficSplit}% variant)
                    </td>
                    <td className="py-2 pr-3">
                      <Badge tone={statusTone(e.status)}>{e.status}</Badge>
                    </td>
                    <td className="py-2">{formatDate(e.startedAt)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Card>
    </>
  );
}
