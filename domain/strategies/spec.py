"""What a strategy tells the rest of the platform about itself: the lists it publishes, how it
trains them, when it is ready, how the offline evaluation scores it (and the publish gate
holds it), which lists a catalog change rebuilds, what the cold-start policy needs of it and
how serving reads its candidates. A strategy's module builds one StrategySpec;
domain.strategies.registry lists them, and training, evaluation, the publish gate, the
catalog refresh, the cold-start policy and serving ask the registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from domain.interactions import InteractionData

# (productId, score, because)
Candidate = tuple[str, float, tuple[str, ...]]
# A published list entry: [productId, score, [because...]]
Entry = list[Any]
# A strategy's part in the cold-start policy: `similar` answers products without interactions
# and users whose strategy is not ready (from the catalog); `last_resort` answers everyone
# else (and is never reported as a fallback when asked for).
Role = Literal["", "similar", "last_resort"]


@dataclass(frozen=True, slots=True)
class ServedList:
    """A list a published model holds for serving: `name` in ServingContext.lists, read from
    the version's hash `suffix` by the user's id, the product's id, or whole (`tenant`)."""

    name: str
    suffix: str
    key: Literal["user", "product", "tenant"]


@dataclass(frozen=True, slots=True)
class TrainingInputs:
    """What a training run gives every strategy: one tenant's interactions and catalog."""

    data: InteractionData
    catalog: Sequence[Mapping[str, Any]]
    now: float  # unix time of the run

    @property
    def catalog_products(self) -> int:
        """Products in the catalog."""
        return len(self.catalog)


@dataclass(frozen=True, slots=True)
class Readiness:
    """What a strategy counted in a tenant's data, and the minimum of each count."""

    counts: dict[str, int]
    thresholds: dict[str, int]


@dataclass(frozen=True, slots=True)
class Evaluated:
    """How the offline evaluation (domain.evaluation) scores a strategy on a time split.

    `lists(split, catalog)` returns an int array of shape (rows, K) of product indexes of the
    split's training data (-1: none): one row per scored user (`per` "user", in the order of
    `split.eval_rows`, against what each went on to want) or per held-out basket anchor (`per`
    "anchor", in the order of `split.anchors`, against the rest of its basket). Each is
    reported beside the popularity baseline of its protocol; the publish gate holds every
    evaluated strategy to its published version, and to that baseline when
    `beats_popularity` (strategies that learn from interactions must beat the crowd).
    """

    lists: Callable[[Any, Sequence[Mapping[str, Any]]], Any]
    per: Literal["user", "anchor"] = "user"
    needs_catalog: bool = False  # skipped for a tenant without catalog
    beats_popularity: bool = False


# A catalog refresh: the lists (by `suffix`, as `train` returns them) rebuilt from the catalog
# alone, swapped into the published version without a retrain.
CatalogRefresh = Callable[[Sequence[Mapping[str, Any]]], Mapping[str, Any]]


def _nothing(_context: Any) -> Sequence[Candidate]:
    return ()


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """One strategy as the platform sees it.

    `train` returns the lists it publishes by their `suffix`: a mapping id -> entries for a
    list keyed by user or product, or the entries themselves for a `tenant` list.
    `user_candidates` ranks a user's candidates from the request's ServingContext (the served
    lists by name, the user's history); `product_list` names the list that answers a product.
    """

    name: str
    lists: tuple[ServedList, ...]
    train: Callable[[TrainingInputs], Mapping[str, Any]]
    readiness: Callable[[TrainingInputs], Readiness]
    user_candidates: Callable[[Any], Sequence[Candidate]] = _nothing
    product_list: str | None = None
    # Cold-start policy: a user with fewer events gets the last resort (0: anyone is served).
    min_user_events: int = 1
    # Item context needs the anchor product to have interactions (else `similar` answers).
    needs_product_interactions: bool = False
    # Only answers in item context: a request without a product gets the last resort.
    needs_product: bool = False
    role: Role = ""
    # Its ranked answers are projected per product (item context) for the lookup to filter.
    projected_for_products: bool = False
    # Its answer is one list per tenant (and per category), the same for every shopper.
    projected_for_tenant: bool = False
    # How the offline evaluation scores it (None: not evaluated, and so never gated).
    evaluation: Evaluated | None = None
    # What a catalog change rebuilds without a retrain (None: its lists wait for the next one).
    catalog_refresh: CatalogRefresh | None = None

    def assess(self, inputs: TrainingInputs) -> tuple[bool, Readiness]:
        """Whether every count reaches its minimum, and the counts."""
        found = self.readiness(inputs)
        return all(found.counts[k] >= v for k, v in found.thresholds.items()), found
