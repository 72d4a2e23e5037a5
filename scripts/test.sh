#!/usr/bin/env bash
# Run the whole test suite: SQLite always; PostgreSQL (127.0.0.1:5432, database test) when it
# answers. Creates .venv and installs the project on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import workflow, pytest, hypothesis" >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.installed ]; then
  pip install --quiet --upgrade pip
  pip install --quiet -e '.[test]'
  touch .venv/.installed
fi
ruff check .
# the random examples of the property tests (Hypothesis, derandomized) still depend on the
# hash seed: a run names its seed, so a failure can be replayed with PYTHONHASHSEED=<seed>
export PYTHONHASHSEED="${PYTHONHASHSEED:-$((RANDOM % 4096 + 1))}"
echo "PYTHONHASHSEED=$PYTHONHASHSEED"
exec python -m pytest "$@"
