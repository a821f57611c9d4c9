"""Tune on validation splits: ``python -m bench.offline_eval.tune [--what cf|fbt]``.

Every validation split ends where the test split starts or earlier (the last one trains
before 2017-11-06 and validates on the 28 days up to 2017-12-04), so no parameter is chosen by
looking at the test window. The collaborative grid is scored on three consecutive 28-day
windows (``--splits`` to change) and ranked by the mean NDCG@10: one window of about 1,900
households is too noisy to pick between close settings. Prints one row per setting, with EASE
and raw co-occurrence as the bars to clear.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.offline_eval.__main__ import (
    ease,
    fbt_eval,
    load,
    make_split,
    ours_collaborative,
    print_table,
    ranking_metrics,
)

VALIDATION_SPLIT = "2017-11-06"
VALIDATION_SPLITS = ("2017-09-11", "2017-10-09", VALIDATION_SPLIT)


def mean_over_splits(
    splits: list[tuple[str, Any]], recommend: Callable[[Any], np.ndarray]
) -> dict[str, float]:
    """Return NDCG@10 per split and the means of NDCG, Recall and coverage over the splits."""
    ndcg, recall, coverage = [], [], []
    per_split = {}
    for date, split in splits:
        targets = [split.targets[u] for u in split.eval_users]
        m = ranking_metrics(recommend(split), targets, split.items.size)
        per_split[f"NDCG {date[5:]}"] = m["NDCG@10"]
        ndcg.append(m["NDCG@10"])
        recall.append(m["Recall@10"])
        coverage.append(m["Coverage@10"])
    return {
        "NDCG@10 mean": float(np.mean(ndcg)),
        **per_split,
        "Recall avg": float(np.mean(recall)),
        "Coverage avg": float(np.mean(coverage)),
    }


def tune_collaborative(
    splits: list[tuple[str, Any]], grid: dict[str, list[Any]], with_ease: bool
) -> None:
    """Print CJ-28d metrics of every setting of ``grid`` over ``splits`` (and EASE)."""
    rows: list[tuple[str, dict[str, float], float]] = []
    if with_ease:
        start = time.perf_counter()
        rows.append(("EASE", mean_over_splits(splits, ease), time.perf_counter() - start))
        print_table("CJ-28d validation", rows[-1:])
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        start = time.perf_counter()
        metrics = mean_over_splits(splits, functools.partial(ours_collaborative, **params))
        name = " ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
        rows.append((name, metrics, time.perf_counter() - start))
        print_table("CJ-28d validation", rows[-1:])
    rows.sort(key=lambda row: -row[1]["NDCG@10 mean"])
    print_table("CJ-28d validation (all, best mean NDCG@10 first)", rows)


def tune_fbt(split: Any, grid: dict[str, list[Any]]) -> None:
    """Print CJ-FBT-28d metrics of every setting of ``grid``."""
    keys = list(grid)
    rows: list[tuple[str, dict[str, float], float]] = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        window = params.pop("window_days", 7.0)
        out = fbt_eval(split, window, **params)
        if not rows:
            rows += out[:2]
        name = f"window={window} " + " ".join(f"{k}={v}" for k, v in params.items())
        rows.append((name, out[2][1], out[2][2]))
        print_table("CJ-FBT-28d validation", rows[-1:])
    print_table("CJ-FBT-28d validation (all)", rows)


def main(argv: list[str] | None = None) -> None:
    """Run the chosen grid on the validation splits."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--what", choices=["cf", "fbt"], default="cf")
    parser.add_argument("--grid", default="{}", help="Python dict literal of lists")
    parser.add_argument("--ease", action="store_true")
    parser.add_argument(
        "--splits",
        default=",".join(VALIDATION_SPLITS),
        help="comma-separated split dates, none after " + VALIDATION_SPLIT,
    )
    args = parser.parse_args(argv)
    import ast

    grid = ast.literal_eval(args.grid)
    dates = [d.strip() for d in args.splits.split(",") if d.strip()]
    if any(d > VALIDATION_SPLIT for d in dates):
        parser.error(f"a validation split after {VALIDATION_SPLIT} would look at the test window")
    if args.what == "cf":
        splits = []
        for date in dates:
            tx, _, split_ts = load(date)
            splits.append((date, make_split(tx, split_ts)))
        tune_collaborative(splits, grid, args.ease)
    else:
        tx, _, split_ts = load(VALIDATION_SPLIT)
        tune_fbt(make_split(tx, split_ts), grid)


if __name__ == "__main__":
    main()
