#!/usr/bin/env bash
# Install rehabflow, create the database (SQLite under ./instance unless DATABASE_URL is set),
# and load the demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import workflow" >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.installed ]; then
  pip install --quiet --upgrade pip
  pip install --quiet -e '.[test]'
  touch .venv/.installed
fi
rehabflow definitions validate definitions/*.yaml
rehabflow init-db
rehabflow demo
