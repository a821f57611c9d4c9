"""What `dramatiq workers.main` loads: the broker and every actor module."""

from workers import broker  # noqa: F401
from workers.actors import (
    analytics,  # noqa: F401
    attribution,  # noqa: F401
    catalog,  # noqa: F401
    housekeeping,  # noqa: F401
    ingest,  # noqa: F401
    mail,  # noqa: F401
    maintenance,  # noqa: F401
    training,  # noqa: F401
    usage,  # noqa: F401
)
