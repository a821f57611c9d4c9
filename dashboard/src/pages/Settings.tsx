import { useMutation } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router";
import { api, call } from "../api/client";
import { asProblem } from "../api/problem";
import { endSession, startSession } from "../api/session";
import { useAuth } from "../auth";
import { Button, Card, Confirm, Field, PageTitle, ProblemView } from "../components/ui";

export default function Settings() {
  const { me } = useAuth();
  const navigate = useNavigate();
  const [name, setName] = useState(me?.name ?? "");
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [confirmAll, setConfirmAll] = useState(false);
  const rename = useMutation({ mutationFn: () => call(() => api.PATCH("/api/v1/auth/me", { body: { name } })) });
  const change = useMutation({
    mutationFn: () => call(() => api.POST("/api/v1/auth/change-password", { body: { currentPassword: current, newPassword: next } })),
    // The answer is a fresh session for this browser; every other one has ended.
    onSuccess: (session) => {
      startSession(session.accessToken, session.expiresIn);
      setCurrent("");
      setNext("");
    },
  });
  const everywhere = useMutation({
    mutationFn: () => call(() => api.POST("/api/v1/auth/logout-all")),
    onSuccess: () => {
      endSession();
      navigate("/login", { replace: true });
    },
  });
  const changeProblem = change.error ? asProblem(change.error) : null;
  const renameProblem = rename.error ? asProblem(rename.error) : null;
  return (
    <>
      <PageTitle>Account settings</PageTitle>
      <div className="grid grid-cols-1 gap-4 lg:grid-cols-2">
        <Card title="Profile">
          <form
            className="space-y-3"
            onSubmit={(e: FormEvent) => {
              e.preventDefault();
              rename.mutate();
            }}
          >
            <ProblemView error={renameProblem && renameProblem.errors.length === 0 ? renameProblem : null} />
            <Field label="Name" value={name} onChange={(e) => setName(e.target.value)} required error={renameProblem?.fieldMessage("name")} />
            <Field label="Email" value={me?.email ?? ""} readOnly hint="Your sign-in address" />
            <div className="flex items-center gap-3">
              <Button type="submit" disabled={rename.isPending}>
                Save profile
              </Button>
              {rename.isSuccess && <span role="status" className="text-sm text-green-800 dark:text-green-300">Saved</span>}
            </div>
          </form>
        </Card>
        <Card title="Change password">
          <form
            className="space-y-3"
            onSubmit={(e: FormEvent) => {
              e.preventDefault();
              change.mutate();
            }}
          >
            <ProblemView error={changeProblem && changeProblem.errors.length === 0 ? changeProblem : null} />
            <Field label="Current password" type="password" autoComplete="current-password" value={current} onChange={(e) => setCurrent(e.target.value)} required error={changeProblem?.fieldMessage("currentPassword")} />
            <Field label="New password" type="password" autoComplete="new-password" value={next} onChange={(e) => setNext(e.target.value)} required error={changeProblem?.fieldMessage("newPassword")} hint="8 characters or more; your other sessions sign out" />
            <div className="flex items-center gap-3">
              <Button type="submit" disabled={change.isPending}>
                Change password
              </Button>
              {change.isSuccess && (
                <span role="status" className="text-sm text-green-800 dark:text-green-300">
                  Password changed; every other session is signed out
                </span>
              )}
            </div>
          </form>
        </Card>
        <Card title="Sessions">
          <ProblemView error={everywhere.error} />
          <p className="mb-3 text-sm">Sign out of every browser where this account is signed in.</p>
          <Button tone="danger" onClick={() => setConfirmAll(true)}>
            Sign out everywhere
          </Button>
        </Card>
        <Card title="Billing and team">
          <ul className="list-disc space-y-1 pl-5 text-sm">
            <li>
              <Link className="text-blue-700 underline dark:text-blue-300" to="/dashboard/settings/billing">
                Billing
              </Link>
              : coming soon
            </li>
            <li>
              <Link className="text-blue-700 underline dark:text-blue-300" to="/dashboard/settings/team">
                Team
              </Link>
              : coming soon
            </li>
          </ul>
        </Card>
      </div>
      <Confirm
        open={confirmAll}
        title="Sign out everywhere?"
        confirmLabel="Sign out everywhere"
        onCancel={() => setConfirmAll(false)}
        onConfirm={() => {
          setConfirmAll(false);
          everywhere.mutate();
        }}
      >
        <p className="text-sm">Every session of this account ends, this one included.</p>
      </Confirm>
    </>
  );
}
