#!/usr/bin/env bash
# `make check-exports`: the Airflow export, run by Apache Airflow itself (kept out of `make test`: the
# Airflow install alone takes a minute or more). Airflow lives in its own virtualenv, .venv/airflow,
# installed once and reused. The DAG is exported from another directory with a relative pipeline path,
# as a user would, and must still run: Airflow's BashOperator starts in a temporary directory.
# Checks: a deliberately broken DAG is reported by `airflow dags list-import-errors` (so the check
# works), the exported DAG has no import error, and `airflow dags test` runs the task to success,
# leaving a succeeded run in the SKYFLOW_HOME the export named.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
AIRFLOW_VERSION=3.3.2
AIRFLOW_DIR=$REPO/.venv/airflow
SKYFLOW=("$REPO/.venv/bin/python" -m skyflow)
started=$(date +%s)

if ! "$AIRFLOW_DIR/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('apache-airflow') != '$AIRFLOW_VERSION')" 2>/dev/null; then
  echo "installing apache-airflow==$AIRFLOW_VERSION into $AIRFLOW_DIR ..."
  rm -rf "$AIRFLOW_DIR"
  python3 -m venv "$AIRFLOW_DIR"
  if ! "$AIRFLOW_DIR/bin/pip" install -q "apache-airflow==$AIRFLOW_VERSION" >"$REPO/.venv/airflow-install.log" 2>&1; then
    tail -20 "$REPO/.venv/airflow-install.log" >&2
    echo "check-exports: could not install apache-airflow==$AIRFLOW_VERSION (log: .venv/airflow-install.log)" >&2
    exit 1
  fi
fi
echo "airflow $("$AIRFLOW_DIR/bin/python" -c "import airflow; print(airflow.__version__)") ready after $(( $(date +%s) - started )) s"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export AIRFLOW_HOME=$WORK/airflow AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__UNIT_TEST_MODE=False
export SKYFLOW_HOME=$WORK/skyflow-home
DAGS=$AIRFLOW_HOME/dags
mkdir -p "$DAGS"
airflow() { "$AIRFLOW_DIR/bin/airflow" "$@"; }

(cd tests/fixtures/schedules && "${SKYFLOW[@]}" schedule export nightly.yaml --format airflow) > "$DAGS/skyflow_nightly.py"
airflow db migrate > "$WORK/migrate.log" 2>&1 || { tail -20 "$WORK/migrate.log" >&2; exit 1; }

# DagBag only parses files that mention both words, so the broken DAG does too.
printf 'from airflow.sdk import DAG\nimport no_such_module_here\n' > "$DAGS/broken_on_purpose.py"
if airflow dags list-import-errors --local -o plain > "$WORK/errors.txt" 2>&1 \
   || ! grep -q no_such_module_here "$WORK/errors.txt"; then
  cat "$WORK/errors.txt" >&2
  echo "check-exports: list-import-errors did not report the broken DAG; the check cannot be trusted" >&2
  exit 1
fi
rm "$DAGS/broken_on_purpose.py"
if ! airflow dags list-import-errors --local -o plain > "$WORK/errors.txt" 2>&1; then
  cat "$WORK/errors.txt" >&2
  echo "check-exports: the exported DAG has import errors" >&2
  exit 1
fi
echo "exported DAG imports cleanly"

if ! airflow dags test skyflow_nightly_export > "$WORK/dagtest.log" 2>&1; then
  grep -v '^\s*$' "$WORK/dagtest.log" | tail -40 >&2
  echo "check-exports: airflow dags test skyflow_nightly_export failed" >&2
  exit 1
fi
runs=$("${SKYFLOW[@]}" runs --json)
echo "skyflow runs: $runs"
if ! "$REPO/.venv/bin/python" - "$runs" <<'EOF'
import json, sys
runs = json.loads(sys.argv[1])
ok = [r for r in runs if r["run_id"].startswith("airflow-manual__") and r["state"] == "succeeded"
      and r["pipeline"] == "nightly-export"]
sys.exit(0 if len(ok) == 1 else 1)
EOF
then
  echo "check-exports: airflow dags test passed but SKYFLOW_HOME holds no succeeded airflow run" >&2
  exit 1
fi
echo "check-exports: the Airflow DAG ran the pipeline under Airflow $AIRFLOW_VERSION ($(( $(date +%s) - started )) s)"
