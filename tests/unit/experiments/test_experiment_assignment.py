"""Variant assignment: deterministic, on the configured split, independent across experiments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from domain.experiments.assignment import BUCKET_COUNT, assign_variant, assignment_bucket

REPO_ROOT = Path(__file__).resolve().parents[3]
N_IDS = 200_000


def user_ids(count: int) -> list[str]:
    return [f"user-{i}" for i in range(count)]


def test_bucket_is_sha256_of_experiment_colon_user_as_big_endian_integer_mod_10000() -> None:
    # Pinned from `printf '%s' KEY | sha256sum`, so another language can reproduce them.
    assert assignment_bucket(experiment_id="exp-1", user_id="user-1") == 2035
    assert assignment_bucket(experiment_id="3f2b9c1e-exp", user_id="visitor-42") == 1989
    assert assignment_bucket(experiment_id="exp", user_id="") == 517


def test_delimiter_keeps_concatenation_collisions_apart() -> None:
    joined = assignment_bucket(experiment_id="ab", user_id="c")
    assert joined != assignment_bucket(experiment_id="a", user_id="bc")


def test_a_user_always_gets_the_same_variant() -> None:
    first = [assign_variant(experiment_id="e1", user_id=u, traffic_split=37) for u in user_ids(500)]
    again = [assign_variant(experiment_id="e1", user_id=u, traffic_split=37) for u in user_ids(500)]
    assert first == again


def test_split_of_0_sends_everyone_to_control_and_100_everyone_to_variant() -> None:
    ids = user_ids(2_000)
    assert {assign_variant(experiment_id="e", user_id=u, traffic_split=0) for u in ids} == {
        "control"
    }
    assert {assign_variant(experiment_id="e", user_id=u, traffic_split=100) for u in ids} == {
        "variant"
    }


@pytest.mark.parametrize("bad", [-1, 101])
def test_traffic_split_outside_0_to_100_is_refused(bad: int) -> None:
    with pytest.raises(ValueError):
        assign_variant(experiment_id="e", user_id="u", traffic_split=bad)


def test_traffic_split_that_is_not_an_int_is_refused() -> None:
    with pytest.raises(TypeError):
        assign_variant(experiment_id="e", user_id="u", traffic_split=True)


@pytest.mark.parametrize("traffic_split", [50, 30])
def test_200000_ids_follow_the_traffic_split_within_chi_square_p_above_0_001(
    traffic_split: int,
) -> None:
    counts = Counter(
        assign_variant(experiment_id="exp-split", user_id=u, traffic_split=traffic_split)
        for u in user_ids(N_IDS)
    )
    expected = [N_IDS * (100 - traffic_split) / 100, N_IDS * traffic_split / 100]
    result = stats.chisquare([counts["control"], counts["variant"]], f_exp=expected)
    assert result.pvalue > 0.001


def test_200000_ids_spread_uniformly_over_the_10000_buckets() -> None:
    buckets = np.bincount(
        [assignment_bucket(experiment_id="exp-uniform", user_id=u) for u in user_ids(N_IDS)],
        minlength=BUCKET_COUNT,
    )
    assert stats.chisquare(buckets).pvalue > 0.001


def test_assignments_of_two_experiments_are_independent_on_a_2x2_chi_square() -> None:
    ids = user_ids(N_IDS)
    first = [assign_variant(experiment_id="exp-A", user_id=u, traffic_split=50) for u in ids]
    second = [assign_variant(experiment_id="exp-B", user_id=u, traffic_split=50) for u in ids]
    table = Counter(zip(first, second, strict=True))
    observed = [
        [table["control", "control"], table["control", "variant"]],
        [table["variant", "control"], table["variant", "variant"]],
    ]
    assert stats.chi2_contingency(observed, correction=False).pvalue > 0.001


def test_assignments_are_the_same_in_another_process_with_another_hash_seed() -> None:
    ids = user_ids(5_000)
    script = (
        "import json, sys\n"
        "from domain.experiments.assignment import assign_variant\n"
        "ids = json.load(sys.stdin)\n"
        "print(json.dumps([assign_variant(experiment_id='exp-xproc', user_id=u,"
        " traffic_split=40) for u in ids]))\n"
    )
    # A different PYTHONHASHSEED proves nothing depends on Python's randomised str hash.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": "12345"}
    completed = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(ids),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )
    here = [assign_variant(experiment_id="exp-xproc", user_id=u, traffic_split=40) for u in ids]
    assert json.loads(completed.stdout) == here
