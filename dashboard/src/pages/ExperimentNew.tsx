import { useMutation } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { useNavigate } from "react-router";
import { api, call, type Schemas } from "../api/client";
import { asProblem } from "../api/problem";
import { TenantNav } from "../components/TenantNav";
import { Button, Card, Field, ProblemView, Select } from "../components/ui";
import { METRICS, STRATEGIES, validateExperiment, type ExperimentDraft } from "../experiments";
import { useTenant } from "../hooks";

const FIELDS = ["name", "placementId", "controlStrategy", "variantStrategy", "trafficSplit", "metric"];

export default function ExperimentNew() {
  const { id, readOnly } = useTenant();
  const navigate = useNavigate();
  const [draft, setDraft] = useState<ExperimentDraft>({
    name: "",
    placementId: "home",
    controlStrategy: "collaborative",
    variantStrategy: "trending",
    trafficSplit: "50",
    metric: "ctr",
  });
  const [errors, setErrors] = useState<Record<string, string>>({});
  const create = useMutation({
    mutationFn: () =>
      call(() =>
        api.POST("/api/v1/tenants/{tenant_id}/experiments", {
          params: { path: { tenant_id: id } },
          body: { ...draft, trafficSplit: Number(draft.trafficSplit) } as Schemas["ExperimentWrite"],
        }),
      ),
    onSuccess: (experiment) => navigate(`/dashboard/tenants/${id}/experiments/${experiment.id}`),
  });
  const problem = create.error ? asProblem(create.error) : null;
  // The server's field problems land on the fields; the rest shows above the form.
  const fieldError = (field: keyof ExperimentDraft) => errors[field] ?? problem?.fieldMessage(field);
  const set = (field: keyof ExperimentDraft) => (e: { target: { value: string } }) => setDraft({ ...draft, [field]: e.target.value });
  return (
    <>
      <TenantNav />
      <h1 className="mb-4 text-2xl font-bold">New experiment</h1>
      <Card>
        <form
          noValidate
          className="grid max-w-2xl gap-4 sm:grid-cols-2"
          onSubmit={(e: FormEvent) => {
            e.preventDefault();
            const found = validateExperiment(draft);
            setErrors(found);
            if (Object.keys(found).length === 0) create.mutate();
          }}
        >
          <div className="sm:col-span-2">
            <ProblemView error={problem && problem.errors.some((e) => !FIELDS.some((f) => e.field === f || e.field.endsWith(`.${f}`))) ? problem : problem?.errors.length === 0 ? problem : null} />
          </div>
          <Field label="Name" value={draft.name} onChange={set("name")} error={fieldError("name")} required />
          <Field label="Placement" value={draft.placementId} onChange={set("placementId")} error={fieldError("placementId")} required />
          <Select label="Control strategy" value={draft.controlStrategy} onChange={set("controlStrategy")} error={fieldError("controlStrategy")}>
            {STRATEGIES.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </Select>
          <Select label="Variant strategy" value={draft.variantStrategy} onChange={set("variantStrategy")} error={fieldError("variantStrategy")}>
            {STRATEGIES.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </Select>
          <Field label="Traffic to variant (%)" type="number" min={0} max={100} value={draft.trafficSplit} onChange={set("trafficSplit")} error={fieldError("trafficSplit")} />
          <Select label="Primary metric" value={draft.metric} onChange={set("metric")} error={fieldError("metric")}>
            {METRICS.map((m) => (
              <option key={m}>{m}</option>
            ))}
          </Select>
          <div className="sm:col-span-2">
            <Button type="submit" disabled={create.isPending || readOnly}>
              Create draft
            </Button>
          </div>
        </form>
      </Card>
    </>
  );
}
