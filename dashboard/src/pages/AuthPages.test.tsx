import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { MemoryRouter, Route, Routes } from "react-router";
import { AuthProvider } from "../auth";
import { Login, ResetPassword } from "./AuthPages";

function answer(status: number, body: unknown) {
  return new Response(body === null ? null : JSON.stringify(body), {
    status,
    headers: { "Content-Type": status >= 400 ? "application/problem+json" : "application/json" },
  });
}

function renderAt(path: string, element: React.ReactNode) {
  return render(
    <QueryClientProvider client={new QueryClient()}>
      <MemoryRouter initialEntries={[path]}>
        <AuthProvider>
          <Routes>
            <Route path="*" element={element} />
          </Routes>
        </AuthProvider>
      </MemoryRouter>
    </QueryClientProvider>,
  );
}

afterEach(() => vi.unstubAllGlobals());

describe("Login", () => {
  it("shows the api's problem when the credentials are refused", async () => {
    const fetch = vi.fn(async (input: RequestInfo | URL) => {
      const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
      if (url.endsWith("/auth/refresh")) return answer(401, { title: "Unauthorized", status: 401 });
      return answer(401, { title: "Unauthorized", status: 401, detail: "Wrong email or password." });
    });
    vi.stubGlobal("fetch", fetch);
    renderAt("/login", <Login />);
    await userEvent.type(await screen.findByLabelText("Email"), "a@example.com");
    await userEvent.type(screen.getByLabelText("Password"), "nope-nope");
    await userEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Wrong email or password.");
  });
});

describe("ResetPassword", () => {
  it("refuses two different passwords before calling the api", async () => {
    const fetch = vi.fn(async () => answer(401, { title: "Unauthorized", status: 401 }));
    vi.stubGlobal("fetch", fetch);
    renderAt("/reset-password?token=abc", <ResetPassword />);
    await userEvent.type(await screen.findByLabelText("New password"), "first-password-1");
    await userEvent.type(screen.getByLabelText("Repeat the new password"), "other-password-2");
    await userEvent.click(screen.getByRole("button", { name: "Set password" }));
    expect(await screen.findByText("The two passwords differ")).toBeInTheDocument();
    const calls = fetch.mock.calls.map((c) => String((c as unknown[])[0]));
    expect(calls.some((u) => u.includes("reset-password"))).toBe(false);
  });

  it("asks for a new link when the page has no token", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => answer(401, { title: "Unauthorized", status: 401 })));
    renderAt("/reset-password", <ResetPassword />);
    expect(await screen.findByRole("alert")).toHaveTextContent("needs the link from the reset mail");
  });
});
