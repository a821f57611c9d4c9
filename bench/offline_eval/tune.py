"""Tune on a validation split: ``python -m bench.offline_eval.tune [--what cf|fbt]``.

The validation split ends where the test split starts (train before 2017-11-06, validate on
the 28 days up to 2017-12-04), so no parameter is chosen by looking at the test window. Prints
one row per setting, with EASE and raw co-occurrence as the bars to clear.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

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


def tune_collaborative(split: Any, grid: dict[str, list[Any]], with_ease: bool) -> None:
    """Print CJ-28d metrics of every setting of ``grid`` (and EASE for reference)."""
    targets = [split.targets[u] for u in split.eval_users]
    rows = []
    if with_ease:
        start = time.perf_counter()
        rows.append(
            (
                "EASE",
                ranking_metrics(ease(split), targets, split.items.size),
                time.perf_counter() - start,
            )
        )
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        start = time.perf_counter()
        recs = ours_collaborative(split, **params)
        name = " ".join(f"{k}={v}" for k, v in params.items())
        rows.append(
            (name, ranking_metrics(recs, targets, split.items.size), time.perf_counter() - start)
        )
        print_table("CJ-28d validation", rows[-1:])
    print_table("CJ-28d validation (all)", rows)


def tune_fbt(split: Any, grid: dict[str, list[Any]]) -> None:
    """Print CJ-FBT-28d metrics of every setting of ``grid``."""
    keys = list(grid)
    rows = []
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
    """Run the chosen grid on the validation split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--what", choices=["cf", "fbt"], default="cf")
    parser.add_argument("--grid", default="{}", help="Python dict literal of lists")
    parser.add_argument("--ease", action="store_true")
    args = parser.parse_args(argv)
    import ast

    grid = ast.literal_eval(args.grid)
    tx, _, split_ts = load(VALIDATION_SPLIT)
    split = make_split(tx, split_ts)
    if args.what == "cf":
        tune_collaborative(split, grid, args.ease)
    else:
        tune_fbt(split, grid)


if __name__ == "__main__":
    main()
