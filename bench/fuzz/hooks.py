"""Schemathesis hooks of the fuzzing run (loaded through SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

from typing import Any

import schemathesis

from bench.fuzz.config import stated_fields


def _named(field: str, stated: tuple[str, ...]) -> bool:
    """Whether a problem's field is one of the stated ones (or inside one, `metadata.price`)."""
    return any(
        field == name or (name and (field.startswith(f"{name}.") or field.endswith(f".{name}")))
        for name in stated
    )


@schemathesis.check
def refusals_name_only_stated_rules(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request that an operation may refuse with a 422 (bench/fuzz/config.py) is
    refused for the stated rule only: every field its problem names is one of the stated."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    stated = stated_fields(case.operation.label)
    if stated is None:
        return None  # no allowance: positive_data_acceptance reports the 422 itself
    try:
        problem = response.json()
    except ValueError as exc:
        raise AssertionError("A 422 that is not a JSON problem") from exc
    fields = [str(error.get("field", "")) for error in problem.get("errors") or []]
    unstated = [field for field in fields if not _named(field, stated)]
    if not fields or unstated:
        raise AssertionError(
            f"A schema-valid request was refused for {unstated or 'no named field'}, not only "
            f"for the rules stated for {case.operation.label} ({', '.join(stated)}): "
            f"{problem.get('detail')}"
        )
    return None
