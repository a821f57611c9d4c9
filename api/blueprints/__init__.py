"""One blueprint per area; the app registers them all."""

from api.blueprints import (
    analytics,
    api_keys,
    auth,
    catalog,
    events,
    experiments,
    health,
    models,
    operations,
    recommendations,
    tenants,
    usage,
    users,
    widgets,
)

ALL_BLUEPRINTS = [
    health.bp,
    auth.bp,
    tenants.bp,
    api_keys.bp,
    events.bp,
    events.metrics_bp,
    catalog.bp,
    recommendations.bp,
    widgets.bp,
    experiments.bp,
    analytics.bp,
    operations.bp,
    users.bp,
    models.bp,
    usage.bp,
]
