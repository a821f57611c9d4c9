"""What `dramatiq workers.main` loads: the broker and every actor module."""

from workers import broker  # noqa: F401
from workers.actors import attribution  # noqa: F401
from workers.actors import catalog  # noqa: F401
from workers.actors import housekeeping  # noqa: F401
from workers.actors import ingest  # noqa: F401
from workers.actors import mail  # noqa: F401
from workers.actors import maintenance  # noqa: F401
from workers.actors import training  # noqa: F401
