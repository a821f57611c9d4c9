import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useEffect, useRef, useState, type FormEvent } from "react";
import { api, authorisedFetch, call, type Schemas } from "../api/client";
import { readSse } from "../api/sse";
import { TenantNav } from "../components/TenantNav";
import { Button, Card, Empty, Field, Loading, ProblemView, Select, formatDate } from "../components/ui";
import { useTenant } from "../hooks";

type Event = Schemas["EventRead"];
const TYPES = ["product_viewed", "product_clicked", "add_to_cart", "remove_from_cart", "purchase", "recommendation_clicked", "recommendation_impressed"];
// The live list keeps the newest events only, so a busy tenant cannot grow the page forever.
const LIVE_MAX = 200;

interface Filters {
  eventType: string;
  userId: string;
  productId: string;
  from: string;
  to: string;
}

function EventTable({ events, caption }: { events: Event[]; caption: string }) {
  return (
    <div className="relative overflow-x-auto">
      <table className="w-full text-left text-sm">
        <caption className="sr-only">{caption}</caption>
        <thead>
          <tr className="border-b border-slate-200 dark:border-slate-700">
            <th className="py-2 pr-3">Time</th>
            <th className="py-2 pr-3">Type</th>
            <th className="py-2 pr-3">User</th>
            <th className="py-2 pr-3">Product</th>
            <th className="py-2">Metadata</th>
          </tr>
        </thead>
        <tbody>
          {events.map((e) => (
            <tr key={e.eventId} className="border-b border-slate-100 align-top dark:border-slate-800" data-testid="event-row">
              <td className="py-2 pr-3 whitespace-nowrap">{formatDate(e.timestamp)}</td>
              <td className="py-2 pr-3">{e.eventType}</td>
              <td className="py-2 pr-3 font-mono text-xs">{e.userId}</td>
              <td className="py-2 pr-3 font-mono text-xs">{e.productId}</td>
              <td className="py-2 font-mono text-xs break-all">{Object.keys(e.metadata).length ? JSON.stringify(e.metadata) : ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function LiveTail({ tenantId, eventType }: { tenantId: string; eventType: string }) {
  const [events, setEvents] = useState<Event[]>([]);
  const [paused, setPaused] = useState(false);
  const [state, setState] = useState<"connecting" | "live" | "paused" | "error">("connecting");
  const [skipped, setSkipped] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const lastId = useRef<string | null>(null);
  useEffect(() => {
    if (paused) {
      setState("paused");
      return;
    }
    const abort = new AbortController();
    let retry: ReturnType<typeof setTimeout> | undefined;
    const connect = async () => {
      setState("connecting");
      try {
        const query = eventType ? `?eventType=${encodeURIComponent(eventType)}` : "";
        const headers: Record<string, string> = { Accept: "text/event-stream" };
        // Resuming after a pause continues where the stream stopped: nothing is missed.
        if (lastId.current) headers["Last-Event-ID"] = lastId.current;
        const answer = await authorisedFetch(`/api/v1/tenants/${tenantId}/events/stream${query}`, { headers, signal: abort.signal });
        setState("live");
        setError(null);
        await readSse(answer, (message) => {
          if (message.id) lastId.current = message.id;
          if (message.event === "skipped") setSkipped((n) => n + Number(JSON.parse(message.data).skipped ?? 0));
          if (message.event !== "event") return;
          const event = JSON.parse(message.data) as Event;
          setEvents((list) => [event, ...list].slice(0, LIVE_MAX));
        });
        if (!abort.signal.aborted) retry = setTimeout(connect, 1000);
      } catch (e) {
        if (abort.signal.aborted) return;
        setError(e);
        setState("error");
        retry = setTimeout(connect, 5000);
      }
    };
    void connect();
    return () => {
      abort.abort();
      clearTimeout(retry);
    };
  }, [tenantId, eventType, paused]);
  return (
    <Card
      title="Live tail"
      actions={
        <div className="flex items-center gap-2">
          <span role="status" className="text-sm" data-testid="tail-state">
            {state === "live" ? "Live" : state === "paused" ? "Paused" : state === "error" ? "Reconnecting…" : "Connecting…"}
          </span>
          <Button tone="secondary" onClick={() => setPaused(!paused)}>
            {paused ? "Resume" : "Pause"}
          </Button>
        </div>
      }
    >
      <ProblemView error={error} />
      {skipped > 0 && <p className="mb-2 text-sm text-amber-800 dark:text-amber-300">{skipped} events arrived faster than the tail shows and were skipped; the table below has them all.</p>}
      {events.length === 0 ? <Empty>Waiting for new events…</Empty> : <EventTable events={events} caption="New events, newest first" />}
    </Card>
  );
}

export default function Events() {
  const { id } = useTenant();
  const empty: Filters = { eventType: "", userId: "", productId: "", from: "", to: "" };
  const [draft, setDraft] = useState<Filters>(empty);
  const [applied, setApplied] = useState<Filters>(empty);
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  const cursor = cursors[cursors.length - 1];
  const page = useQuery({
    queryKey: ["events", id, applied, cursor],
    placeholderData: keepPreviousData,
    queryFn: () =>
      call(() =>
        api.GET("/api/v1/tenants/{tenant_id}/events", {
          params: {
            path: { tenant_id: id },
            query: {
              eventType: (applied.eventType || null) as never,
              userId: applied.userId || null,
              productId: applied.productId || null,
              from: applied.from ? new Date(applied.from).toISOString() : null,
              to: applied.to ? new Date(applied.to).toISOString() : null,
              limit: 50,
              cursor,
            },
          },
        }),
      ),
  });
  const set = (field: keyof Filters) => (e: { target: { value: string } }) => setDraft({ ...draft, [field]: e.target.value });
  return (
    <>
      <TenantNav />
      <h1 className="mb-4 text-2xl font-bold">Events</h1>
      <LiveTail tenantId={id} eventType={applied.eventType} />
      <div className="mt-4">
        <Card title="Browse">
          <form
            className="mb-3 grid gap-3 sm:grid-cols-2 lg:grid-cols-6"
            onSubmit={(e: FormEvent) => {
              e.preventDefault();
              setApplied(draft);
              setCursors([null]);
            }}
          >
            <Select label="Type" value={draft.eventType} onChange={set("eventType")}>
              <option value="">all types</option>
              {TYPES.map((t) => (
                <option key={t}>{t}</option>
              ))}
            </Select>
            <Field label="User" value={draft.userId} onChange={set("userId")} />
            <Field label="Product" value={draft.productId} onChange={set("productId")} />
            <Field label="From" type="datetime-local" value={draft.from} onChange={set("from")} />
            <Field label="To" type="datetime-local" value={draft.to} onChange={set("to")} />
            <div className="flex items-end">
              <Button type="submit">Filter</Button>
            </div>
          </form>
          <ProblemView error={page.error} />
          {page.isPending ? (
            <Loading />
          ) : (page.data?.data ?? []).length === 0 ? (
            <Empty>No events match.</Empty>
          ) : (
            <EventTable events={page.data?.data ?? []} caption="Events, newest first" />
          )}
          <div className="mt-3 flex gap-2">
            <Button tone="secondary" disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
              Newer
            </Button>
            <Button tone="secondary" disabled={!page.data?.nextCursor} onClick={() => page.data?.nextCursor && setCursors([...cursors, page.data.nextCursor])}>
              Older
            </Button>
          </div>
        </Card>
      </div>
    </>
  );
}
