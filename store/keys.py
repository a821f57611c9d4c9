"""Every Redis key the platform uses; each one contains the tenant id."""

from __future__ import annotations

PREFIX = "reco"
# Stands for a key a script does not use this time.
NO_KEY = f"{PREFIX}:none"


def rate_limit(key_id: str, scope: str, window: int) -> str:
    """Counter of requests of one API key in one fixed window."""
    return f"{PREFIX}:ratelimit:{key_id}:{scope}:{window}"


def auth_throttle(kind: str, subject: str, window: int) -> str:
    """Counter of auth attempts (per account or per IP) in one window."""
    return f"{PREFIX}:authlimit:{kind}:{subject}:{window}"


def api_key_last_used(tenant_id: str) -> str:
    """Hash key id -> last-used unix time, flushed to PostgreSQL by a job."""
    return f"{PREFIX}:{tenant_id}:apikeys:lastused"


API_KEY_LAST_USED_TENANTS = f"{PREFIX}:apikeys:lastused:tenants"
AUTH_INVALIDATION_CHANNEL = f"{PREFIX}:auth:invalidate"
SCHEDULER_LOCK = f"{PREFIX}:scheduler:lock"
# STRING (JSON, expires): the running scheduler's host, pid and last beat.
SCHEDULER_HEARTBEAT = f"{PREFIX}:scheduler:heartbeat"
SCHEDULER_LEADER = f"{PREFIX}:scheduler:leader"


def admin_session_version(admin_id: str) -> str:
    """The admin's current session version (cached from PostgreSQL)."""
    return f"{PREFIX}:admin:{admin_id}:session"


def login_failures(subject: str) -> str:
    """Failed sign-ins of one account from one address (hash: count, last)."""
    return f"{PREFIX}:authlimit:pair:{subject}"


def auth_epoch(tenant_id: str) -> str:
    """Counter bumped whenever a key of the tenant is revoked or the tenant changes status."""
    return f"{PREFIX}:{tenant_id}:auth:epoch"


def catalog_available(tenant_id: str) -> str:
    """SET of the tenant's available product ids."""
    return f"{PREFIX}:{tenant_id}:catalog:available"


def catalog_cards(tenant_id: str) -> str:
    """HASH product id -> JSON card {name, price, currency, imageUrl, url, category, available}
    for every product of the tenant (also unavailable ones), to hydrate in one HMGET."""
    return f"{PREFIX}:{tenant_id}:catalog:cards"


def api_key_rate_limit(tenant_id: str, key_id: str, scope: str, window: int) -> str:
    """Sliding-window ZSET of one API key's requests of `scope` (read/write) in `window` s."""
    return f"{PREFIX}:{tenant_id}:ratelimit:{key_id}:{scope}:{window}"


def events_seen(tenant_id: str, day: str) -> str:
    """SET of 16-byte dedupe digests of events of UTC day `day` (YYYYMMDD) already applied to
    the projections: the guard against double counting and the api's duplicate pre-check."""
    return f"{PREFIX}:{tenant_id}:events:seen:{day}"


def event_client_ids(tenant_id: str, day: str) -> str:
    """SET of client eventIds applied on processing day `day` (YYYYMMDD), for the pre-check."""
    return f"{PREFIX}:{tenant_id}:events:ids:{day}"


def attributions_applied(tenant_id: str, day: str) -> str:
    """SET of purchase event ids (UTC day `day`) whose attribution is already counted."""
    return f"{PREFIX}:{tenant_id}:attributed:{day}"


def realtime_counters(tenant_id: str, day: str) -> str:
    """HASH of real-time counters of UTC day `day` (YYYYMMDD): fields `metric`,
    `metric|placementId|strategy` and `exp|experimentId|variant|metric`."""
    return f"{PREFIX}:{tenant_id}:counters:{day}"


def active_users(tenant_id: str, day: str) -> str:
    """HyperLogLog of the user ids active on UTC day `day` (YYYYMMDD)."""
    return f"{PREFIX}:{tenant_id}:users:{day}"


def user_history(tenant_id: str, user_id: str) -> str:
    """ZSET `eventType|productId` -> unix time of the user's last ~100 interactions."""
    return f"{PREFIX}:{tenant_id}:history:{user_id}"


def user_purchased(tenant_id: str, user_id: str) -> str:
    """SET of product ids the user has bought."""
    return f"{PREFIX}:{tenant_id}:purchased:{user_id}"


def trending_hour(tenant_id: str, hour: str) -> str:
    """ZSET product id -> weighted interactions in UTC hour `hour` (YYYYMMDDHH)."""
    return f"{PREFIX}:{tenant_id}:trending:{hour}"


def model_current(tenant_id: str) -> str:
    """STRING: the version of the tenant's published models that readers use."""
    return f"{PREFIX}:{tenant_id}:model:current"


