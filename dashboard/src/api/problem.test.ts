import { describe, expect, it } from "vitest";
import { ProblemError, asProblem, problemFrom } from "./problem";

describe("problems", () => {
  it("reads title, detail and field errors from a problem+json body", () => {
    const problem = problemFrom(422, { title: "Validation failed", detail: "Bad name", errors: [{ field: "body.name", message: "too long" }] });
    expect(problem.status).toBe(422);
    expect(problem.title).toBe("Validation failed");
    expect(problem.detail).toBe("Bad name");
    expect(problem.fieldMessage("name")).toBe("too long");
    expect(problem.fieldMessage("email")).toBeUndefined();
  });

  it("names a network failure when there is no answer", () => {
    expect(problemFrom(0, null).title).toBe("Network error");
  });

  it("keeps a plain error's message when wrapping it", () => {
    const problem = asProblem(new Error("boom"));
    expect(problem).toBeInstanceOf(ProblemError);
    expect(problem.detail).toBe("boom");
  });
});
