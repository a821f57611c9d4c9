"""Read-path benchmark: GET /recommendations on one api process beside a bare Sanic + Redis GET."""