def model_prefix(tenant_id: str) -> str:
    """Prefix of one published model version's keys: `<prefix><version>:<part>`."""
    return f"{PREFIX}:{tenant_id}:m:"


def model_versions(tenant_id: str) -> str:
    """HASH version -> JSON record {version, status, trainedAt, seconds, sizes, metrics, gate,
    evaluation} of the tenant's recent model versions (published, previous, rejected)."""
    return f"{PREFIX}:{tenant_id}:model:versions"


def training_runs(tenant_id: str) -> str:
    """HASH: the last full and incremental retrain (when, how long) and failures so far."""
    return f"{PREFIX}:{tenant_id}:training:runs"


def touched_users(tenant_id: str) -> str:
    """SET of users with new events since the last incremental retrain."""
    return f"{PREFIX}:{tenant_id}:touched:users"


def widget_config(tenant_id: str, placement_id: str) -> str:
    """STRING: JSON widget config of one placement (read by the recommendations endpoint)."""
    return f"{PREFIX}:{tenant_id}:widget:{placement_id}"


def running_experiment(tenant_id: str, placement_id: str) -> str:
    """STRING: JSON {experimentId, controlStrategy, variantStrategy, trafficSplit} of the
    experiment running on one placement, absent when none runs."""
    return f"{PREFIX}:{tenant_id}:experiment:running:{placement_id}"


def answer_cache(tenant_id: str, user_id: str, query_digest: str) -> str:
    """STRING: one finished GET /recommendations answer (its stamp, then the body), TTL'd."""
    return f"{PREFIX}:{tenant_id}:answer:{user_id}:{query_digest}"


def serving_stamp(tenant_id: str) -> str:
    """Counter bumped by every write that changes answers of many users at once (catalog cards
    and availability, content neighbours, incrementally rescored users)."""
    return f"{PREFIX}:{tenant_id}:serving:stamp"


def trending_stamp(tenant_id: str) -> str:
    """HASH {n: counter} bumped by every stored event that feeds the live trending counters."""
    return f"{PREFIX}:{tenant_id}:trending:stamp"


def user_stamp(tenant_id: str, user_id: str) -> str:
    """HASH {n: counter} bumped by every stored event of the user: their answers are stale."""
    return f"{PREFIX}:{tenant_id}:userstamp:{user_id}"


def content_model_dirty(tenant_id: str) -> str:
    """STRING: unix time of the latest catalog change the content model has not absorbed yet."""
    return f"{PREFIX}:{tenant_id}:model:content:dirty"


def content_refresh_pending(tenant_id: str) -> str:
    """STRING set NX with a TTL: a content-model refresh is already queued for the tenant."""
    return f"{PREFIX}:{tenant_id}:model:content:refresh-pending"


def realtime_product_counters(tenant_id: str, day: str) -> str:
    """HASH of per-product real-time counters of UTC day `day` (YYYYMMDD): fields
    `i|productId` impressions, `c|productId` clicks, `v|productId` purchases (integers) and
    `r|productId` purchase revenue (float)."""
    return f"{PREFIX}:{tenant_id}:counters:{day}:products"


def user_answers(tenant_id: str, user_id: str) -> str:
    """HASH requested strategy (or `@default`) -> the user's projected answer (store.answers),
    kept while the user keeps asking (TTL'd)."""
    return f"{PREFIX}:{tenant_id}:answers:user:{user_id}"


def product_answers(tenant_id: str, product_id: str) -> str:
    """HASH requested strategy (or `@default`) -> the projected item-context answer of one
    product (store.answers), kept while it is asked for (TTL'd)."""
    return f"{PREFIX}:{tenant_id}:answers:product:{product_id}"


def tenant_answers(tenant_id: str) -> str:
    """HASH `trending` (and `trending@{category}`) -> the tenant's trending answer, ranked and
    hydrated (store.answers): what trending requests and shoppers without events are served."""
    return f"{PREFIX}:{tenant_id}:answers:tenant"


def answer_readers(tenant_id: str) -> str:
    """SET of the users who have projected answers: the ingest worker rewrites theirs only."""
    return f"{PREFIX}:{tenant_id}:answers:readers"


def usage_meter(tenant_id: str, month: str) -> str:
    """HASH of the tenant's metered usage in one UTC month (YYYYMM): per environment and metric
    a month total and one field per day (store.usage)."""
    return f"{PREFIX}:{tenant_id}:usage:{month}"


def tenant_rate_limit(tenant_id: str, environment: str, scope: str, window: int) -> str:
    """Sliding-window ZSET of the requests of `scope` of all the tenant's keys of one
    environment (live / test) in `window` s: the budget they share."""
    return f"{PREFIX}:{tenant_id}:ratelimit:tenant:{environment}:{scope}:{window}"
