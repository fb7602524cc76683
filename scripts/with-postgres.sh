#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster: WRIT_TEST_POSTGRES_DSN
# points at it while the command runs, and the cluster is removed afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
eval "$(bash "$here/pg-test-cluster.sh" start)"
trap 'bash "$here/pg-test-cluster.sh" stop "$WRIT_TEST_POSTGRES_DIR"' EXIT
"$@"
