"""Training at scale: ``python -m bench.train_scale``.

Synthetic shop (default 100,000 users x 50,000 products x 5,000,000 events) with realistic skew:
Zipf-like product popularity, log-normal user activity, events grouped in sessions, event types
in shop proportions. Measures, each in a fresh child process so that peak RSS
(``resource.getrusage``) belongs to that step alone:

- a full ``domain.training.train(...)`` run (every strategy, the real training path, a synthetic
  catalog of every product), with per-step wall and CPU times from its progress callback (the
  machine may be shared: the load average at the start is printed, and CPU seconds do not
  depend on it), once with the evaluation of the publish gate (``evaluated`` step: a time
  split of the last 7 days, every strategy scored) and once without, to show what it costs;
- an incremental update of 1,000 touched users (``CollaborativeModel.user_neighbours`` and the
  scoring of those rows);
- ``implicit``'s ALS fit on the same user x product matrix, as the reference (if installed).

Targets (issue 5): full retrain <= 120 s, peak memory <= 4 GB, incremental <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

SEED = 7
NOW = 1_750_000_000.0
DAY = 86_400.0
EVENT_TYPES = np.array(["product_viewed", "product_clicked", "add_to_cart", "purchase"])
EVENT_SHARES = np.array([0.6, 0.15, 0.15, 0.1])
CATEGORIES = ["Food", "Home", "Garden", "Toys", "Sports", "Books", "Beauty", "Tech"]
WORDS = "red blue green large small organic steel wooden soft classic fresh premium".split()


def synthetic_events(
    n_users: int, n_products: int, n_events: int, seed: int = SEED
) -> dict[str, np.ndarray]:
    """Return parallel event columns of a skewed synthetic shop (vectorised, no Python loop)."""
    rng = np.random.default_rng(seed)
    # Zipf-like popularity over a random permutation of products (rank 1 sells the most).
    ranks = rng.permutation(n_products) + 1
    product_p = 1.0 / (ranks + 20.0) ** 1.05
    product_p /= product_p.sum()
    # Log-normal activity: a few users do a lot, most do little; everyone has >= 1 event.
    activity = rng.lognormal(mean=0.0, sigma=1.2, size=n_users)
    counts = np.maximum(1, np.round(activity / activity.sum() * n_events)).astype(np.int64)
    surplus = counts.sum() - n_events
    if surplus > 0:  # trim the heaviest users so the total is exact
        heavy = np.argsort(-counts)[: int(surplus)]
        counts[heavy] -= 1
    elif surplus < 0:
        counts[rng.integers(0, n_users, int(-surplus))] += 1
    users = np.repeat(np.arange(n_users), counts)
    # Sessions: about 8 events each; a session has a start within the last 90 days.
    session_of_event = np.arange(users.size) // 8
    products = rng.choice(n_products, size=users.size, p=product_p)
    # Users have taste: half of the events stay near the session's first product.
    near = rng.random(users.size) < 0.5
    first = products[session_of_event * 8]
    products[near] = (first[near] + rng.integers(-50, 51, int(near.sum()))) % n_products
    session_start = NOW - rng.random(session_of_event.max() + 1) * 90 * DAY
    times = session_start[session_of_event] + (np.arange(users.size) % 8) * 60.0
    types = EVENT_TYPES[rng.choice(EVENT_TYPES.size, size=users.size, p=EVENT_SHARES)]
    return {
        "users": np.char.add("u", users.astype(str)),
        "products": np.char.add("p", products.astype(str)),
        "types": types,
        "times": times,
        "sessions": np.char.add("s", session_of_event.astype(str)),
    }


def synthetic_catalog(n_products: int, seed: int = SEED) -> list[dict[str, Any]]:
    """Return ``n_products`` API-shaped catalog items with categories, text, prices, attributes."""
    rng = np.random.default_rng(seed + 1)
    cat = rng.integers(0, len(CATEGORIES), n_products)
    sub = rng.integers(0, 20, n_products)
    w1, w2 = rng.integers(0, len(WORDS), (2, n_products))
    price = np.round(np.exp(rng.normal(3.0, 1.0, n_products)), 2)
    return [
        {
            "productId": f"p{j}",
            "name": f"{WORDS[w1[j]]} {WORDS[w2[j]]} item {j % 997}",
            "category": f"{CATEGORIES[cat[j]]} > Sub {sub[j]}",
            "description": f"A {WORDS[w2[j]]} {CATEGORIES[cat[j]].lower()} product",
            "price": float(price[j]),
            "attributes": {"colour": WORDS[w1[j] % 3], "brand": f"b{j % 300}"},
            "available": True,
        }
        for j in range(n_products)
    ]


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Return this process's resident set size now, in MB (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def load_average() -> float:
    """Return the 1-minute load average (the machine may be shared: wall times depend on it)."""
    with open("/proc/loadavg") as loadavg:
        return float(loadavg.read().split()[0])


def child_full(args: argparse.Namespace, *, with_evaluation: bool = True) -> dict[str, Any]:
    """Generate the data and time one full ``train(...)``; return step times and peak RSS."""
    from domain.training import EventColumns, train

    ev = synthetic_events(args.users, args.products, args.events)
    catalog = synthetic_catalog(args.products)
    before = peak_rss_mb()
    held = current_rss_mb()
    load = load_average()
    steps: list[tuple[str, float, float]] = []
    start, start_cpu = time.perf_counter(), time.process_time()
    result = train(
        events=EventColumns(ev["users"], ev["products"], ev["types"], ev["times"], ev["sessions"]),
        catalog=catalog,
        now=NOW,
        progress=lambda step: steps.append((step, time.perf_counter(), time.process_time())),
        with_evaluation=with_evaluation,
    )
    total, total_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    previous, previous_cpu = start, start_cpu
    step_seconds, step_cpu = {}, {}
    for name, at, at_cpu in steps:
        step_seconds[name], step_cpu[name] = at - previous, at_cpu - previous_cpu
        previous, previous_cpu = at, at_cpu
    step_seconds["lists and counts"] = start + total - previous
    step_cpu["lists and counts"] = start_cpu + total_cpu - previous_cpu
    return {
        "total": total,
        "total_cpu": total_cpu,
        "steps": step_seconds,
        "steps_cpu": step_cpu,
        "load_average": load,
        "peak_rss_mb": peak_rss_mb(),
        "rss_held_before_train_mb": held,
        "rss_before_train_mb": before,
        "user_lists": len(result.user_lists),
        "counts": result.counts,
        "evaluation": result.evaluation.to_dict() if result.evaluation else None,
    }


def child_full_plain(args: argparse.Namespace) -> dict[str, Any]:
    """The same full run without the evaluation."""
    return child_full(args, with_evaluation=False)


def child_incremental(args: argparse.Namespace) -> dict[str, Any]:
    """Fit collaborative once, then time neighbours + scoring of 1,000 touched users."""
    from domain.interactions import build_interactions
    from domain.strategies.collaborative import CollaborativeModel

    ev = synthetic_events(args.users, args.products, args.events)
    data = build_interactions(
        ev["users"], ev["products"], ev["types"], ev["times"], session_ids=ev["sessions"], now=NOW
    )
    start = time.perf_counter()
    model = CollaborativeModel().fit(data)
    fit_seconds = time.perf_counter() - start
    touched = np.random.default_rng(SEED).choice(data.n_users, size=args.touched, replace=False)
    start = time.perf_counter()
    model.user_neighbours(touched)
    neighbours_seconds = time.perf_counter() - start
    model.recommend_indices(touched, n=30)
    total = time.perf_counter() - start
    return {
        "collaborative_fit": fit_seconds,
        "neighbours": neighbours_seconds,
        "scoring": total - neighbours_seconds,
        "total": total,
        "touched": int(touched.size),
        "peak_rss_mb": peak_rss_mb(),
    }


def child_als(args: argparse.Namespace) -> dict[str, Any]:
    """Time implicit's ALS (64 factors, 15 iterations) on the same user x product matrix."""
    try:
        from implicit.als import AlternatingLeastSquares
    except ImportError:
        return {"skipped": "implicit is not installed (pip install -e '.[bench]')"}
    from threadpoolctl import threadpool_limits

    from domain.interactions import build_interactions

    ev = synthetic_events(args.users, args.products, args.events)
    data = build_interactions(
        ev["users"], ev["products"], ev["types"], ev["times"], session_ids=ev["sessions"], now=NOW
    )
    matrix = data.matrix.tocsr()
    model = AlternatingLeastSquares(
        factors=64, iterations=15, regularization=0.01, alpha=1.0, random_state=SEED
    )
    with threadpool_limits(1, "blas"):  # implicit runs its own threads
        start = time.perf_counter()
        model.fit(matrix, show_progress=False)
        seconds = time.perf_counter() - start
    return {"fit": seconds, "peak_rss_mb": peak_rss_mb()}


