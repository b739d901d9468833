#!/usr/bin/env bash
# The test suite: lint, types, generated-code freshness, then pytest (unit, integration,
# e2e).
# pytest's exit 5 (nothing collected) is a failure like any other non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check app tests bench
# mypy --strict on app/sycri (configured in pyproject.toml); any error fails the run.
.venv/bin/mypy
.venv/bin/python -m sycri.api.regen --check
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
