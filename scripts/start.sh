#!/usr/bin/env bash
# Install rehabflow, create the database (SQLite under ./instance unless DATABASE_URL is set),
# load the demo data, print an API token and the web password of the demo users, and serve on
# http://127.0.0.1:8080/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import workflow, api" >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.installed ]; then
  pip install --quiet --upgrade pip
  pip install --quiet -e '.[test]'
  touch .venv/.installed
fi
rehabflow definitions validate definitions/*.yaml
rehabflow init-db
rehabflow demo
token=$(rehabflow tokens create commune_police.head --expires-days 30 2>/dev/null | tail -n 1)
echo
echo "Demo API token (commune_police.head of Xã Đô Lương, valid 30 days):"
echo "  $token"
echo "Try: curl -H 'Authorization: Bearer $token' http://127.0.0.1:${PORT:-8080}/api/v1/cases"
echo
password=$(python -c 'from workflow.demo import DEMO_PASSWORD; print(DEMO_PASSWORD)')
echo "Web pages: http://127.0.0.1:${PORT:-8080}/ - sign in as any demo user (commune_police.officer,"
echo "  commune_pc.head (administrator), health_facility.doctor, court.judge, ...) with password: $password"
echo
exec rehabflow serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8080}"
