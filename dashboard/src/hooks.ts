import { useQuery } from "@tanstack/react-query";
import { useParams } from "react-router";
import { api, call } from "./api/client";

/** The tenant of the current route (its id from the path) and whether it is read-only. */
export function useTenant() {
  const { id = "" } = useParams();
  const query = useQuery({
    queryKey: ["tenant", id],
    queryFn: () => call(() => api.GET("/api/v1/tenants/{tenant_id}", { params: { path: { tenant_id: id } } })),
  });
  return { id, tenant: query.data, query, readOnly: query.data?.status === "suspended" };
}

/** ISO date (YYYY-MM-DD) `days` before today, UTC. */
export function daysAgo(days: number): string {
  const d = new Date(Date.now() - days * 86_400_000);
  return d.toISOString().slice(0, 10);
}
