#!/usr/bin/env bash
# Runs the hot-path benchmarks in one go, so the limits (raw ECDSA signing,
# x509.CreateCertificate) and writ's own figures come from the same machine in
# the same run. Output goes to stdout and bench.out; BENCHMARKS.md records it.
# PostgreSQL figures appear when WRIT_TEST_POSTGRES_DSN is set
# (bash scripts/with-postgres.sh make bench).
set -euo pipefail
cd "$(dirname "$0")/.."
count=${BENCH_COUNT:-3}
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(go version) $(nproc) cores"
  go test -run '^$' -bench . -benchmem -count "$count" ./ca ./identity
  # CheckGRPC also matches CheckGRPCPending (0, then 10,000 pending access requests).
  go test -run '^$' -bench 'Mint|JWT|CheckGRPC' -benchmem -count "$count" ./server
  # Access requests, create -> approve -> the task opens, over mTLS with SVIDs.
  go test -run '^$' -bench 'RequestOpenApprove' -count "$count" ./server
  go test -run '^$' -bench 'Decide' -benchmem -count "$count" ./authz ./authz/guardrail
  # The gateway's HTTP front end: per-request overhead against direct calls, same run.
  go test -run '^$' -bench . -benchmem -count "$count" ./gateway/httpproxy
  # Seeds 15,000 ended and up to 15,000 live tasks in SQLite: minutes per count.
  go test -run '^$' -bench 'DecisionIndexRebuild' -benchmem -count "$count" ./server
  go test -run '^$' -bench 'Create' -benchtime 1x -count "$count" ./server ./store/...
  go test -run '^$' -bench 'AppendAudit' -benchtime 2s -count "$count" ./store/...
  go test -run '^$' -bench 'Verify1M' -benchtime 1x -count "$count" ./audit
  go test -run '^$' -bench 'AuditVerify1M' -benchtime 1x -count 1 ./cmd/writ
  # MCP through the gateway vs. straight to the upstream, alternating in one loop.
  go test -run '^$' -bench 'ToolCall' -benchtime 3000x -count "$count" ./gateway/mcpproxy
  go test -run '^$' -bench 'HoldEndToCut' -benchtime 300x -count "$count" ./gateway/mcpproxy

  # The gateway's TCP proxy against the upstream directly, and lock-to-cut.
  go test -run '^$' -bench 'Throughput|Connect' -benchtime 2s -count "$count" ./gateway/tcpproxy
  go test -run '^$' -bench 'LockToCut' -benchtime 100x -count 1 ./gateway/tcpproxy
  if [ "${BENCH_AGENT:-1}" != 0 ]; then go run ./bench/agentbench; fi
} 2>&1 | tee bench.out