CHILDREN = {
    "full": child_full,
    "full_plain": child_full_plain,
    "incremental": child_incremental,
    "als": child_als,
}


def run_child(phase: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one phase in a fresh interpreter and return its JSON answer."""
    cmd = [
        sys.executable,
        "-m",
        "bench.train_scale",
        "--child",
        phase,
        "--users",
        str(args.users),
        "--products",
        str(args.products),
        "--events",
        str(args.events),
        "--touched",
        str(args.touched),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    """Run the three phases and print their figures against the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--touched", type=int, default=1_000)
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--skip", action="append", default=[], choices=sorted(CHILDREN))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return

    print(
        f"train_scale: {args.users:,} users x {args.products:,} products x {args.events:,} events"
    )
    if "full" not in args.skip:
        full = run_child("full", args)
        print(
            "\nFull retrain through domain.training.train (every strategy),"
            f" load average {full['load_average']:.1f} on {os.cpu_count()} CPUs at the start"
        )
        print(f"  {'step':<32}{'wall':>8}  {'CPU':>8}")
        for name, seconds in full["steps"].items():
            print(f"  {name:<32}{seconds:>8.1f} s{full['steps_cpu'][name]:>8.1f} s")
        verdict = "ok" if full["total"] <= 120 else "MISSED"
        print(
            f"  {'total':<32}{full['total']:>8.1f} s{full['total_cpu']:>8.1f} s"
            f"   (target <= 120 s: {verdict})"
        )
        verdict = "ok" if full["peak_rss_mb"] <= 4096 else "MISSED"
        print(
            f"  {'peak RSS of the process':<32}{full['peak_rss_mb']:>8.0f} MB  (target <= 4096 MB:"
            f" {verdict}; before train: {full['rss_held_before_train_mb']:.0f} MB held by the data,"
            f" {full['rss_before_train_mb']:.0f} MB peak while generating it)"
        )
        print(f"  counts {full['counts']}, {full['user_lists']:,} user lists")
        evaluation = full["evaluation"] or {}
        if evaluation.get("skipped"):
            print(f"  evaluation skipped: {evaluation['skipped']}")
        else:
            print(f"  evaluation details {evaluation.get('details')}")
            for name, values in (evaluation.get("metrics") or {}).items():
                shown = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
                print(f"    {name:<28}{shown}")
    if "full_plain" not in args.skip:
        plain = run_child("full_plain", args)
        print(f"\nThe same full retrain without the evaluation (load {plain['load_average']:.1f})")
        print(f"  {'total':<32}{plain['total']:>8.1f} s{plain['total_cpu']:>8.1f} s")
        print(f"  {'peak RSS of the process':<32}{plain['peak_rss_mb']:>8.0f} MB")
        if "full" not in args.skip:
            print(
                f"  with evaluation / without: wall {full['total'] / plain['total']:.2f}x,"
                f" CPU {full['total_cpu'] / plain['total_cpu']:.2f}x (issue 20: must stay < 2x)"
            )
    if "incremental" not in args.skip:
        inc = run_child("incremental", args)
        verdict = "ok" if inc["total"] <= 5 else "MISSED"
        print(f"\nIncremental update of {inc['touched']:,} touched users")
        print(f"  {'user_neighbours':<32}{inc['neighbours']:>8.2f} s")
        print(f"  {'scoring (top 30)':<32}{inc['scoring']:>8.2f} s")
        print(f"  {'total':<32}{inc['total']:>8.2f} s   (target <= 5 s: {verdict})")
        print(f"  (full collaborative fit in that process: {inc['collaborative_fit']:.1f} s)")
    if "als" not in args.skip:
        als = run_child("als", args)
        print("\nReference: implicit ALS (64 factors, 15 iterations) on the same matrix")
        if "skipped" in als:
            print(f"  skipped: {als['skipped']}")
        else:
            print(f"  {'fit':<32}{als['fit']:>8.1f} s   (peak RSS {als['peak_rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
