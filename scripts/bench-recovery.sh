#!/usr/bin/env bash
# bench-recovery: recovery operations through the configuration server,
# every role its own process on this machine (server, master target with
# exports and the exec machine driver, process server, two agents):
#
#   test failover  for a machine with a 1 GiB disk (BENCH_DATA of data) and
#                  one with a 64 GiB sparse disk: from the API call to the
#                  replica machine running on the exported point, as the
#                  master target reports it (machine.test.report.reported_at
#                  - machine.test.requested_at); the replica machine is the
#                  exec driver's script, which reads the first 4 KiB of
#                  each disk through the export before it says it runs
#   failover       the 1 GiB machine, after its agent is SIGKILLed: from
#                  the API call to the replica machine running on a usable
#                  export (fenced first; the status polled every 50 ms),
#                  and from the call to the hydrated standalone image
#                  complete, against `cat` of the source image (page cache
#                  dropped before each)
#   re-protect     the failed-over 1 GiB machine writes 2048 scattered
#                  4 KiB blocks of random data through its export; the old
#                  primary's agent is restarted, and the machine is
#                  re-protected to a second master target, in place over
#                  the old primary's disk: the bytes the reverse agent
#                  sent, against the bytes of the 64 KiB blocks in which
#                  the old disk and the export differ (counted by this
#                  script, comparing the two images)
#
# Output: human-readable lines, then
#   BENCH recovery test_failover_s_1g=.. test_failover_s_64g=.. failover_export_s=.. hydrate_ratio_vs_read=.. reprotect_wire_ratio=..
#
# Environment (defaults in brackets):
#   BENCH_DATA     data written on the 1 GiB disk before protection [256M]
#   BENCH_DIR      parent of the scratch directory [/var/tmp]
#   BENCH_KEEP     1 keeps the scratch directory [0]
#   BENCH_TIMEOUT  seconds any wait may take [300]
#   STANDBY_BIN    the standby binary [bin/standby, built if missing]
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${BENCH_DATA:-256M}
PARENT=${BENCH_DIR:-/var/tmp}
KEEP=${BENCH_KEEP:-0}
TIMEOUT=${BENCH_TIMEOUT:-300}
STANDBY=${STANDBY_BIN:-bin/standby}
STANDBY=$(readlink -f "$STANDBY" 2>/dev/null || echo "$STANDBY")

say() { echo "bench-recovery: $*"; }
die() { echo "bench-recovery: FAIL: $*" >&2; exit 1; }
for t in nbdinfo nbdcopy qemu-io jq python3 curl; do command -v $t >/dev/null || die "$t is needed (libnbd-bin, qemu-utils, jq, python3, curl)"; done
[ -x "$STANDBY" ] || { say "building $STANDBY"; go build -o bin/standby ./cmd/standby; STANDBY=$(readlink -f bin/standby); }

WORK=$(mktemp -d "$PARENT/standby-bench-recovery.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  pkill -P $$ sleep 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b - a}'; }
secs() { date -d "$1" +%s.%N; } # RFC 3339 -> epoch seconds

# --- the configuration server ------------------------------------------------
SP=$(port)
SERVER=https://127.0.0.1:$SP
cat >"$WORK/server.yaml" <<EOF
listen: 127.0.0.1:$SP
data_dir: $WORK/server
hosts: [127.0.0.1]
log_level: warn
EOF
"$STANDBY" server --config "$WORK/server.yaml" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$WORK/server/admin.token" ] && (echo >"/dev/tcp/127.0.0.1/$SP") 2>/dev/null && break; sleep 0.05; done
[ -s "$WORK/server/admin.token" ] || die "the server did not start: $(tail -5 "$WORK/server.log")"
export STANDBY_SERVER=$SERVER STANDBY_CA=$WORK/server/ca.crt STANDBY_TOKEN
STANDBY_TOKEN=$(cat "$WORK/server/admin.token")
cli() { "$STANDBY" "$@"; }
join() { # ROLE NAME [ADDRESS]
  local tok
  tok=$(cli token create --role "$1" --ttl 10m | head -1)
  cli "$1" join --server "$SERVER" --token - --dir "$WORK/id-$2" --name "$2" ${3:+--address "$3"} <<<"$tok" >/dev/null
}
control() { printf 'control:\n  server: %s\n  identity: %s\n  heartbeat: 1s\n' "$SERVER" "$WORK/id-$1"; }

# --- the replica machine: a sleep process that reads its disks first --------
cat >"$WORK/vm" <<'EOF'
#!/bin/sh
set -eu
cmd=$1; shift
case $cmd in
start)
  for u in "$@"; do nbdinfo --size "$u" >/dev/null; done   # the export answers
  sleep 3600 >/dev/null 2>&1 </dev/null &
  echo $! > "$STATE/$STANDBY_MACHINE.pid"
  echo "$STANDBY_MACHINE" ;;
stop)
  [ -f "$STATE/$1.pid" ] && kill "$(cat "$STATE/$1.pid")" 2>/dev/null || true
  rm -f "$STATE/$1.pid" ;;
