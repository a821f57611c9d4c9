"""scripts/bootstrap.sh: only the dev extra for the tests, and no stop for a missing system package
when it cannot be installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("bash", "dirname", "id", "ls", "touch", "rm", "cat", "find")


def _project(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A copy of the script in a project folder whose python only records how it was called;
    PATH has no redis-server, no apt-get and no Chromium."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "bootstrap.sh", project / "scripts" / "bootstrap.sh")
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, project / name)
    calls = tmp_path / "calls.txt"
    fake = project / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/bash\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The SDK's build is another step's business: an npm that does nothing.
    (project / "sdk" / "node_modules").mkdir(parents=True)
    (project / "sdk" / "package-lock.json").write_text("{}")
    (bin_dir / "npm").write_text("#!/bin/bash\nexit 0\n")
    (bin_dir / "npm").chmod(0o755)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return project, calls, env


def test_make_test_installs_the_dev_extra_only_and_make_up_adds_the_demo(tmp_path: Path) -> None:
    project, calls, env = _project(tmp_path)
    script = str(project / "scripts" / "bootstrap.sh")
    done = subprocess.run([script], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    installs = [c for c in calls.read_text().splitlines() if " install " in f" {c} "]
    assert any(c.endswith("-e .[dev]") for c in installs), installs
    assert not any("demo" in c for c in installs), installs
    demo = subprocess.run([script, "--demo"], env=env, capture_output=True, text=True, check=False)
    assert demo.returncode == 0, demo.stderr
    assert calls.read_text().splitlines()[-1].endswith("-e .[dev,demo]")


def test_a_missing_system_package_it_cannot_install_is_named_without_stopping(
    tmp_path: Path,
) -> None:
    project, _, env = _project(tmp_path)
    done = subprocess.run(
        [str(project / "scripts" / "bootstrap.sh"), "--browser"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "missing: redis-server" in done.stderr and "chromium" in done.stderr
    assert "apt-get install -y" in done.stderr
    assert os.access(project / ".venv" / ".installed", os.F_OK)
