"""The strategy registry: training, publishing, the cold-start policy, serving and the api ask
it what strategies there are and what each needs, rather than naming them.

A strategy is its module (or folder) under domain/strategies, which builds a StrategySpec
(domain.strategies.spec), plus its line in BUILT_IN below. `register` adds one at run time
(a plug-in, or a test).
"""

from __future__ import annotations

from domain.strategies import collaborative, content, fbt, trending
from domain.strategies.spec import ServedList, StrategySpec

# Registration order is training order (the largest model first: it is let go before the
# next strategy is fitted).
BUILT_IN: tuple[StrategySpec, ...] = (
    collaborative.SPEC,
    content.SPEC,
    fbt.SPEC,
    trending.SPEC,
)

_registered: dict[str, StrategySpec] = {spec.name: spec for spec in BUILT_IN}


def register(spec: StrategySpec) -> StrategySpec:
    """Add a strategy (or replace the one of the same name); returns it."""
    _registered[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a strategy added by `register` (the built-in ones stay)."""
    if name not in {spec.name for spec in BUILT_IN}:
        _registered.pop(name, None)


def strategies() -> tuple[StrategySpec, ...]:
    """Every registered strategy, in registration order."""
    return tuple(_registered.values())


def strategy_names() -> tuple[str, ...]:
    """The names of every registered strategy."""
    return tuple(_registered)


def spec_of(name: str) -> StrategySpec:
    """The strategy called `name` (ValueError when none is)."""
    spec = _registered.get(name)
    if spec is None:
        raise ValueError(f"unknown strategy {name!r}")
    return spec


def with_role(role: str) -> StrategySpec:
    """The strategy that plays `role` in the cold-start policy (similar, last_resort)."""
    for spec in _registered.values():
        if spec.role == role:
            return spec
    raise LookupError(f"no strategy plays {role!r}")


def served_lists() -> tuple[ServedList, ...]:
    """Every list the registered strategies publish for serving."""
    return tuple(lst for spec in _registered.values() for lst in spec.lists)


def projected_product_strategies() -> tuple[str, ...]:
    """Strategies whose item-context answers are projected per product."""
    return tuple(s.name for s in _registered.values() if s.projected_for_products)


def tenant_projected_strategies() -> tuple[str, ...]:
    """Strategies whose answer is one projected list per tenant."""
    return tuple(s.name for s in _registered.values() if s.projected_for_tenant)


# The built-in names, for the api's documented enums (fixed when the api starts).
STRATEGY_NAMES: tuple[str, ...] = tuple(spec.name for spec in BUILT_IN)
REGISTRY = BUILT_IN
