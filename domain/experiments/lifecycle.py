"""Experiment lifecycle: which status changes are allowed, and what each status permits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

from domain.errors import Conflict, ValidationFailed


class ExperimentStatus(StrEnum):
    """Where an experiment is in its life."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"


ALLOWED_TRANSITIONS: Mapping[ExperimentStatus, frozenset[ExperimentStatus]] = MappingProxyType(
    {
        ExperimentStatus.DRAFT: frozenset({ExperimentStatus.RUNNING}),
        ExperimentStatus.RUNNING: frozenset({ExperimentStatus.PAUSED, ExperimentStatus.COMPLETED}),
        ExperimentStatus.PAUSED: frozenset({ExperimentStatus.RUNNING, ExperimentStatus.COMPLETED}),
        # Completed is terminal: its results are frozen, so it can never receive traffic again.
        ExperimentStatus.COMPLETED: frozenset(),
    }
)


class UnknownStatus(ValidationFailed):
    """A status string that is not one of draft, running, paused, completed."""


class InvalidTransition(Conflict):
    """The requested status change is not allowed from the current status (HTTP 409)."""

    def __init__(self, *, current: ExperimentStatus, target: ExperimentStatus) -> None:
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current])) or "none"
        super().__init__(
            f"cannot change an experiment from {current} to {target} (allowed: {allowed})"
        )
        self.current = current
        self.target = target


class ExperimentNotEditable(Conflict):
    """Only draft experiments may be edited (HTTP 409)."""

    def __init__(self, *, status: ExperimentStatus) -> None:
        super().__init__(f"only draft experiments can be edited; this one is {status}")
        self.status = status


class PlacementBusy(Conflict):
    """Another experiment is already running on the placement (HTTP 409)."""

    def __init__(self, *, running_experiment_id: str) -> None:
        super().__init__(f"experiment {running_experiment_id} is already running on this placement")
        self.running_experiment_id = running_experiment_id


def parse_status(*, value: str) -> ExperimentStatus:
    """Return the status named by value, or raise UnknownStatus."""
    try:
        return ExperimentStatus(value)
    except ValueError:
        raise UnknownStatus(f"unknown experiment status {value!r}") from None


def can_transition(*, current: str, target: str) -> bool:
    """Return whether an experiment may move from current to target."""
    return parse_status(value=target) in ALLOWED_TRANSITIONS[parse_status(value=current)]


def validate_transition(*, current: str, target: str) -> ExperimentStatus:
    """Return the target status if current -> target is allowed, else raise InvalidTransition."""
    current_status = parse_status(value=current)
    target_status = parse_status(value=target)
    # A no-op (running -> running) is refused too: API.md answers 409 for anything not listed.
    if target_status not in ALLOWED_TRANSITIONS[current_status]:
        raise InvalidTransition(current=current_status, target=target_status)
    return target_status


def is_editable(*, status: str) -> bool:
    """Return whether an experiment in this status may be edited (only drafts)."""
    return parse_status(value=status) is ExperimentStatus.DRAFT


def ensure_editable(*, status: str) -> None:
    """Raise ExperimentNotEditable unless the experiment is a draft."""
    if not is_editable(status=status):
        raise ExperimentNotEditable(status=parse_status(value=status))


def affects_traffic(*, status: str) -> bool:
    """Return whether recommendations should assign users to this experiment (running only)."""
    return parse_status(value=status) is ExperimentStatus.RUNNING


def ensure_placement_free(*, experiment_id: str, running_experiment_ids: Iterable[str]) -> None:
    """Raise PlacementBusy if an experiment other than experiment_id runs on the placement.

    The database enforces the same rule (a partial unique index); this check gives the
    clear error before the write, the index closes the race between two admins.
    """
    for running_id in running_experiment_ids:
        if running_id != experiment_id:
            raise PlacementBusy(running_experiment_id=running_id)
