import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { ProblemError } from "../api/problem";
import { LineChart } from "./charts";
import { Confirm, Field, ProblemView } from "./ui";

describe("ProblemView", () => {
  it("shows the problem's title, detail and field errors as an alert", () => {
    render(<ProblemView error={new ProblemError(409, "Conflict", "Too many keys", [{ field: "name", message: "taken" }])} />);
    const alert = screen.getByRole("alert");
    expect(alert).toHaveTextContent("Conflict");
    expect(alert).toHaveTextContent("Too many keys");
    expect(alert).toHaveTextContent("name: taken");
  });

  it("shows nothing without an error", () => {
    const { container } = render(<ProblemView error={null} />);
    expect(container).toBeEmptyDOMElement();
  });
});

describe("Field", () => {
  it("labels its input and ties the error to it", () => {
    render(<Field label="Email" error="is not valid" />);
    const input = screen.getByLabelText("Email");
    expect(input).toHaveAttribute("aria-invalid", "true");
    expect(input).toHaveAccessibleDescription("is not valid");
  });
});

describe("Confirm", () => {
  it("keeps a typed confirmation disabled until the exact text is typed", async () => {
    const onConfirm = vi.fn();
    render(<Confirm open title="Delete Shop?" typed="Shop" onConfirm={onConfirm} onCancel={() => undefined} confirmLabel="Delete" />);
    const button = screen.getByRole("button", { name: "Delete", hidden: true });
    expect(button).toBeDisabled();
    await userEvent.type(screen.getByLabelText("Type “Shop” to confirm"), "Sho");
    expect(button).toBeDisabled();
    await userEvent.type(screen.getByLabelText("Type “Shop” to confirm"), "p");
    expect(button).toBeEnabled();
    await userEvent.click(button);
    expect(onConfirm).toHaveBeenCalledOnce();
  });
});

describe("LineChart", () => {
  it("draws one dot per known value and sums them in its label", () => {
    const { container } = render(
      <LineChart
        title="Clicks"
        series={[{ name: "Clicks", colour: "#000", points: [{ x: "2026-01-01", y: 2 }, { x: "2026-01-02", y: null }, { x: "2026-01-03", y: 5 }] }]}
      />,
    );
    expect(container.querySelectorAll("circle")).toHaveLength(2);
    expect(screen.getByRole("img")).toHaveAccessibleName(/sum 7/);
  });
});
