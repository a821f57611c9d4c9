import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api, call } from "../api/client";
import { TenantNav } from "../components/TenantNav";
import { Badge, Button, Card, Empty, Field, Loading, ProblemView, Select, formatNumber } from "../components/ui";
import { useTenant } from "../hooks";

export default function Catalog() {
  const { id } = useTenant();
  const [q, setQ] = useState("");
  const [category, setCategory] = useState("");
  const [available, setAvailable] = useState("");
  const [applied, setApplied] = useState({ q: "", category: "", available: "" });
  // The cursors of the pages seen so far, so "Previous" goes back without the api's help.
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1];
  const page = useQuery({
    queryKey: ["catalog", id, applied, cursor],
    placeholderData: keepPreviousData,
    queryFn: () =>
      call(() =>
        api.GET("/api/v1/tenants/{tenant_id}/catalog", {
          params: {
            path: { tenant_id: id },
            query: {
              q: applied.q || null,
              category: applied.category || null,
              available: applied.available === "" ? null : applied.available === "true",
              limit: 25,
              cursor,
            },
          },
        }),
      ),
  });
  const rows = page.data?.data ?? [];
  return (
    <>
      <TenantNav />
      <h1 className="mb-4 text-2xl font-bold">Catalog</h1>
      <Card>
        <form
          className="grid gap-3 sm:grid-cols-2 lg:grid-cols-4"
          onSubmit={(e: FormEvent) => {
            e.preventDefault();
            setApplied({ q, category, available });
            setCursors([null]);
          }}
        >
          <Field label="Search" type="search" value={q} onChange={(e) => setQ(e.target.value)} />
          <Field label="Category" value={category} onChange={(e) => setCategory(e.target.value)} />
          <Select label="Availability" value={available} onChange={(e) => setAvailable(e.target.value)}>
            <option value="">all</option>
            <option value="true">available</option>
            <option value="false">unavailable</option>
          </Select>
          <div className="flex items-end">
            <Button type="submit">Filter</Button>
          </div>
        </form>
      </Card>
      <div className="mt-4">
        <Card title="Products (interactions in the last 30 days)">
          <ProblemView error={page.error} />
          {page.isPending ? (
            <Loading />
          ) : rows.length === 0 ? (
            <Empty>No product matches. Products arrive through POST /api/v1/catalog.</Empty>
          ) : (
            <div className="relative overflow-x-auto">
              <table className="w-full text-left text-sm">
                <thead>
                  <tr className="border-b border-slate-200 dark:border-slate-700">
                    <th className="py-2 pr-3">Product</th>
                    <th className="py-2 pr-3">Category</th>
                    <th className="py-2 pr-3 text-right">Price</th>
                    <th className="py-2 pr-3">State</th>
                    <th className="py-2 pr-3 text-right">Views</th>
                    <th className="py-2 pr-3 text-right">Clicks</th>
                    <th className="py-2 text-right">Purchases</th>
                  </tr>
                </thead>
                <tbody>
                  {rows.map((p) => (
                    <tr key={p.productId} className="border-b border-slate-100 dark:border-slate-800">
                      <td className="py-2 pr-3">
                        <span className="font-medium">{p.name}</span>
                        <span className="block font-mono text-xs text-slate-600 dark:text-slate-400">{p.productId}</span>
                      </td>
                      <td className="py-2 pr-3">{p.category}</td>
                      <td className="py-2 pr-3 text-right">
                        {formatNumber(p.price, 2)} {p.currency}
                      </td>
                      <td className="py-2 pr-3">{p.available ? <Badge tone="green">available</Badge> : <Badge>unavailable</Badge>}</td>
                      <td className="py-2 pr-3 text-right">{formatNumber(p.interactions.views)}</td>
                      <td className="py-2 pr-3 text-right">{formatNumber(p.interactions.clicks)}</td>
                      <td className="py-2 text-right">{formatNumber(p.interactions.purchases)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          <div className="mt-3 flex gap-2">
            <Button tone="secondary" disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
              Previous
            </Button>
            <Button tone="secondary" disabled={!page.data?.nextCursor} onClick={() => page.data?.nextCursor && setCursors([...cursors, page.data.nextCursor])}>
              Next
            </Button>
          </div>
        </Card>
      </div>
    </>
  );
}
