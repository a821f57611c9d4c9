import { Suspense } from "react";
import { Link, NavLink, Navigate, Outlet, useLocation, useNavigate } from "react-router";
import { useAuth } from "../auth";
import { useTheme } from "../theme";
import { Loading } from "./ui";

const navClass = ({ isActive }: { isActive: boolean }) =>
  `whitespace-nowrap rounded-md px-3 py-2 text-sm font-medium ${
    isActive ? "bg-blue-700 text-white" : "text-slate-700 hover:bg-slate-200 dark:text-slate-200 dark:hover:bg-slate-800"
  }`;

export function ThemeToggle() {
  const [theme, toggle] = useTheme();
  return (
    <button
      type="button"
      onClick={toggle}
      aria-pressed={theme === "dark"}
      className="rounded-md border border-slate-300 px-3 py-2 text-sm dark:border-slate-600"
    >
      {theme === "dark" ? "Light mode" : "Dark mode"}
    </button>
  );
}

/** The signed-in shell: header, navigation and the page. */
export function AppLayout() {
  const { status, me, logout } = useAuth();
  const location = useLocation();
  const navigate = useNavigate();
  if (status === "loading") return <Loading label="Signing in…" />;
  if (status === "anonymous") {
    const next = encodeURIComponent(location.pathname + location.search);
    return <Navigate to={`/login?next=${next}`} replace />;
  }
  return (
    <div className="min-h-screen">
      <a href="#main" className="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-10 focus:rounded focus:bg-white focus:p-2 focus:text-slate-900">
        Skip to content
      </a>
      <header className="border-b border-slate-200 bg-white dark:border-slate-800 dark:bg-slate-900">
        <div className="mx-auto flex max-w-7xl flex-wrap items-center gap-3 px-4 py-3">
          <Link to="/dashboard" className="text-lg font-bold text-blue-700 dark:text-blue-300">
            RecomEngine
          </Link>
          <nav aria-label="Main" className="order-3 -mx-1 flex w-full gap-1 overflow-x-auto px-1 sm:order-none sm:w-auto">
            <NavLink to="/dashboard" end className={navClass}>
              Overview
            </NavLink>
            <NavLink to="/dashboard/tenants" className={navClass}>
              Tenants
            </NavLink>
            <NavLink to="/dashboard/settings" className={navClass}>
              Settings
            </NavLink>
            {me?.isOperator && (
              <NavLink to="/ops" className={navClass}>
                Operations
              </NavLink>
            )}
          </nav>
          <div className="ml-auto flex items-center gap-2">
            <span className="hidden text-sm text-slate-600 md:inline dark:text-slate-300">{me?.email}</span>
            <ThemeToggle />
            <button
              type="button"
              className="rounded-md border border-slate-300 px-3 py-2 text-sm dark:border-slate-600"
              onClick={async () => {
                await logout();
                navigate("/login");
              }}
            >
              Sign out
            </button>
          </div>
        </div>
      </header>
      <main id="main" className="mx-auto max-w-7xl px-4 py-6">
        <Suspense fallback={<Loading />}>
          <Outlet />
        </Suspense>
      </main>
    </div>
  );
}

/** The public shell of the sign-in pages. */
export function PublicLayout() {
  return (
    <div className="min-h-screen">
      <header className="mx-auto flex max-w-md items-center justify-between px-4 py-4">
        <span className="text-lg font-bold text-blue-700 dark:text-blue-300">RecomEngine</span>
        <ThemeToggle />
      </header>
      <main id="main" className="mx-auto max-w-md px-4 pb-10">
        <Suspense fallback={<Loading />}>
          <Outlet />
        </Suspense>
      </main>
    </div>
  );
}
