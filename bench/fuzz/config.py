"""What the fuzzing run is told beyond the document: which tenant each operation works on, and
the few checks an operation answers differently for a reason no JSON Schema can state."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

# Operations that change or end the tenant itself (its settings, plan, signing secret, its very
# existence) work on a second tenant of the same admin: on the run's own tenant they would
# suspend it, require user tokens or consent, shrink its rate limits or delete it, and every
# operation after them would only see 401, 403 or 429.
SECOND_TENANT_OPERATIONS = (
    "PATCH /api/v1/tenants/{tenant_id}",
    "PUT /api/v1/tenants/{tenant_id}",
    "POST /api/v1/tenants/{tenant_id}/user-token-secret",
    "PUT /api/v1/ops/tenants/{tenant_id}/plan",
)
# And a third one to delete, so that the second one is changed all run long, not only until the
# first DELETE.
THIRD_TENANT_OPERATIONS = ("DELETE /api/v1/tenants/{tenant_id}",)

# What these checks expect by default (schemathesis 4.32); an allowance adds to it.
_DEFAULT_EXPECTED = {
    "positive_data_acceptance": ("2xx", "3xx", "401", "403", "404", "409", "429", "5xx"),
    "negative_data_rejection": (
        "400",
        "401",
        "403",
        "404",
        "405",
        "406",
        "409",
        "415",
        "422",
        "428",
        "429",
        "5xx",
    ),
}


@dataclass(frozen=True)
class Allowance:
    """One check answered differently by some operations, and why."""

    operations: tuple[str, ...]
    check: str
    also: tuple[str, ...]
    reason: str
    # For a 422 to a schema-valid request: the only fields its problem may name ("" is a rule
    # of the whole body); bench/fuzz/hooks.py holds every such refusal to them.
    fields: tuple[str, ...] = ()

    @property
    def expected(self) -> tuple[str, ...]:
        """The statuses the check expects from these operations."""
        return (*_DEFAULT_EXPECTED[self.check], *self.also)


ALLOWANCES = (
    Allowance(
        operations=(
            "GET /api/v1/catalog",
            "GET /api/v1/tenants/{tenant_id}/catalog",
            "GET /api/v1/tenants/{tenant_id}/events",
            "GET /api/v1/tenants/{tenant_id}/experiments",
            "GET /api/v1/tenants/{tenant_id}/widgets",
        ),
        check="positive_data_acceptance",
        also=("422",),
        fields=("cursor",),
        reason="a cursor is opaque: only one the api issued names a page, any other string "
        "is a 422, which no schema of a string can state",
    ),
    Allowance(
        operations=(
            "GET /api/v1/analytics/overview",
            "GET /api/v1/tenants/{tenant_id}/analytics/overview",
            "GET /api/v1/tenants/{tenant_id}/analytics/timeseries",
            "GET /api/v1/tenants/{tenant_id}/analytics/top-products",
            "GET /api/v1/tenants/{tenant_id}/analytics/breakdown",
            "GET /api/v1/tenants/{tenant_id}/analytics/funnel",
            "GET /api/v1/tenants/{tenant_id}/analytics/export",
        ),
        check="positive_data_acceptance",
        also=("422",),
        fields=("from", "to", "interval"),
        reason="a period's `from` must not come after its `to`, it spans at most 400 days "
        "(hourly series 7) within the years 1970-9998: rules between two parameters",
    ),
    Allowance(
        operations=(
            "POST /api/v1/auth/signup",
            "POST /api/v1/auth/login",
            "POST /api/v1/auth/forgot-password",
            "POST /api/v1/auth/reset-password",
            "POST /api/v1/auth/change-password",
        ),
        check="positive_data_acceptance",
        also=("422",),
        fields=("password", "newPassword", "email", "token"),
        reason="a new password may not be one of the 10,000 most common nor the email, a reset "
        "token must be one the api mailed and not yet used, and an address may not be at a "
        "special-use domain (.test, .local, .invalid...) that the "
        "`email` format admits: a list no schema holds",
    ),
    Allowance(
        operations=(
            "POST /api/v1/tenants",
            "PUT /api/v1/tenants/{tenant_id}",
            "PATCH /api/v1/tenants/{tenant_id}",
        ),
        check="positive_data_acceptance",
        also=("422",),
        fields=("config.timezone",),
        reason="config.timezone must be a zone of the server's IANA time zone database, a "
        "list that changes with the database (not written into the document)",
    ),
    Allowance(
        operations=(
            "POST /api/v1/tenants/{tenant_id}/experiments",
            "PUT /api/v1/tenants/{tenant_id}/experiments/{experiment_id}",
        ),
        check="positive_data_acceptance",
        also=("422",),
        reason="controlStrategy and variantStrategy must differ, a rule between two fields",
        fields=("",),
    ),
    Allowance(
        operations=(
            "PUT /api/v1/tenants/{tenant_id}/widgets/{placement_id}",
            "PUT /api/v1/catalog/{product_id}",
        ),
        check="positive_data_acceptance",
        also=("422",),
        fields=("placementId", "productId"),
        reason="the body's placementId or productId, when sent, must equal the path's: a rule "
        "between the body and the path",
    ),
    Allowance(
        operations=("POST /api/v1/catalog", "PUT /api/v1/catalog/{product_id}"),
        check="positive_data_acceptance",
        also=("422",),
        fields=("price", "attributes", "description"),
        reason="a price has at most 4 decimals, which `multipleOf: 0.0001` cannot check "
        "exactly on binary floating point; attributes (free-form JSON) are at most 8 KB and a "
        "description 10 KB once encoded as UTF-8, and neither holds a NUL at any depth",
    ),
    Allowance(
        operations=(
            "POST /api/v1/tenants/{tenant_id}/widgets",
            "PUT /api/v1/tenants/{tenant_id}/widgets/{placement_id}",
        ),
        check="positive_data_acceptance",
        also=("422",),
        fields=("ctaText",),
        reason="ctaText is 1-40 characters once trimmed and refuses invisible characters "
        "(Unicode category C), which a portable JSON Schema pattern cannot name",
    ),
    Allowance(
        operations=("POST /api/v1/users/merge",),
        check="positive_data_acceptance",
        also=("422",),
        fields=("",),
        reason="fromUserId and toUserId must differ, a rule between two fields that JSON "
        "Schema cannot state",
    ),
    Allowance(
        operations=(
            "POST /api/v1/events",
            "POST /api/v1/storefront/events",
        ),
        check="positive_data_acceptance",
        also=("422",),
        fields=("timestamp", "metadata"),
        reason="an event's timestamp may not be more than 5 minutes ahead of the server's "
        "clock and its metadata may not exceed 4 KB once encoded: neither a clock nor an "
        "encoded size is a JSON Schema rule",
    ),
    Allowance(
        operations=(
            "POST /api/v1/events/batch",
            "POST /api/v1/storefront/events",
            "POST /api/v1/catalog/batch",
        ),
        check="negative_data_rejection",
        also=("202",),
        reason="a batch is validated item by item: an item that breaks the schema is listed "
        "as rejected in the 202 answer while the others are kept (API.md, partial acceptance)",
    ),
)


def stated_fields(operation: str) -> tuple[str, ...] | None:
    """The fields a 422 to a schema-valid request of `operation` may name, or None when the
    operation has no such allowance."""
    found = [
        field
        for allowance in ALLOWANCES
        if allowance.check == "positive_data_acceptance" and operation in allowance.operations
        for field in allowance.fields
    ]
    return tuple(found) if found else None


# The one file the SDK route serves by its plain name (any other name is a 404).
SDK_FILE = "recomengine.js"


def _toml(value: object) -> str:
    """A TOML value (strings and lists of strings: JSON's spelling is TOML's)."""
    return json.dumps(value)


def schemathesis_config(*, tenant_id: str, second_tenant_id: str, third_tenant_id: str) -> str:
    """The schemathesis.toml of a run."""
    lines = [
        "[parameters]",
        # Every tenant_id in a path is the run's own tenant: a random one is only ever a 404.
        f'"path.tenant_id" = {_toml(tenant_id)}',
        "",
        "[[operations]]",
        f"include-name = {_toml(list(SECOND_TENANT_OPERATIONS))}",
        f'parameters = {{ "path.tenant_id" = {_toml(second_tenant_id)} }}',
        # Out of the stateful phase: the fixed tenant would replace the one a link from
        # POST /tenants gives, so the "created" tenant would never be the one reached.
        "phases.stateful.enabled = false",
        "",
        "[[operations]]",
        f"include-name = {_toml(list(THIRD_TENANT_OPERATIONS))}",
        f'parameters = {{ "path.tenant_id" = {_toml(third_tenant_id)} }}',
        "phases.stateful.enabled = false",
        "",
        "[[operations]]",
        'include-name = "GET /v1/{filename}"',
        f'parameters = {{ "path.filename" = {_toml(SDK_FILE)} }}',
    ]
    for allowance in ALLOWANCES:
        lines += [
            "",
            "[[operations]]",
            f"include-name = {_toml(list(allowance.operations))}",
            f"checks.{allowance.check}.expected-statuses = {_toml(list(allowance.expected))}",
        ]
    return "\n".join(lines) + "\n"


def describe(allowances: Iterable[Allowance] = ALLOWANCES) -> str:
    """The allowances as the run prints them before it starts."""
    lines = ["Checks answered differently by some operations, and why:"]
    for allowance in allowances:
        only = ", ".join(f"`{field}`" if field else "the whole body" for field in allowance.fields)
        lines.append(
            f"- {allowance.check} also accepts {', '.join(allowance.also)} "
            f"from {', '.join(allowance.operations)}"
            + (f" (naming only {only})" if only else "")
            + f": {allowance.reason}."
        )
    return "\n".join(lines)
