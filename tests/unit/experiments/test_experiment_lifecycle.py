"""Experiment lifecycle: draft -> running -> paused <-> running, running/paused -> completed."""

from __future__ import annotations

import itertools

import pytest

from domain.errors import Conflict, ValidationFailed
from domain.experiments.lifecycle import (
    ExperimentNotEditable,
    ExperimentStatus,
    InvalidTransition,
    PlacementBusy,
    affects_traffic,
    can_transition,
    ensure_editable,
    ensure_placement_free,
    is_editable,
    validate_transition,
)

ALLOWED = {
    ("draft", "running"),
    ("running", "paused"),
    ("paused", "running"),
    ("running", "completed"),
    ("paused", "completed"),
}
ALL_PAIRS = set(itertools.product([s.value for s in ExperimentStatus], repeat=2))
REFUSED = sorted(ALL_PAIRS - ALLOWED)


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transition_returns_the_new_status(current: str, target: str) -> None:
    assert validate_transition(current=current, target=target) == ExperimentStatus(target)
    assert can_transition(current=current, target=target)


@pytest.mark.parametrize(("current", "target"), REFUSED)
def test_any_other_transition_is_refused_as_a_conflict(current: str, target: str) -> None:
    assert not can_transition(current=current, target=target)
    with pytest.raises(InvalidTransition) as caught:
        validate_transition(current=current, target=target)
    assert isinstance(caught.value, Conflict)
    assert (caught.value.current, caught.value.target) == (current, target)


def test_completed_is_terminal() -> None:
    assert not any(can_transition(current="completed", target=s) for s in ExperimentStatus)


def test_unknown_status_is_a_validation_error_not_a_conflict() -> None:
    with pytest.raises(ValidationFailed):
        validate_transition(current="draft", target="archived")


def test_only_drafts_are_editable() -> None:
    assert is_editable(status="draft")
    ensure_editable(status="draft")
    for status in ("running", "paused", "completed"):
        assert not is_editable(status=status)
        with pytest.raises(ExperimentNotEditable):
            ensure_editable(status=status)


def test_only_running_experiments_affect_traffic() -> None:
    assert [s.value for s in ExperimentStatus if affects_traffic(status=s)] == ["running"]


def test_a_second_running_experiment_on_a_placement_is_a_conflict() -> None:
    with pytest.raises(PlacementBusy) as caught:
        ensure_placement_free(experiment_id="exp-2", running_experiment_ids=["exp-1"])
    assert isinstance(caught.value, Conflict)
    assert caught.value.running_experiment_id == "exp-1"


def test_resuming_the_experiment_that_holds_the_placement_is_not_a_conflict() -> None:
    ensure_placement_free(experiment_id="exp-1", running_experiment_ids=["exp-1"])
    ensure_placement_free(experiment_id="exp-1", running_experiment_ids=[])
