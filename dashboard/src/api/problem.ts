/** An RFC 9457 problem answered by the api, thrown by every failed call. */
export interface FieldProblem {
  field: string;
  message: string;
}

export class ProblemError extends Error {
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly errors: FieldProblem[];

  constructor(status: number, title: string, detail = "", errors: FieldProblem[] = []) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.errors = errors;
  }

  /** The message for one form field, if the api named it. */
  fieldMessage(field: string): string | undefined {
    return this.errors.find((e) => e.field === field || e.field.endsWith(`.${field}`))?.message;
  }
}

/** A problem from any answer body (problem+json or not) and status. */
export function problemFrom(status: number, body: unknown): ProblemError {
  if (body && typeof body === "object" && "title" in body) {
    const b = body as { title?: string; detail?: string; errors?: FieldProblem[] };
    return new ProblemError(status, b.title ?? "Error", b.detail ?? "", b.errors ?? []);
  }
  if (status === 0) return new ProblemError(0, "Network error", "The server cannot be reached.");
  return new ProblemError(status, `Request failed (${status})`, typeof body === "string" ? body : "");
}

export function asProblem(error: unknown): ProblemError {
  if (error instanceof ProblemError) return error;
  return new ProblemError(0, "Something went wrong", error instanceof Error ? error.message : "");
}
