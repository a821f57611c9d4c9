# The two commands: `make up` brings the platform up, `make test` runs the whole test suite.
.PHONY: up down test lint bootstrap chaos multihost

bootstrap:
	@scripts/bootstrap.sh

up:
	@scripts/bootstrap.sh --demo
	@.venv/bin/recomengine up

down:
	@.venv/bin/recomengine down

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test: bootstrap
	@scripts/test.sh

# One million events through the api while processes and servers die; prints what was lost (0).
chaos: bootstrap
	.venv/bin/python -m bench.chaos

# api, two worker hosts and a data host in network namespaces (root); one worker host is cut
# off under load and brought back; prints what was lost (0) and how fast the other took over.
multihost: bootstrap
	.venv/bin/python -m bench.multihost