status)
  [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null && { echo running; exit 0; }
  exit 3 ;;
esac
EOF
chmod +x "$WORK/vm"
mkdir -p "$WORK/vmstate"

# --- master target and process server -----------------------------------------
TP=$(port); TS=$(port); PP=$(port); PS=$(port)
join target mt1 "127.0.0.1:$TP"
join process ps1 "127.0.0.1:$PP"
{ cat <<EOF
listen: 127.0.0.1:$TP
data_dir: $WORK/target
status: 127.0.0.1:$TS
log_level: warn
exports:
  unix: $WORK/exports.sock
driver:
  name: exec
  settings:
    start: [$WORK/vm, start]
    stop: [$WORK/vm, stop]
    status: [$WORK/vm, status]
    env: [STATE=$WORK/vmstate]
    timeout: 1m
EOF
  control mt1; } >"$WORK/target.yaml"
{ printf 'listen: 127.0.0.1:%s\ncache_dir: %s\ncache_quota: 4GiB\nstatus: 127.0.0.1:%s\nlog_level: warn\n' "$PP" "$WORK/cache" "$PS"; control ps1; } >"$WORK/process.yaml"
"$STANDBY" target --config "$WORK/target.yaml" >"$WORK/target.log" 2>&1 &
PIDS+=($!)
"$STANDBY" process --config "$WORK/process.yaml" >"$WORK/process.log" 2>&1 &
PIDS+=($!)

# --- two agents: 1 GiB with data, 64 GiB sparse --------------------------------
declare -A AGENT_PID AGENT_ST DISK
start_agent() { # NAME
  local n=$1
  "$STANDBY" agent --config "$WORK/$n.yaml" >>"$WORK/$n.log" 2>&1 &
  AGENT_PID[$n]=$!
  PIDS+=($!)
}
for n in m1g m64g; do
  join agent "host-$n"
  DISK[$n]=$WORK/$n.img
  AGENT_ST[$n]=127.0.0.1:$(port)
  { printf 'machine: %s\nstate_dir: %s\nlisten:\n  unix: %s\ndisks:\n  - name: vda\n    path: %s\nstatus: %s\nlog_level: warn\n' \
      "$n" "$WORK/agent-$n" "$WORK/$n.sock" "${DISK[$n]}" "${AGENT_ST[$n]}"; control "host-$n"; } >"$WORK/$n.yaml"
done
truncate -s 1G "${DISK[m1g]}"
head -c "$DATA" /dev/urandom | dd of="${DISK[m1g]}" conv=notrunc status=none
truncate -s 64G "${DISK[m64g]}"
echo "standby bench-recovery marker" | dd of="${DISK[m64g]}" bs=1M seek=32768 conv=notrunc status=none
start_agent m1g
start_agent m64g

wait_for() { # WHAT CMD...
  local what=$1; shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out waiting for $what"
    sleep 0.2
  done
}
both_reported() { cli machines show m1g -o json | jq -e .name && cli machines show m64g -o json | jq -e .name; }
wait_for "the agents to report" both_reported
cli groups create bench --policy '{"point_interval": "2s", "rpo_threshold": "30s"}' >/dev/null
for n in m1g m64g; do
  t0=$(now)
  cli machines protect "$n" --group bench --wait >/dev/null 2>&1 || die "protect $n: $(cli machines show "$n")"
  say "$n protected in $(elapsed "$t0" "$(now)") s"
done

# A point that holds everything written so far.
has_bench_point() { cli machines points "$1" -o json | jq -e '[.points[] | select(.label == "bench")] | length > 0'; }
bookmark_point() { # NAME
  curl -fsS -X POST "http://${AGENT_ST[$1]}/bookmark?label=bench" >/dev/null
  wait_for "a point on $1" has_bench_point "$1"
}

# --- test failover ------------------------------------------------------------
test_failover() { # NAME -> prints seconds
  local n=$1 out req rep
  bookmark_point "$n"
  local c0 c1
  c0=$(now)
  out=$(cli machines test-failover "$n" --point latest --wait -o json 2>&1) || die "test failover of $n: $out"
  c1=$(now)
  echo "bench-recovery:   (the CLI's --wait returned after $(elapsed "$c0" "$c1") s)" >&2
  local m
  m=$(cli machines show "$n" -o json)
  req=$(jq -r '.test.requested_at' <<<"$m")
  rep=$(jq -r '.test.report.reported_at' <<<"$m")
  [ "$(jq -r '.test.report.phase' <<<"$m")" = running ] || die "test failover of $n: not running: $(jq -c .test <<<"$m")"
  elapsed "$(secs "$req")" "$(secs "$rep")"
  cli machines test-cleanup "$n" --wait >/dev/null 2>&1 || die "test cleanup of $n"
}
tf1=$(test_failover m1g)
say "test failover, 1 GiB disk: replica machine running on the exported point $tf1 s after the API call"
tf64=$(test_failover m64g)
say "test failover, 64 GiB sparse disk: $tf64 s"
line="BENCH recovery test_failover_s_1g=$tf1 test_failover_s_64g=$tf64"

# --- failover and hydration ----------------------------------------------------
bookmark_point m1g
kill -9 "${AGENT_PID[m1g]}" 2>/dev/null || true   # the primary site is lost
wait "${AGENT_PID[m1g]}" 2>/dev/null || true
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); cat "${DISK[m1g]}" >/dev/null; read_s=$(elapsed "$t0" "$(now)")
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
# Without --wait: the export is usable when the target reports the
# replica machine running on it; the status is polled every 50 ms.
t0=$(now)
cli machines failover m1g --point latest >/dev/null || die "failover: $(cli machines show m1g)"
deadline=$((SECONDS + TIMEOUT))
until [ "$(cli machines show m1g -o json | jq -r '.failover.report.phase // ""')" = running ]; do
  [ $SECONDS -lt $deadline ] || die "failover: not running after ${TIMEOUT}s: $(cli machines show m1g)"
  sleep 0.05
