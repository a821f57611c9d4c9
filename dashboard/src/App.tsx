import { lazy } from "react";
import { Navigate, Route, Routes } from "react-router";
import { AppLayout, PublicLayout } from "./components/Layout";

// Every page is its own chunk: the first route loads only what it shows.
const auth = () => import("./pages/AuthPages");
const Login = lazy(() => auth().then((m) => ({ default: m.Login })));
const Signup = lazy(() => auth().then((m) => ({ default: m.Signup })));
const ForgotPassword = lazy(() => auth().then((m) => ({ default: m.ForgotPassword })));
const ResetPassword = lazy(() => auth().then((m) => ({ default: m.ResetPassword })));
const Overview = lazy(() => import("./pages/Overview"));
const Tenants = lazy(() => import("./pages/Tenants"));
const TenantDetail = lazy(() => import("./pages/TenantDetail"));
const Analytics = lazy(() => import("./pages/Analytics"));
const Catalog = lazy(() => import("./pages/Catalog"));
const Events = lazy(() => import("./pages/Events"));
const Experiments = lazy(() => import("./pages/Experiments"));
const ExperimentNew = lazy(() => import("./pages/ExperimentNew"));
const ExperimentDetail = lazy(() => import("./pages/ExperimentDetail"));
const Widgets = lazy(() => import("./pages/Widgets"));
const ApiKeys = lazy(() => import("./pages/ApiKeys"));
const Settings = lazy(() => import("./pages/Settings"));
const ComingSoon = lazy(() => import("./pages/ComingSoon"));
const Ops = lazy(() => import("./pages/Ops"));
const NotFound = lazy(() => import("./pages/NotFound"));

export function App() {
  return (
    <Routes>
      <Route element={<PublicLayout />}>
        <Route path="/login" element={<Login />} />
        <Route path="/signup" element={<Signup />} />
        <Route path="/forgot-password" element={<ForgotPassword />} />
        <Route path="/reset-password" element={<ResetPassword />} />
      </Route>
      <Route element={<AppLayout />}>
        <Route path="/dashboard" element={<Overview />} />
        <Route path="/dashboard/tenants" element={<Tenants />} />
        <Route path="/dashboard/tenants/:id" element={<TenantDetail />} />
        <Route path="/dashboard/tenants/:id/analytics" element={<Analytics />} />
        <Route path="/dashboard/tenants/:id/catalog" element={<Catalog />} />
        <Route path="/dashboard/tenants/:id/events" element={<Events />} />
        <Route path="/dashboard/tenants/:id/experiments" element={<Experiments />} />
        <Route path="/dashboard/tenants/:id/experiments/new" element={<ExperimentNew />} />
        <Route path="/dashboard/tenants/:id/experiments/:expId" element={<ExperimentDetail />} />
        <Route path="/dashboard/tenants/:id/widgets" element={<Widgets />} />
        <Route path="/dashboard/tenants/:id/api-keys" element={<ApiKeys />} />
        <Route path="/dashboard/settings" element={<Settings />} />
        <Route path="/dashboard/settings/billing" element={<ComingSoon title="Billing" />} />
        <Route path="/dashboard/settings/team" element={<ComingSoon title="Team" />} />
        <Route path="/ops" element={<Ops />} />
        <Route path="*" element={<NotFound />} />
      </Route>
      <Route path="/" element={<Navigate to="/dashboard" replace />} />
    </Routes>
  );
}
