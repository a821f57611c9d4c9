import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { api, call, type Schemas } from "./api/client";
import { endSession, onSessionEnd, refreshSession, startSession } from "./api/session";

/** The signed-in admin (`isOperator`: may use the operators' console). */
export type Me = Schemas["AdminRead"];

type Status = "loading" | "anonymous" | "signed-in";

interface AuthValue {
  status: Status;
  me: Me | null;
  login(email: string, password: string): Promise<void>;
  signup(name: string, email: string, password: string): Promise<void>;
  logout(): Promise<void>;
}

const AuthContext = createContext<AuthValue | null>(null);

async function loadMe(): Promise<Me> {
  return call(() => api.GET("/api/v1/auth/me")) as Promise<Me>;
}

export function AuthProvider({ children }: { children: ReactNode }) {
  const [status, setStatus] = useState<Status>("loading");
  const [me, setMe] = useState<Me | null>(null);

  useEffect(() => {
    let live = true;
    // A page load restores the session from the refresh cookie, if there is one.
    void (async () => {
      try {
        if (await refreshSession()) {
          const who = await loadMe();
          if (live) {
            setMe(who);
            setStatus("signed-in");
          }
          return;
        }
      } catch {
        /* fall through to anonymous */
      }
      if (live) setStatus("anonymous");
    })();
    const stop = onSessionEnd(() => {
      setMe(null);
      setStatus("anonymous");
    });
    return () => {
      live = false;
      stop();
    };
  }, []);

  const adopt = useCallback(async (session: Schemas["SessionRead"]) => {
    startSession(session.accessToken, session.expiresIn);
    setMe(await loadMe());
    setStatus("signed-in");
  }, []);

  const value = useMemo<AuthValue>(
    () => ({
      status,
      me,
      async login(email, password) {
        await adopt(await call(() => api.POST("/api/v1/auth/login", { body: { email, password } })));
      },
      async signup(name, email, password) {
        await adopt(
          await call(() => api.POST("/api/v1/auth/signup", { body: { name, email, password } })),
        );
      },
      async logout() {
        try {
          await call(() => api.POST("/api/v1/auth/logout"));
        } finally {
          endSession();
          setMe(null);
          setStatus("anonymous");
        }
      },
    }),
    [status, me, adopt],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthValue {
  const value = useContext(AuthContext);
  if (!value) throw new Error("useAuth outside AuthProvider");
  return value;
}
