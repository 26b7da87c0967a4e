# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test lint bench docs ts-client

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

# Regenerate the TypeScript client from the gateway's OpenAPI document (tests/client/test_typescript_client.py fails
# while the committed one is stale).
ts-client:
	scripts/bootstrap.sh --dev --no-setup
	cd clients/typescript && npm ci --no-audit --no-fund
	.venv/bin/python clients/typescript/scripts/export_openapi.py > clients/typescript/openapi.json
	cd clients/typescript && npm run generate && npm run build
