import { Link, NavLink } from "react-router";
import { useTenant } from "../hooks";
import { Badge } from "./ui";
import { UsageBanner } from "./Usage";

const tabs = [
  ["", "Overview"],
  ["/analytics", "Analytics"],
  ["/catalog", "Catalog"],
  ["/events", "Events"],
  ["/experiments", "Experiments"],
  ["/widgets", "Widgets"],
  ["/api-keys", "API keys"],
] as const;

/** The tenant's name, status and section tabs, above each tenant page. */
export function TenantNav() {
  const { id, tenant, readOnly } = useTenant();
  return (
    <div className="mb-5 space-y-3">
      <nav aria-label="Breadcrumb" className="text-sm">
        <Link to="/dashboard/tenants" className="text-blue-700 underline dark:text-blue-300">
          Tenants
        </Link>{" "}
        / <span>{tenant?.name ?? "…"}</span>
      </nav>
      <div className="flex flex-wrap items-center gap-2">
        <p className="text-xl font-bold">{tenant?.name ?? "Tenant"}</p>
        {tenant && <Badge tone={tenant.status === "active" ? "green" : "amber"}>{tenant.status}</Badge>}
        {tenant && <Badge tone="blue">{tenant.plan} plan</Badge>}
      </div>
      {id && <UsageBanner id={id} />}
      {readOnly && (
        <p role="status" className="rounded-md border border-amber-300 bg-amber-50 p-2 text-sm text-amber-900 dark:border-amber-700 dark:bg-amber-950 dark:text-amber-100">
          This tenant is suspended: its pages are read-only until you reactivate it.
        </p>
      )}
      <nav aria-label="Tenant sections" className="-mx-1 flex gap-1 overflow-x-auto border-b border-slate-200 px-1 pb-2 dark:border-slate-700">
        {tabs.map(([suffix, label]) => (
          <NavLink
            key={label}
            to={`/dashboard/tenants/${id}${suffix}`}
            end={suffix === ""}
            className={({ isActive }) =>
              `whitespace-nowrap rounded-md px-3 py-1.5 text-sm ${isActive ? "bg-slate-800 text-white dark:bg-slate-200 dark:text-slate-900" : "hover:bg-slate-200 dark:hover:bg-slate-800"}`
            }
          >
            {label}
          </NavLink>
        ))}
      </nav>
    </div>
  );
}
