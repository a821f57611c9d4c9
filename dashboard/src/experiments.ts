/** Client-side checks that mirror the api's validation of an experiment, and plain words. */
export const STRATEGIES = ["collaborative", "content_based", "trending", "frequently_bought_together"] as const;
export const METRICS = ["ctr", "conversion_rate", "revenue_per_visitor"] as const;
const PLACEMENT = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface ExperimentDraft {
  name: string;
  placementId: string;
  controlStrategy: string;
  variantStrategy: string;
  trafficSplit: string;
  metric: string;
}

/** Field -> message for each rule the api would refuse, so the form says it before sending. */
export function validateExperiment(draft: ExperimentDraft): Record<string, string> {
  const errors: Record<string, string> = {};
  if (!draft.name.trim()) errors.name = "Give the experiment a name";
  else if (draft.name.length > 200) errors.name = "At most 200 characters";
  if (!PLACEMENT.test(draft.placementId)) errors.placementId = "1–128 letters, digits, “_”, “.” or “-”, starting with a letter or digit";
  if (draft.controlStrategy === draft.variantStrategy) errors.variantStrategy = "Must differ from the control strategy";
  const split = Number(draft.trafficSplit);
  if (draft.trafficSplit.trim() === "" || !Number.isInteger(split) || split < 0 || split > 100) errors.trafficSplit = "A whole number from 0 to 100";
  return errors;
}

/** What a status change does, for the confirmation dialog. */
export const TRANSITIONS: Record<string, { to: string; label: string; explain: string }[]> = {
  draft: [{ to: "running", label: "Start", explain: "Users on this placement are split between the two strategies from now on." }],
  running: [
    { to: "paused", label: "Pause", explain: "Everyone gets the control strategy until you resume; counted figures are kept." },
    { to: "completed", label: "Complete", explain: "The experiment ends for good and its results are frozen." },
  ],
  paused: [
    { to: "running", label: "Resume", explain: "The split starts again with the same assignment of users." },
    { to: "completed", label: "Complete", explain: "The experiment ends for good and its results are frozen." },
  ],
  completed: [],
};
