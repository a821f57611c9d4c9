import { useState, type FormEvent, type ReactNode } from "react";
import { Link, Navigate, useNavigate, useSearchParams } from "react-router";
import { api, call } from "../api/client";
import { asProblem, type ProblemError } from "../api/problem";
import { useAuth } from "../auth";
import { Button, Field, ProblemView } from "../components/ui";

function safeNext(next: string | null): string {
  // Only paths of this app: never an open redirect to another origin.
  return next && next.startsWith("/") && !next.startsWith("//") ? next : "/dashboard";
}

function Panel({ title, children, footer }: { title: string; children: ReactNode; footer?: ReactNode }) {
  return (
    <div className="rounded-lg border border-slate-200 bg-white p-6 shadow-sm dark:border-slate-700 dark:bg-slate-900">
      <h1 className="mb-4 text-2xl font-bold">{title}</h1>
      {children}
      {footer && <div className="mt-4 space-y-1 text-sm">{footer}</div>}
    </div>
  );
}

const linkClass = "text-blue-700 underline dark:text-blue-300";

function useSubmit(action: () => Promise<void>) {
  const [error, setError] = useState<ProblemError | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (e) {
      setError(asProblem(e));
    } finally {
      setBusy(false);
    }
  };
  return { error, busy, submit };
}

export function Login() {
  const { login, status } = useAuth();
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const next = safeNext(params.get("next"));
  const { error, busy, submit } = useSubmit(async () => {
    await login(email, password);
    navigate(next, { replace: true });
  });
  if (status === "signed-in" && !busy) return <Navigate to={next} replace />;
  return (
    <Panel
      title="Sign in"
      footer={
        <>
          <p>
            <Link className={linkClass} to="/forgot-password">
              Forgot your password?
            </Link>
          </p>
          <p>
            No account yet?{" "}
            <Link className={linkClass} to="/signup">
              Sign up
            </Link>
          </p>
        </>
      }
    >
      <form onSubmit={submit} className="space-y-4" noValidate>
        {params.get("reset") === "done" && (
          <p role="status" className="rounded bg-green-50 p-2 text-sm text-green-900 dark:bg-green-950 dark:text-green-100">
            Your password was changed. Sign in with the new one.
          </p>
        )}
        <ProblemView error={error && error.errors.length === 0 ? error : null} />
        <Field label="Email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} error={error?.fieldMessage("email")} />
        <Field label="Password" type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} error={error?.fieldMessage("password")} />
        <Button type="submit" disabled={busy} className="w-full">
          {busy ? "Signing in…" : "Sign in"}
        </Button>
      </form>
    </Panel>
  );
}

export function Signup() {
  const { signup } = useAuth();
  const navigate = useNavigate();
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const { error, busy, submit } = useSubmit(async () => {
    await signup(name, email, password);
    navigate("/dashboard/tenants", { replace: true });
  });
  return (
    <Panel
      title="Create your account"
      footer={
        <p>
          Already have an account?{" "}
          <Link className={linkClass} to="/login">
            Sign in
          </Link>
        </p>
      }
    >
      <form onSubmit={submit} className="space-y-4" noValidate>
        <ProblemView error={error && error.errors.length === 0 ? error : null} />
        <Field label="Name" autoComplete="name" required value={name} onChange={(e) => setName(e.target.value)} error={error?.fieldMessage("name")} />
        <Field label="Email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} error={error?.fieldMessage("email")} />
        <Field
          label="Password"
          type="password"
          autoComplete="new-password"
          required
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          error={error?.fieldMessage("password")}
          hint="8 characters or more"
        />
        <Button type="submit" disabled={busy} className="w-full">
          {busy ? "Creating…" : "Sign up"}
        </Button>
      </form>
    </Panel>
  );
}

export function ForgotPassword() {
  const [email, setEmail] = useState("");
  const [sent, setSent] = useState(false);
  const { error, busy, submit } = useSubmit(async () => {
    await call(() => api.POST("/api/v1/auth/forgot-password", { body: { email } }));
    setSent(true);
  });
  return (
    <Panel
      title="Reset your password"
      footer={
        <p>
          <Link className={linkClass} to="/login">
            Back to sign in
          </Link>
        </p>
      }
    >
      {sent ? (
        <p role="status">If an account exists for {email}, we mailed it a link to set a new password. The link works once and expires.</p>
      ) : (
        <form onSubmit={submit} className="space-y-4" noValidate>
          <ProblemView error={error && error.errors.length === 0 ? error : null} />
          <Field label="Email" type="email" autoComplete="email" required value={email} onChange={(e) => setEmail(e.target.value)} error={error?.fieldMessage("email")} />
          <Button type="submit" disabled={busy} className="w-full">
            Send reset link
          </Button>
        </form>
      )}
    </Panel>
  );
}

export function ResetPassword() {
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const token = params.get("token") ?? "";
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [mismatch, setMismatch] = useState(false);
  const { error, busy, submit } = useSubmit(async () => {
    if (password !== confirm) {
      setMismatch(true);
      return;
    }
    setMismatch(false);
    await call(() => api.POST("/api/v1/auth/reset-password", { body: { token, password } }));
    navigate("/login?reset=done", { replace: true });
  });
  if (!token) {
    return (
      <Panel title="Set a new password">
        <p role="alert">This page needs the link from the reset mail. <Link className={linkClass} to="/forgot-password">Ask for a new link</Link>.</p>
      </Panel>
    );
  }
  const tokenProblem = error?.fieldMessage("token");
  return (
    <Panel title="Set a new password">
      <form onSubmit={submit} className="space-y-4" noValidate>
        <ProblemView error={error && (error.errors.length === 0 || tokenProblem) ? error : null} />
        <Field label="New password" type="password" autoComplete="new-password" required value={password} onChange={(e) => setPassword(e.target.value)} error={error?.fieldMessage("password")} hint="8 characters or more" />
        <Field label="Repeat the new password" type="password" autoComplete="new-password" required value={confirm} onChange={(e) => setConfirm(e.target.value)} error={mismatch ? "The two passwords differ" : undefined} />
        <Button type="submit" disabled={busy} className="w-full">
          Set password
        </Button>
      </form>
    </Panel>
  );
}
