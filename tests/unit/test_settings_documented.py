"""The README documents every RECOMENGINE_* setting the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from store.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CODE = ("api", "workers", "scheduler", "domain", "store", "cli", "migrations")


def test_every_setting_and_variable_the_code_reads_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    wanted = {f"RECOMENGINE_{name.upper()}" for name in Settings.model_fields}
    for folder in CODE:
        for path in (ROOT / folder).rglob("*.py"):
            wanted |= set(re.findall(r"RECOMENGINE_[A-Z][A-Z0-9_]*[A-Z0-9]", path.read_text()))
    missing = sorted(name for name in wanted if f"`{name}`" not in readme)
    assert missing == []
