#!/usr/bin/env bash
# bench-control: one configuration server (`standby server`, SQLite, its own
# process) under BENCH_AGENTS simulated agents (`standby simulate agents`:
# each joins with its own token and certificate, then heartbeats and reports
# its machine every BENCH_INTERVAL over its own mutual-TLS gRPC connection)
# while BENCH_READERS API readers list and get machines and servers, each
# pausing BENCH_READER_PAUSE between calls (operators and consoles: about 40
# calls a second in all by default, half of them lists of every machine),
# and time every call. The simulator runs on the same 2 cores as the server.
#
# Output: human-readable lines, then
#   BENCH control agents=N api_p99_ms=<list and get calls, p99> server_rss_mib=<largest VmRSS> server_cpu=<cores>
# server_rss_mib and server_cpu are sampled over the measured phase (after
# every agent has reported once).
#
# Environment (defaults in brackets):
#   BENCH_AGENTS     simulated agents [1000]
#   BENCH_INTERVAL   between two heartbeats (and reports) of one agent [1s]
#   BENCH_SECONDS    measured phase [60]
#   BENCH_READERS    concurrent API readers [4]
#   BENCH_READER_PAUSE  each reader's pause between two calls [100ms]
#   BENCH_DIR        parent of the scratch directory [/var/tmp]
#   BENCH_KEEP       1 keeps the scratch directory [0]
#   STANDBY_BIN      the standby binary [bin/standby, built if missing]
set -euo pipefail
cd "$(dirname "$0")/.."

AGENTS=${BENCH_AGENTS:-1000}
INTERVAL=${BENCH_INTERVAL:-1s}
SECONDS_=${BENCH_SECONDS:-60}
READERS=${BENCH_READERS:-4}
PAUSE=${BENCH_READER_PAUSE:-100ms}
PARENT=${BENCH_DIR:-/var/tmp}
KEEP=${BENCH_KEEP:-0}
STANDBY=${STANDBY_BIN:-bin/standby}

say() { echo "bench-control: $*"; }
die() { echo "bench-control: FAIL: $*" >&2; exit 1; }
for v in AGENTS SECONDS_ READERS; do
  [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || die "BENCH_${v%_}=${!v}: want a whole number of at least 1"
done
[ -x "$STANDBY" ] || { say "building $STANDBY"; go build -o "$STANDBY" ./cmd/standby; }

WORK=$(mktemp -d "$PARENT/standby-bench-control.XXXXXX")
SERVER_PID= SAMPLER_PID=
cleanup() {
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && { kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; }
  if [ "$KEEP" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/server.yaml" <<YAML
listen: 127.0.0.1:$PORT
data_dir: $WORK/server
hosts: [127.0.0.1]
log_level: warn
YAML
say "$(nproc) CPUs, $(uname -r); scratch $WORK ($(df -T "$WORK" | awk 'NR==2{print $2}'))"
"$STANDBY" server --config "$WORK/server.yaml" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 200); do
  [ -s "$WORK/server/admin.token" ] && (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server died"; }
  sleep 0.05
done
[ -s "$WORK/server/admin.token" ] || die "the server wrote no admin token"

# Sample the server's RSS and CPU once the measured phase starts: the
# simulator says so in its log ("measuring").
cat >"$WORK/sample.sh" <<'SH'
pid=$1 log=$2 out=$3
until grep -q measuring "$log" 2>/dev/null; do sleep 0.1; kill -0 "$pid" || exit 1; done
t0=$(date +%s.%N); c0=$(awk '{print $14+$15}' /proc/$pid/stat); max=0
while kill -0 "$pid" 2>/dev/null && ! grep -q '"api_p99_ms"' "$log.out" 2>/dev/null; do
  r=$(awk '/VmRSS/{print $2}' /proc/$pid/status); [ "$r" -gt "$max" ] && max=$r
  t1=$(date +%s.%N); c1=$(awk '{print $14+$15}' /proc/$pid/stat)
  echo "$max $(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN{ if (e>s) printf "%.3f", (b-a)/hz/(e-s); else print 0 }')" >"$out"
  sleep 0.5
done
SH
bash "$WORK/sample.sh" "$SERVER_PID" "$WORK/sim.log" "$WORK/sample" &
SAMPLER_PID=$!

say "simulating $AGENTS agents (every $INTERVAL), then ${SECONDS_}s measured with $READERS API readers (pause $PAUSE)"
"$STANDBY" simulate agents --server "https://127.0.0.1:$PORT" --token "$(cat "$WORK/server/admin.token")" \
  --ca "$WORK/server/ca.crt" --dir "$WORK/agents" --agents "$AGENTS" --interval "$INTERVAL" \
  --duration "${SECONDS_}s" --readers "$READERS" --reader-pause "$PAUSE" -o json >"$WORK/sim.log.out" 2>"$WORK/sim.log" ||
  { tail -20 "$WORK/sim.log" >&2; die "the simulation failed"; }
sleep 0.6
read -r rss_kib cpu <"$WORK/sample" || die "no sample of the server"
res=$(cat "$WORK/sim.log.out")
jqn() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])" <<<"$res"; }
say "joined $(jqn agents) agents in $(jqn join_seconds) s"
say "measured $(jqn seconds) s: $(jqn heartbeats) heartbeats, $(jqn reports) reports, $(jqn agent_errors) agent errors, $(jqn late) late; $(jqn api_calls) API calls, p50 $(jqn api_p50_ms) ms, p99 $(jqn api_p99_ms) ms, max $(jqn api_max_ms) ms"
[ "$(jqn agent_errors)" = 0 ] || say "  last agent error: $(jqn last_error)"
say "server: max VmRSS $((rss_kib / 1024)) MiB, cpu $cpu cores (of $(nproc))"
printf 'BENCH control agents=%s api_p99_ms=%.1f server_rss_mib=%.1f server_cpu=%s\n' "$(jqn agents)" "$(jqn api_p99_ms)" "$(awk -v k="$rss_kib" 'BEGIN{print k/1024}')" "$cpu"
