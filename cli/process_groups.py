"""Long-running processes started as whole process groups, and stopped as such.

Each process `make up` starts leads a session of its own, so its process-group id is its pid,
which its pid file holds. Stopping signals the leader (a Dramatiq pool forwards the signal to
its workers; a second copy sent straight to them stalls their graceful stop), then, should
anything of the group outlive the leader, the whole group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether the process is still running (or exists under another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(group: int) -> bool:
    """Whether any process of the process group is still running."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recorded_group(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def leader_alive(pid_file: Path) -> bool:
    """Whether the process whose group the pid file records still runs."""
    group = _recorded_group(pid_file)
    return group is not None and process_alive(group)


def start_group(
    command: list[str], *, pid_file: Path, log_path: Path, env: dict[str, str], cwd: Path
) -> int:
    """Start `command` as the leader of a new process group, recorded in `pid_file`."""
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log_file, stderr=log_file, start_new_session=True
        )
    pid_file.write_text(str(process.pid))
    return process.pid


def stop_group(pid_file: Path, *, timeout: float = 15) -> None:
    """Stop every process of the recorded group: SIGTERM (to the leader while it lives, else
    to the survivors), then SIGKILL whatever is left after `timeout` seconds."""
    group = _recorded_group(pid_file)
    if group is not None and group_alive(group):
        if process_alive(group):
            os.kill(group, signal.SIGTERM)
        else:
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_alive(group):
            os.killpg(group, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
