# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test lint bench

run:
	scripts/bootstrap.sh
	.venv/bin/bastion serve

test:
	scripts/bootstrap.sh
	BASTION_TEST_POSTGRES_URL=$${BASTION_TEST_POSTGRES_URL:-$$(scripts/ensure-postgres.sh)} .venv/bin/pytest -q -rs

lint:
	.venv/bin/ruff check .

bench:
	.venv/bin/python bench/gateway_latency.py
