# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test lint bench docs

run:
	scripts/bootstrap.sh
	.venv/bin/bastion serve

test:
	scripts/bootstrap.sh --dev
	BASTION_TEST_POSTGRES_URL=$${BASTION_TEST_POSTGRES_URL:-$$(scripts/ensure-postgres.sh)} .venv/bin/pytest -q -rs

lint:
	scripts/bootstrap.sh --dev --no-setup
	.venv/bin/ruff check .

bench:
	.venv/bin/python bench/gateway_latency.py

docs:
	scripts/bootstrap.sh --dev --no-setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet -d build/site
	@echo "docs: build/site/index.html"