done
fo=$(elapsed "$t0" "$(now)")
say "failover, 1 GiB disk: fenced, exported and the replica machine running $fo s after the API call (status polled every 50 ms)"
hydrated() { cli machines show m1g -o json | jq -e '.failover.report.hydration.complete == true'; }
wait_for "hydration" hydrated
m=$(cli machines show m1g -o json)
hy=$(elapsed "$(secs "$(jq -r '.failover.requested_at' <<<"$m")")" "$(secs "$(jq -r '.failover.report.hydration.completed_at' <<<"$m")")")
say "hydration of the 1 GiB disk ($DATA of data) to a standalone image: $hy s from the failover call; cat of the source image: $read_s s"
line="$line failover_export_s=$fo hydrate_ratio_vs_read=$(awk -v a="$hy" -v b="$read_s" 'BEGIN{printf "%.3f", a / b}')"

# --- re-protect ------------------------------------------------------------------
# The failed-over machine writes 2048 scattered 4 KiB blocks of random data.
EXPORT_URI="nbd+unix:///failover-m1g/vda?socket=$WORK/exports.sock"
python3 - "$WORK/writes.qio" <<'PY'
import random, sys
random.seed(7)
offs = random.sample(range(0, (1 << 30) // 4096), 2048)
with open(sys.argv[1], "w") as f:
    for o in offs:
        f.write("write -P %d %d 4k\n" % (random.randrange(1, 256), o * 4096))
    f.write("flush\n")
PY
qemu-io -f raw "$EXPORT_URI" <"$WORK/writes.qio" >/dev/null || die "the replica machine's writes through the export"
# What differs, counted here: 64 KiB blocks of the old primary's disk and
# of the export.
nbdcopy "$EXPORT_URI" "$WORK/export.img"
differ=$(python3 - "${DISK[m1g]}" "$WORK/export.img" <<'PY'
import sys
n = 0
with open(sys.argv[1], "rb") as a, open(sys.argv[2], "rb") as b:
    while True:
        x, y = a.read(65536), b.read(65536)
        if not x and not y:
            break
        if x != y:
            n += 65536
print(n)
PY
)
rm -f "$WORK/export.img"
say "re-protect: the old primary's disk and the failed-over machine's differ in $differ bytes of 64 KiB blocks"
# The second master target, at the primary site; the old primary's agent
# comes back (fenced) and gives its disk as the seed.
T2P=$(port); T2S=$(port)
join target mt2 "127.0.0.1:$T2P"
{ printf 'listen: 127.0.0.1:%s\ndata_dir: %s\nstatus: 127.0.0.1:%s\nlog_level: warn\n' "$T2P" "$WORK/target2" "$T2S"; control mt2; } >"$WORK/target2.yaml"
"$STANDBY" target --config "$WORK/target2.yaml" >"$WORK/target2.log" 2>&1 &
PIDS+=($!)
start_agent m1g
mt2_up() { cli servers list | grep -q "127.0.0.1:$T2P"; }
wait_for "mt2 to heartbeat" mt2_up
fenced_reported() { cli machines show m1g -o json | jq -e '.disks[0].path != null and .replication.state == "fenced"'; }
wait_for "the old primary's agent to report" fenced_reported
t0=$(now)
out=$(cli machines reprotect m1g --target mt2 --force --wait 2>&1) || die "re-protect: $out"
rp=$(elapsed "$t0" "$(now)")
m=$(cli machines show m1g -o json)
sent=$(jq -r '.reverse.report.sent_bytes' <<<"$m")
found=$(jq -r '.reverse.report.resync_bytes' <<<"$m")
say "re-protect: protected in reverse in $rp s; the comparison found $found bytes differing, the reverse agent sent $sent bytes"
line="$line reprotect_wire_ratio=$(awk -v a="$sent" -v b="$differ" 'BEGIN{printf "%.3f", a / b}')"
echo "$line"
