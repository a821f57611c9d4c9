"""The CLI finds the platform `make up` runs, and any failure is one line saying what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import TenantContext, settings_env

from cli.localservices import free_port, write_env_file
from store.settings import Settings


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`recomengine ARGS` in `cwd` with no RECOMENGINE_* variable in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOMENGINE_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_commands_in_the_project_folder_use_the_env_file_that_make_up_writes(
    tmp_path: Path, migrated: Settings, tenant: TenantContext
) -> None:
    write_env_file(tmp_path / ".run" / "dev" / "env", settings_env(migrated))
    assert (tmp_path / ".run" / "dev" / "env").stat().st_mode & 0o077 == 0
    trained = run_cli(tmp_path, "train", "--tenant", tenant.tenant_id)
    assert trained.returncode == 0, trained.stderr[-2000:]
    listed = run_cli(tmp_path, "dlq", "list", "--queue", "ingest")
    assert listed.returncode == 0, listed.stderr[-2000:]


def test_a_command_that_cannot_reach_the_platform_says_what_to_do_in_one_line(
    tmp_path: Path, migrated: Settings
) -> None:
    nowhere = migrated.model_copy(
        update={
            "database_url": f"postgresql://recomengine@127.0.0.1:{free_port()}/recomengine",
            "redis_url": f"redis://127.0.0.1:{free_port()}/1",
            "broker_url": f"redis://127.0.0.1:{free_port()}/0",
        }
    )
    write_env_file(tmp_path / ".run" / "dev" / "env", settings_env(nowhere))
    for args in (["train", "--tenant", "00000000-0000-0000-0000-000000000000"], ["dlq", "list"]):
        failed = run_cli(tmp_path, *args)
        assert failed.returncode == 1, failed.stderr
        assert "Traceback" not in failed.stderr
        # A progress bar may have started; the error is the one line that says "error".
        lines = [line for line in failed.stderr.splitlines() if "error" in line]
        assert len(lines) == 1, failed.stderr
        assert lines[0].startswith(f"recomengine {args[0]}: error:")
        assert "make up" in lines[0]
