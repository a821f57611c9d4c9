"""Fuzzing: schemathesis over the served OpenAPI document, with real keys and a real token, in a
throwaway tenant on throwaway servers.

    python -m bench.fuzz [--examples 25] [--checks all] [--stateful]

It starts its own PostgreSQL, Redis, api and worker, makes an operator admin, a tenant and a
read_write key, writes the document `recomengine openapi` serves and runs `st run` against the
api with the tenant's id for every `tenant_id` path parameter (bench/fuzz/config.py: the
operations that change or delete a tenant get tenants of their own, and a few checks accept
more from a few operations, each for a stated reason, printed first; routes that end the
admin's sessions are left out, so that the run keeps its token). Every check runs by default.
It prints schemathesis' summary and exits with its exit code: 0 when no check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from api.security import issue_access_token
from bench.fuzz.config import describe, schemathesis_config
from bench.harness import ROOT, local_platform, make_bench_tenant
from store.db import create_pool
from store.tenants import create_tenant

# Routes that would sign the run's admin out for the rest of it.
EXCLUDED_PATHS = "logout|change-password"


# `st` itself, with a deeper recursion limit: generating the free-form objects of the document
# (event metadata) nests deep enough to hit Python's default now and then, which schemathesis
# then reports as an error of its own instead of a request.
RUN_SCHEMATHESIS = (
    "import sys; sys.setrecursionlimit(5000); "
    "from schemathesis.cli import schemathesis; sys.exit(schemathesis())"
)


def _check_results(value: Any) -> Iterator[tuple[str, str]]:
    """(check, status) of every check result anywhere in one event of the NDJSON report."""
    if isinstance(value, dict):
        checks = value.get("checks")
        if isinstance(checks, dict):
            for results in checks.values():
                for result in results if isinstance(results, list) else []:
                    if isinstance(result, dict) and "name" in result and "status" in result:
                        yield str(result["name"]), str(result["status"]).lower()
        for member in value.values():
            if member is not checks:
                yield from _check_results(member)
    elif isinstance(value, list):
        for member in value:
            yield from _check_results(member)


def check_figures(lines: Iterable[str]) -> str:
    """How many times each check ran, passed and failed, from schemathesis' NDJSON events."""
    figures: dict[str, Counter[str]] = {}
    for line in lines:
        if line.strip():
            for name, status in _check_results(json.loads(line)):
                figures.setdefault(name, Counter())[status] += 1
    rows = [f"{'check':<36} {'run':>8} {'passed':>8} {'failed':>8}"]
    for name, counts in sorted(figures.items()):
        failed = sum(n for status, n in counts.items() if status not in ("success", "skip"))
        rows.append(f"{name:<36} {counts.total():>8} {counts['success']:>8} {failed:>8}")
    return "Per check:\n" + "\n".join(rows)


async def fuzz(args: argparse.Namespace) -> int:
    """Bring the stack up, run schemathesis, print its summary."""
    with local_platform("recomengine-fuzz-", keep=args.keep) as platform:
        settings = platform.settings
        pool = await create_pool(settings, min_size=1, max_size=2)
        try:
            # The tenant's highest per-key budgets: a run sends thousands of requests a minute
            # with its one key, and a 429 tests nothing behind it.
            tenant = await make_bench_tenant(
                pool,
                settings,
                permissions=["read_write"],
                config={"rateLimits": {"readsPerMinute": 100_000, "writesPerMinute": 50_000}},
            )
            # An operator, so that the operators' console is fuzzed too, not only refused.
            await pool.execute(
                "UPDATE admins SET is_operator = true WHERE id = $1::uuid", tenant.admin_id
            )
            second = await create_tenant(pool, owner_id=tenant.admin_id, name="Bench (changed)")
            third = await create_tenant(pool, owner_id=tenant.admin_id, name="Bench (deleted)")
        finally:
            await pool.close()
        platform.start(["cli.main", "worker", "--processes", "1"], "worker.log")
        await asyncio.to_thread(platform.start_api)
        token, _ = issue_access_token(admin_id=tenant.admin_id, settings=settings)
        document = platform.run_cli(["openapi"])
        if document.returncode != 0:
            raise SystemExit(document.stderr)
        (platform.workdir / "openapi.json").write_text(document.stdout)
        config = platform.workdir / "schemathesis.toml"
        config.write_text(
            schemathesis_config(
                tenant_id=tenant.tenant_id,
                second_tenant_id=str(second["id"]),
                third_tenant_id=str(third["id"]),
            )
        )
        print(describe(), flush=True)
        phases = "examples,coverage,fuzzing" + (",stateful" if args.stateful else "")
        command = [
            sys.executable,
            "-c",
            RUN_SCHEMATHESIS,
            "--config-file",
            str(config),
            "run",
            str(platform.workdir / "openapi.json"),
            "--url",
            platform.base_url,
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            f"X-API-Key: {tenant.keys['read_write']}",
            "--checks",
            args.checks,
            "--max-examples",
            str(args.examples),
            "--phases",
            phases,
            "--exclude-path-regex",
            EXCLUDED_PATHS,
            "--workers",
            "2",
            "--seed",
            str(args.seed),
            # Every event, for the per-check figures printed after the summary.
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(platform.workdir / "events.ndjson"),
        ]
        # From the run's folder: schemathesis keeps a cache of what it found where it runs.
        # bench/fuzz/hooks.py adds the check that holds each allowed refusal to its stated rule.
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "bench.fuzz.hooks",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        run = await asyncio.to_thread(
            subprocess.run,
            command,
            capture_output=True,
            text=True,
            check=False,
            cwd=platform.workdir,
            env=env,
        )
        summary = run.stdout.rfind("=== SUMMARY ===")
        print(run.stdout if args.verbose or run.returncode else run.stdout[summary - 40 :])
        events = platform.workdir / "events.ndjson"
        if events.exists():
            print(check_figures(events.read_text(encoding="utf-8").splitlines()))
        if run.returncode and run.stderr:
            print(run.stderr[-3000:], file=sys.stderr)
        return run.returncode


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--examples", type=int, default=25, help="examples per operation")
    parser.add_argument(
        "--checks",
        default="all",
        help="schemathesis checks (comma-separated, or `all`)",
    )
    parser.add_argument("--stateful", action="store_true", help="also follow the links")
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--verbose", action="store_true", help="print schemathesis' whole output")
    parser.add_argument("--keep", action="store_true", help="keep the servers' folder and logs")
    sys.exit(asyncio.run(fuzz(parser.parse_args())))


if __name__ == "__main__":
    main()
