#!/usr/bin/env bash
# bench-replication: the three replication roles (agent, process server,
# master target) on loopback with mutual TLS, against rsync and restic, in
# one run:
#
#   image    a BENCH_SIZE disk image whose first BENCH_FILL bytes are a tar
#            stream of /usr/lib and /usr/share (repeated if short), the rest
#            sparse: realistic, partly compressible data
#   initial  the agent starts on the image with an empty master target; time
#            from its start to replication state "protected" (the agent's
#            state_since; its status is polled every 0.5 s only), against
#            `cat IMAGE > /dev/null` and against the floor of this machine,
#            `cp --sparse=always IMAGE` to the same filesystem then `sync`
#            (page cache dropped before each). The data goes as a copy
#            straight into the new replica's images.
#   delta    BENCH_DELTA of 4 KiB writes at random 4 KiB-aligned offsets over
#            the whole disk (fio randwrite, norandommap, fixed seed, fresh
#            random content per write) through the agent's NBD export; time
#            from fio's first write submission (its latency log) until the
#            master target holds a recovery point (a bookmark taken after the
#            last write). The changed image is then copied to a plain file
#            and shipped by the peers:
#              rsync   --inplace --no-whole-file to an rsync daemon on
#                      loopback whose module holds the pre-change image
#              restic  incremental `restic backup` to a local repository
#                      that already holds a backup of the pre-change image
#            Page cache is dropped before each of the three timings.
#   churn    fio randwrite through the agent at each rate of
#            BENCH_CHURN_RATES for BENCH_CHURN_SECONDS: the agent's achieved
#            RPO (GET /status rpo_seconds) sampled every 0.5 s on average
#            (jittered 0.3..0.7 s: a fixed 0.5 s period locks onto the 500 ms
#            ship interval and always sees the same point of the RPO
#            sawtooth), whether the backlog grows, agent RSS and CPU. Between
#            rates the replica is let catch up.
#
# Output: human-readable lines, then
#   BENCH delta speedup_vs_rsync=<rsync s / standby s> speedup_vs_restic=<restic s / standby s> wire_ratio=<agent sent bytes / bytes changed>
#   BENCH initial ratio_vs_read=<agent start..protected s / cat s> ratio_vs_copy=<… / cp+sync s>
#   BENCH churn rate_mbps=R rpo_p50_s=.. rpo_p99_s=.. backlog_growing=0|1 agent_rss_mib=.. agent_cpu=..   (one per rate)
# wire_ratio counts the journal bytes the agent sent (records, headers,
# bookmarks; before the process server's packing and compression) over the
# payload bytes written. backlog_growing is 1 when the mean of the last third
# of the samples exceeds 1.5 x the mean of the first third plus a slack, for
# the agent's unshipped journal (journal_bytes + dirty_bytes; slack 2 journal
# segments) or for the records not yet applied at the master target (capture
# pos - applied; slack 2 s of writes). agent_rss_mib is the largest VmRSS
# sampled during the rate's run; agent_cpu is (utime+stime) / wall over it,
# in cores. Rates are fio's --rate=Rm (MiB/s: fio's default kb_base=1024).
#
# Environment (defaults in brackets):
#   BENCH_SIZE           size of the disk image, as for truncate(1) [4G]
#   BENCH_FILL           bytes of data at the start of the image [2G]
#   BENCH_DELTA          bytes of 4 KiB random writes for the delta test [64m]
#   BENCH_CHURN_RATES    fio rates in MiB/s for the churn test [20 50 100]
#   BENCH_CHURN_SECONDS  seconds of fio per rate [60]
#   BENCH_CHURN_BS       fio block size of the churn writes [64k]
#   BENCH_JOURNAL_LIMIT  agent journal limit [1GiB, the product's default]
#   BENCH_CACHE_QUOTA    process server cache quota [16GiB]
#   BENCH_DROP_CACHES    1 drops the page cache before timed phases [1]
#   BENCH_DIR            parent of the scratch directory; must be a real disk
#                        filesystem, not tmpfs [/var/tmp]
#   BENCH_START_TIMEOUT  seconds a role may take to answer on its listeners [30]
#   BENCH_TIMEOUT        seconds any replication wait may take [900]
#   BENCH_KEEP           1 keeps the scratch directory (logs, configs, samples) [0]
#   BENCH_ONLY           "initial" runs the initial replication only (no peers
#                        but cat and cp, no delta or churn) []
#   STANDBY_BIN          the standby binary [bin/standby, built if missing]
#
# Quick check:  BENCH_SIZE=512M BENCH_FILL=256M BENCH_CHURN_SECONDS=5 ./scripts/bench-replication.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${BENCH_SIZE:-4G}
FILL=${BENCH_FILL:-2G}
DELTA=${BENCH_DELTA:-64m}
read -r -a RATES <<<"${BENCH_CHURN_RATES:-20 50 100}"
CHURN_SECONDS=${BENCH_CHURN_SECONDS:-60}
CHURN_BS=${BENCH_CHURN_BS:-64k}
JOURNAL_LIMIT=${BENCH_JOURNAL_LIMIT:-1GiB}
CACHE_QUOTA=${BENCH_CACHE_QUOTA:-16GiB}
DROP=${BENCH_DROP_CACHES:-1}
PARENT=${BENCH_DIR:-/var/tmp}
START_TIMEOUT=${BENCH_START_TIMEOUT:-30}
TIMEOUT=${BENCH_TIMEOUT:-900}
KEEP=${BENCH_KEEP:-0}
ONLY=${BENCH_ONLY:-}
case "$ONLY" in "" | initial) ;; *) echo "bench-replication: BENCH_ONLY=$ONLY: allowed: initial, or empty" >&2; exit 2 ;; esac
STANDBY=${STANDBY_BIN:-bin/standby}
MACHINE=bench
EXPORT=disk
SEGMENT=16MiB

say() { echo "bench-replication: $*"; }
die() { echo "bench-replication: FAIL: $*" >&2; exit 1; }

for v in CHURN_SECONDS START_TIMEOUT TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || die "BENCH_$v=${!v}: want a whole number of at least 1"
done
for r in "${RATES[@]}"; do [[ $r =~ ^[0-9]+$ ]] && [ "$r" -ge 1 ] || die "BENCH_CHURN_RATES: $r is not a whole number of MiB/s"; done
case $DROP in 0|1) ;; *) die "BENCH_DROP_CACHES=$DROP: want 0 or 1" ;; esac

# --- tools -------------------------------------------------------------------
need_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
need fio fio
need rsync rsync
need restic restic
need curl curl
need jq jq
need python3 python3
need numfmt coreutils
if [ ${#need_pkgs[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${need_pkgs[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else
    die "missing $pkgs and not root (no sudo): install them and rerun"
  fi
  say "installing $pkgs"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd ioengine (fio --enghelp=nbd fails)"
if [ ! -x "$STANDBY" ]; then
  say "building $STANDBY"
  go build -o "$STANDBY" ./cmd/standby
fi
STANDBY=$(cd "$(dirname "$STANDBY")" && pwd)/$(basename "$STANDBY")

SIZE_B=$(numfmt --from=iec "${SIZE^^}") || die "BENCH_SIZE=$SIZE: not a size"
FILL_B=$(numfmt --from=iec "${FILL^^}") || die "BENCH_FILL=$FILL: not a size"
DELTA_B=$(numfmt --from=iec "${DELTA^^}") || die "BENCH_DELTA=$DELTA: not a size"
[ $((SIZE_B % 4096)) = 0 ] && [ "$FILL_B" -le "$SIZE_B" ] && [ "$DELTA_B" -ge 4096 ] ||
  die "want BENCH_SIZE a multiple of 4 KiB, BENCH_FILL <= BENCH_SIZE, BENCH_DELTA >= 4 KiB"

# --- scratch directory and cleanup ---------------------------------------------
mkdir -p "$PARENT"
WORK=$(mktemp -d "$PARENT/standby-bench-replication.XXXXXX")
TARGET_PID= PROCESS_PID= AGENT_PID= RSYNCD_PID= FIO_PID= SAMPLER_PID=

stop_pid() { # pid name: SIGTERM, wait up to 60 s, then SIGKILL
  local pid=$1 name=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "bench-replication: $name (pid $pid) ignored SIGTERM for 60 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# stop_group PID NAME: fio runs in its own process group (setsid) and forks
# its job processes; with a dead NBD server it may ignore SIGTERM. TERM the
# group, then KILL it after 10 s.
stop_group() {
  local pid=$1 name=$2 i
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 -- "-$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "bench-replication: $name (process group $pid) ignored SIGTERM for 10 s; killing it" >&2
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$SAMPLER_PID" ] && stop_pid "$SAMPLER_PID" sampler
  [ -n "$FIO_PID" ] && stop_group "$FIO_PID" fio
  [ -n "$AGENT_PID" ] && stop_pid "$AGENT_PID" agent
  [ -n "$PROCESS_PID" ] && stop_pid "$PROCESS_PID" "process server"
  [ -n "$TARGET_PID" ] && stop_pid "$TARGET_PID" "master target"
  [ -n "$RSYNCD_PID" ] && stop_pid "$RSYNCD_PID" "rsync daemon"
  if [ "$KEEP" = 1 ]; then
    echo "bench-replication: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fstype=$(findmnt -n -o FSTYPE --target "$WORK" 2>/dev/null || stat -f -c %T "$WORK")
[ "$fstype" = tmpfs ] && die "$WORK is on tmpfs; set BENCH_DIR to a directory on a disk"
avail_gib=$(($(df -P -k "$WORK" | awk 'NR==2{print $4}') / 1024 / 1024))
# Three copies of the image's data (agent, plain copy, rsync destination),
# the replica and the target's retained journal (initial copy plus every
# churn byte), the restic repository, the process server's cache.
churn_total=0
for r in "${RATES[@]}"; do churn_total=$((churn_total + r * 1048576 * CHURN_SECONDS)); done
need_gib=$(((6 * FILL_B + 2 * churn_total + 4 * DELTA_B) / 1073741824 + 2))
[ "$avail_gib" -ge "$need_gib" ] || die "$WORK has ${avail_gib} GiB free, the run needs about ${need_gib} GiB"

# drop_caches: write back dirty pages and drop the page cache (root only).
CAN_DROP=0
if [ "$DROP" = 1 ] && [ -w /proc/sys/vm/drop_caches ] && (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then CAN_DROP=1; fi
drop_caches() {
  sync
  [ "$CAN_DROP" = 1 ] && echo 3 >/proc/sys/vm/drop_caches
  return 0
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b - a}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) print "nan"; else printf "%.3f", a / b }'; }
mib() { awk -v a="$1" 'BEGIN{printf "%.1f", a / 1048576}'; }

# free_ports N: N distinct free loopback TCP ports.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
ss = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))
EOF
}

# --- roles -----------------------------------------------------------------------
PKI=$WORK/pki
read -r P_TARGET P_TARGET_ST P_PROCESS P_PROCESS_ST P_AGENT_ST P_RSYNC < <(free_ports 6)
AGENT_URL=http://127.0.0.1:$P_AGENT_ST
PROCESS_URL=http://127.0.0.1:$P_PROCESS_ST
TARGET_URL=http://127.0.0.1:$P_TARGET_ST
SOCK=$WORK/agent/nbd.sock
URI="nbd+unix:///$EXPORT?socket=$SOCK"

role_log() { # name -> log path
  case $1 in agent) echo "$WORK/agent.log" ;; process) echo "$WORK/process.log" ;; target) echo "$WORK/target.log" ;; esac
}
# role_died NAME PID: print the log tail and fail.
role_died() {
  local name=$1 pid=$2 rc=0 log
  wait "$pid" 2>/dev/null || rc=$?
  log=$(role_log "$name")
  case $name in agent) AGENT_PID= ;; process) PROCESS_PID= ;; target) TARGET_PID= ;; esac
  echo "---- $name log, last 40 lines ($log):" >&2
  tail -n 40 "$log" >&2 || true
  die "the $name role (pid $pid) died, exit status $rc"
}
# check_roles: fail if a started role is gone.
check_roles() {
  [ -z "$TARGET_PID" ] || kill -0 "$TARGET_PID" 2>/dev/null || role_died target "$TARGET_PID"
  [ -z "$PROCESS_PID" ] || kill -0 "$PROCESS_PID" 2>/dev/null || role_died process "$PROCESS_PID"
  [ -z "$AGENT_PID" ] || kill -0 "$AGENT_PID" 2>/dev/null || role_died agent "$AGENT_PID"
}
# wait_fio: wait for $FIO_PID, checking the roles meanwhile; sets FRC to
# fio's exit status (a dead role fails the run at once, and cleanup stops fio).
wait_fio() {
  while kill -0 "$FIO_PID" 2>/dev/null; do
    check_roles
    sleep 0.2
  done
  FRC=0
  wait "$FIO_PID" || FRC=$?
  FIO_PID=
}
# get URL: the body, or nothing (never fails).
get() { curl -fsS --max-time 10 "$1" 2>/dev/null || true; }
# wait_http NAME URL: until URL answers 200 or the role dies.
wait_http() {
  local name=$1 url=$2 deadline=$((SECONDS + START_TIMEOUT))
  until curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null; do
    check_roles
    if [ $SECONDS -ge $deadline ]; then
      echo "---- $name log:" >&2; tail -n 40 "$(role_log "$name")" >&2 || true
      die "the $name role does not answer on $url after ${START_TIMEOUT}s"
    fi
    sleep 0.05
  done
}

write_configs() {
  local tls="{cert: $PKI/%s.crt, key: $PKI/%s.key, ca: $PKI/ca.crt}"
  cat >"$WORK/target.yaml" <<EOF
listen: 127.0.0.1:$P_TARGET
data_dir: $WORK/target
tls: $(printf "$tls" target target)
retention:
  keep_all: 1h
  hourly: 24
  daily: 7
  max: 168h
  keep_app_consistent: 3
prune_interval: 10s
status: 127.0.0.1:$P_TARGET_ST
log_level: info
EOF
  cat >"$WORK/process.yaml" <<EOF
listen: 127.0.0.1:$P_PROCESS
cache_dir: $WORK/cache
cache_quota: $CACHE_QUOTA
master_target: 127.0.0.1:$P_TARGET
master_target_name: localhost
tls: $(printf "$tls" process process)
bandwidth_limit: off
compression: auto
status: 127.0.0.1:$P_PROCESS_ST
log_level: info
EOF
  cat >"$WORK/agent.yaml" <<EOF
machine: $MACHINE
state_dir: $WORK/agent/state
listen:
  unix: $SOCK
disks:
  - name: $EXPORT
    path: $WORK/agent/disk.img
journal:
  segment_size: $SEGMENT
  limit: $JOURNAL_LIMIT
bookmark_interval: 10s
status: 127.0.0.1:$P_AGENT_ST
log_level: info
replication:
  process_server: 127.0.0.1:$P_PROCESS
  server_name: localhost
  tls: $(printf "$tls" agent agent)
  ship_interval: 500ms
  window: 8
EOF
  local r
  for r in target process agent; do
    "$STANDBY" "$r" --config "$WORK/$r.yaml" --check >/dev/null 2>"$WORK/check.err" ||
      { cat "$WORK/check.err" >&2; die "standby $r --check rejects $WORK/$r.yaml"; }
  done
}

start_target() {
  "$STANDBY" target --config "$WORK/target.yaml" >"$WORK/target.log" 2>&1 &
  TARGET_PID=$!
  wait_http target "$TARGET_URL/status"
}
start_process() {
  "$STANDBY" process --config "$WORK/process.yaml" >"$WORK/process.log" 2>&1 &
  PROCESS_PID=$!
  wait_http process "$PROCESS_URL/status"
}
start_agent() {
  "$STANDBY" agent --config "$WORK/agent.yaml" >"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
  wait_http agent "$AGENT_URL/status"
  local deadline=$((SECONDS + START_TIMEOUT))
  until [ -S "$SOCK" ]; do
    check_roles
    [ $SECONDS -lt $deadline ] || die "the agent has no NBD socket $SOCK after ${START_TIMEOUT}s"
    sleep 0.05
  done
}

# agent_field JQ: one value from the agent's /status.
agent_field() { get "$AGENT_URL/status" | jq -r "$1" 2>/dev/null || true; }

# wait_caught_up WHAT: until the agent is protected and the master target has
# applied everything the agent journaled. Sets WAITED to the seconds it took.
WAITED=0
wait_caught_up() {
  local what=$1 t0=$SECONDS st
  while :; do
    check_roles
    st=$(get "$AGENT_URL/status" | jq -r '[.replication.state, (.replication.applied.seq >= .capture.pos.seq), .capture.journal_bytes, .capture.dirty_bytes] | @tsv' 2>/dev/null || true)
    read -r state done jb db <<<"${st:-? false -1 -1}"
    [ "$state" = protected ] && [ "$done" = true ] && [ "$db" = 0 ] && break
    if [ $((SECONDS - t0)) -ge "$TIMEOUT" ]; then
      echo "---- agent status:" >&2; get "$AGENT_URL/status" | jq -c '.replication, .capture' >&2 || true
      die "$what: the replica has not caught up after ${TIMEOUT}s (state $state, journal $jb bytes, dirty $db bytes)"
    fi
    sleep 0.1
  done
  WAITED=$((SECONDS - t0))
}

# --- helpers in Python: the status sampler and the churn summary -------------------
cat >"$WORK/bench.py" <<'EOF'
import json, random, signal, sys, time, urllib.request

def sample(url, pid, out, interval):
    """Sample the agent's /status and VmRSS every interval seconds on average
    until SIGTERM. The gaps are jittered (0.6..1.4 x interval): a fixed 0.5 s
    period locks onto the agent's 500 ms ship interval and sees the same
    point of its RPO sawtooth every time."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    rng = random.Random(1)
    start = time.monotonic()
    due = start
    with open(out, "w") as f:
        while not stop:
            row = {"t": time.monotonic() - start}
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    s = json.load(r)
                rep, cap = s.get("replication") or {}, s["capture"]
                row.update(rpo=rep.get("rpo_seconds", -1), state=rep.get("state", "?"),
                           journal=cap.get("journal_bytes", 0), dirty=cap.get("dirty_bytes", 0),
                           pos=cap["pos"]["seq"], durable=rep.get("durable", {}).get("seq", 0),
                           applied=rep.get("applied", {}).get("seq", 0), cstate=cap.get("state", "?"),
                           mode=rep.get("resync_mode", ""), left=rep.get("resync_left", 0),
                           rbytes=rep.get("resync_bytes", 0))
            except Exception as e:
                row["error"] = str(e)
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        row["rss_kib"] = int(line.split()[1])
            except OSError:
                pass
            f.write(json.dumps(row) + "\n")
            f.flush()
            due += interval * rng.uniform(0.6, 1.4)
            time.sleep(max(0, due - time.monotonic()))

def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))  # nearest rank
    return xs[k]

def churn(path, rate, bs, seg):
    rows = [json.loads(l) for l in open(path)]
    ok = [r for r in rows if "error" not in r]
    rpo = [r["rpo"] for r in ok if r["rpo"] >= 0]
    unknown = sum(1 for r in ok if r["rpo"] < 0)
    third = max(1, len(ok) // 3)
    first, last = ok[:third], ok[-third:]
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
    backlog = lambda r: r["journal"] + r["dirty"]
    lag = lambda r: r["pos"] - r["applied"]
    b0, b1 = mean([backlog(r) for r in first]), mean([backlog(r) for r in last])
    l0, l1 = mean([lag(r) for r in first]), mean([lag(r) for r in last])
    recs_per_s = rate * 1048576 / bs
    growing = int(b1 > 1.5 * b0 + 2 * seg or l1 > 1.5 * l0 + 2 * recs_per_s)
    rss = max([r.get("rss_kib", 0) for r in rows] or [0]) / 1024
    states = sorted({r["state"] for r in ok} | {r["cstate"] for r in ok})
    print(f"{pct(rpo, 50):.3f} {pct(rpo, 99):.3f} {growing} {rss:.1f} {len(rows)} {len(rows) - len(ok)} {unknown} "
          f"{max(rpo or [float('nan')]):.3f} {b0 / 2**20:.1f} {b1 / 2**20:.1f} {l0:.0f} {l1:.0f} {','.join(states)}")

def initial(path, offset):
    """Where the initial replication's time went, from the samples (nothing
    else writes meanwhile: the journal position stops at the last copied
    chunk, and the replica has it when applied reaches it)."""
    rows = [r for r in (json.loads(l) for l in open(path)) if "error" not in r]
    if not rows:
        print("no samples"); return
    end = rows[-1]["pos"]
    at = lambda pred: next((f"{r['t'] + offset:.1f}s" for r in rows if pred(r)), "never")
    if rows[-1].get("mode") == "copy":
        print(f"copy (straight into the new replica's images) started by {at(lambda r: r.get('left', 0) > 0)}, "
              f"all sent by {at(lambda r: r.get('mode') == 'copy' and r.get('rbytes', 0) > 0 and r.get('left', 0) == 0)}, "
              f"protected by {at(lambda r: r.get('state') == 'protected')}; "
              f"peak journal {max(r.get('journal', 0) for r in rows) / 2**20:.0f} MiB, "
              f"peak agent VmRSS {max(r.get('rss_kib', 0) for r in rows) / 1024:.0f} MiB")
        return
    print(f"copying started by {at(lambda r: r['dirty'] > 0 or r['pos'] > 0)}, "
          f"all data journaled by {at(lambda r: r['pos'] >= end and r['dirty'] == 0)}, "
          f"durable at the process server by {at(lambda r: r['durable'] >= end)}, "
          f"applied at the master target by {at(lambda r: r['applied'] >= end).replace('never', 'protected')}; "
          f"peak journal {max(r['journal'] for r in rows) / 2**20:.0f} MiB, "
          f"peak agent VmRSS {max(r.get('rss_kib', 0) for r in rows) / 1024:.0f} MiB")

def fiostart(path):
    """The epoch seconds of fio's first write submission (lat log: completion ms, latency ns)."""
    first = last = None
    for line in open(path):
        f = line.split(",")
        done_ms, lat_ns = int(f[0]), int(f[1])
        s = done_ms / 1e3 - lat_ns / 1e9
        first = s if first is None else min(first, s)
        last = done_ms / 1e3 if last is None else max(last, done_ms / 1e3)
    print(f"{first:.3f} {last:.3f}")

if __name__ == "__main__":
    if sys.argv[1] == "fiostart":
        fiostart(sys.argv[2])
    elif sys.argv[1] == "initial":
        initial(sys.argv[2], float(sys.argv[3]))
    if sys.argv[1] == "sample":
        sample(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    elif sys.argv[1] == "churn":
        churn(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
EOF

io_written() { # bytes a process caused to be written to storage (/proc/PID/io)
  awk '/^write_bytes:/{print $2}' "/proc/$1/io" 2>/dev/null || echo 0
}
cpu_ticks() { # utime+stime of a process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
HZ=$(getconf CLK_TCK)
SEG_B=$(numfmt --from=iec 16M)

# --- the run ---------------------------------------------------------------------
start=$SECONDS
say "$(nproc) CPUs, kernel $(uname -r), $(awk '/MemTotal/{printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "scratch $WORK ($fstype, ${avail_gib} GiB free, about ${need_gib} GiB needed)"
say "standby $STANDBY ($("$STANDBY" version 2>&1 | head -n1)), fio $(fio --version | sed 's/^fio-//'), $(rsync --version | head -n1 | awk '{print $1, $3}'), $(restic version | awk '{print $1, $2}')"
if [ "$CAN_DROP" = 1 ]; then
  say "page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before each timed phase"
else
  say "WARNING: page cache not dropped (BENCH_DROP_CACHES=$DROP, or /proc/sys/vm/drop_caches not writable): reads may be cached"
fi

# The image: a tar stream of /usr/lib and /usr/share (repeated if it is
# short) for the first FILL bytes, the rest a hole.
mkdir -p "$WORK/peer" "$WORK/agent/state" "$WORK/rsyncd"
IMG=$WORK/peer/disk.img
say "making the $SIZE image: $FILL of tar of /usr/lib /usr/share, the rest sparse"
t0=$(now)
set +o pipefail
for ((i = 0; i < 64; i++)); do
  tar -cf - -C / usr/lib usr/share 2>/dev/null && rc=0 || rc=$?
  [ "$rc" -gt 1 ] && break # SIGPIPE: head has enough
done | head -c "$FILL_B" >"$IMG"
set -o pipefail
[ "$(stat -c %s "$IMG")" = "$FILL_B" ] || die "could not make $FILL of data from /usr (got $(stat -c %s "$IMG") bytes)"
truncate -s "$SIZE_B" "$IMG"
cp --sparse=always "$IMG" "$WORK/agent/disk.img"
cp --sparse=always "$IMG" "$WORK/rsyncd/disk.img"
say "image ready in $(elapsed "$t0" "$(now)") s: $(du -B1M "$IMG" | cut -f1) MiB allocated of $(mib "$SIZE_B") MiB; copies for the agent and the rsync destination"

if [ "$ONLY" != initial ]; then
# restic: a repository holding the pre-change image (untimed).
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$WORK/restic-repo
RESTIC_FLAGS=(--cache-dir "$WORK/restic-cache" --host bench)
restic init --cache-dir "$WORK/restic-cache" >"$WORK/restic-init.log" 2>&1 || { cat "$WORK/restic-init.log" >&2; die "restic init failed"; }
t0=$(now)
restic backup "${RESTIC_FLAGS[@]}" --json "$IMG" >"$WORK/restic-base.json" 2>"$WORK/restic-base.err" ||
  { tail -n 20 "$WORK/restic-base.err" >&2; die "restic backup of the pre-change image failed"; }
say "restic: backed up the pre-change image (untimed) in $(elapsed "$t0" "$(now)") s"

# rsync daemon on loopback whose module holds the pre-change image.
cat >"$WORK/rsyncd.conf" <<EOF
address = 127.0.0.1
port = $P_RSYNC
use chroot = no
pid file = $WORK/rsyncd.pid
log file = $WORK/rsyncd.log
[bench]
  path = $WORK/rsyncd
  read only = false
  uid = root
  gid = root
EOF
rsync --daemon --no-detach --config="$WORK/rsyncd.conf" >"$WORK/rsyncd.out" 2>&1 &
RSYNCD_PID=$!
deadline=$((SECONDS + START_TIMEOUT))
until rsync "rsync://127.0.0.1:$P_RSYNC/" >/dev/null 2>&1; do
  kill -0 "$RSYNCD_PID" 2>/dev/null || { cat "$WORK/rsyncd.out" "$WORK/rsyncd.log" >&2 2>/dev/null; RSYNCD_PID=; die "the rsync daemon died"; }
  [ $SECONDS -lt $deadline ] || die "the rsync daemon does not answer on port $P_RSYNC"
  sleep 0.1
done
fi

# --- initial replication -----------------------------------------------------------
"$STANDBY" certs create --dir "$PKI" agent process target >/dev/null
write_configs
drop_caches
t0=$(now)
cat "$WORK/agent/disk.img" >/dev/null
read_s=$(elapsed "$t0" "$(now)")
say "read baseline: cat of the $SIZE image took $read_s s ($(awk -v b="$SIZE_B" -v s="$read_s" 'BEGIN{printf "%.0f", b / 1048576 / s}') MiB/s)"
# The floor on this machine: reading the image and writing its data to a
# file on the same filesystem, durably (what any replication must at least
# do when both sites share one disk, as here).
drop_caches
t0=$(now)
cp --sparse=always "$WORK/agent/disk.img" "$WORK/floor.img"
sync "$WORK/floor.img"
copy_s=$(elapsed "$t0" "$(now)")
rm -f "$WORK/floor.img"
say "copy floor: cp --sparse=always of the image to this filesystem, then sync, took $copy_s s"

start_target
start_process
drop_caches
pc0=$(cpu_ticks "$PROCESS_PID"); tc0=$(cpu_ticks "$TARGET_PID")
pw0=$(io_written "$PROCESS_PID"); tw0=$(io_written "$TARGET_PID")
t0=$(now)
start_agent
python3 "$WORK/bench.py" sample "$AGENT_URL/status" "$AGENT_PID" "$WORK/initial.jsonl" 0.5 &
SAMPLER_PID=$!
sampler_off=$(elapsed "$t0" "$(now)")
last_state=
deadline=$((SECONDS + TIMEOUT))
while :; do
  check_roles
  st=$(agent_field '.replication.state // "none"')
  [ "$st" = protected ] && break
  if [ -n "$st" ] && [ "$st" != "$last_state" ]; then
    say "  agent replication state $st at $(elapsed "$t0" "$(now)") s"
    last_state=$st
  fi
  [ $SECONDS -lt $deadline ] || die "the agent is not protected after ${TIMEOUT}s (state $st); see $WORK/agent.log"
  sleep 0.5 # light polling: curl and jq take CPU from the roles measured
done
# The end is when the agent says it became protected (state_since), not
# when this loop noticed.
since=$(agent_field '.replication.state_since // empty')
[ -n "$since" ] || die "the agent's status has no replication.state_since"
init_s=$(elapsed "$t0" "$(date -d "$since" +%s.%N)")
ac1=$(cpu_ticks "$AGENT_PID"); pc1=$(cpu_ticks "$PROCESS_PID"); tc1=$(cpu_ticks "$TARGET_PID")
aw1=$(io_written "$AGENT_PID"); pw1=$(io_written "$PROCESS_PID"); tw1=$(io_written "$TARGET_PID")
stop_pid "$SAMPLER_PID" sampler
SAMPLER_PID=
rep=$(get "$AGENT_URL/status" | jq -c '.replication')
say "initial replication: agent start to protected in $init_s s; resync_bytes $(jq -r .resync_bytes <<<"$rep"), sent $(jq -r .sent_bytes <<<"$rep") bytes in $(jq -r .sent_segments <<<"$rep") segments"
ps=$(get "$PROCESS_URL/status")
say "  process server: $(jq -r .target_bytes_before_packing <<<"$ps") bytes to the master target before packing, $(jq -r .target_bytes_after_packing <<<"$ps") after"
say "  from the agent's start: $(python3 "$WORK/bench.py" initial "$WORK/initial.jsonl" "$sampler_off")"
cores() { awk -v c="$1" -v hz="$HZ" -v w="$init_s" 'BEGIN{printf "%.2f", c / hz / w}'; }
say "  cpu over it, in cores: agent $(cores "$ac1"), process server $(cores "$((pc1 - pc0))"), master target $(cores "$((tc1 - tc0))") (of $(nproc))"
say "  written to storage (/proc/PID/io write_bytes; mmap'd journal writeback may be counted elsewhere): agent $(mib "$aw1") MiB, process server $(mib "$((pw1 - pw0))") MiB, master target $(mib "$((tw1 - tw0))") MiB"

# Without a copy (a replica that had points), the master target folds the
# initial resync records into its base images at its next prune (segments
# before the first recovery point are released): a second full write of
# the data. Let it finish, so that the delta test measures shipping a
# change rather than contending with it (bounded wait). After a copy there
# is nothing to fold.
tseg() { get "$TARGET_URL/status" | jq -r --arg m "$MACHINE" '[.[] | select(.name == $m) | .status.segments][0] // -1' 2>/dev/null || echo -1; }
seg0=$(tseg)
t0=$(now)
deadline=$((SECONDS + 120))
seg=$seg0
if [ "$(jq -r '.resync_mode // ""' <<<"$rep")" = copy ]; then
  # After a copy the master target seeds its base images from the current
  # ones in the background (a second write of the data, after protected).
  seedleft() { get "$TARGET_URL/status" | jq -r --arg m "$MACHINE" '[.[] | select(.name == $m) | .status.seed_left][0] // -1' 2>/dev/null || echo -1; }
  while :; do
    check_roles
    left=$(seedleft)
    [ "$left" = 0 ] && break
    if [ $SECONDS -ge $deadline ]; then
      say "  the master target still has $left bytes of base images to seed after 120 s: not waiting longer"
      break
    fi
    sleep 0.2
  done
  [ "$left" = 0 ] && say "  the initial data went as a copy into the replica's images; base images seeded from them $(elapsed "$t0" "$(now)") s after protected"
else
  while :; do
    check_roles
    seg=$(tseg)
    [ "$seg" -ge 0 ] && [ "$seg0" -ge 0 ] && [ "$seg" -lt "$seg0" ] && break
    if [ $SECONDS -ge $deadline ]; then
      say "  the master target still stores $seg segments (had $seg0 at protected) after 120 s: not waiting longer"
      break
    fi
    sleep 0.2
  done
fi
[ "$seg" -lt "$seg0" ] && say "  master target rolled its base over the initial copy ($seg0 -> $seg stored segments) $(elapsed "$t0" "$(now)") s after protected"

if [ "$ONLY" = initial ]; then
  echo "BENCH initial ratio_vs_read=$(div "$init_s" "$read_s") ratio_vs_copy=$(div "$init_s" "$copy_s")"
  exit 0
fi

# --- delta -------------------------------------------------------------------------
wait_caught_up "before the delta test"
say "delta: replica caught up (waited $WAITED s); $(mib "$DELTA_B") MiB of 4 KiB random writes through the agent"
sent0=$(agent_field .replication.sent_bytes)
ps0=$(get "$PROCESS_URL/status")
drop_caches
t0=$(now)
setsid fio --name=delta --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --size="$SIZE_B" --io_size="$DELTA_B" \
  --norandommap --randrepeat=1 --randseed=20261127 --refill_buffers --iodepth=16 --numjobs=1 \
  --write_lat_log="$WORK/delta" --log_unix_epoch=1 --output-format=json --output="$WORK/fio-delta.json" >"$WORK/fio-delta.log" 2>&1 &
FIO_PID=$!
wait_fio
t_writes=$(now)
check_roles
[ "$FRC" = 0 ] || { cat "$WORK/fio-delta.log" >&2; die "fio through the agent exited with status $FRC"; }
# The bookmark after the last write; 409 while not consistent: retry.
seq=
for ((i = 0; i < 600; i++)); do
  b=$(curl -sS --max-time 10 -X POST "$AGENT_URL/bookmark?label=bench-delta" 2>/dev/null || true)
  seq=$(jq -r '.seq // empty' <<<"$b" 2>/dev/null || true)
  [ -n "$seq" ] && [ "$seq" != 0 ] && break
  check_roles
  sleep 0.05
done
[ -n "$seq" ] && [ "$seq" != 0 ] || die "the agent took no bookmark: $b"
deadline=$((SECONDS + TIMEOUT))
while :; do
  n=$(get "$TARGET_URL/machines/$MACHINE/points" | jq --argjson s "$seq" '[.[] | select(.seq == $s)] | length' 2>/dev/null || echo 0)
  [ "${n:-0}" -gt 0 ] && break
  check_roles
  [ $SECONDS -lt $deadline ] || die "no recovery point with seq $seq at the master target after ${TIMEOUT}s"
  sleep 0.02
done
t1=$(now)
# The clock starts at fio's first write submission (its latency log, in
# epoch time), not at fio's start: fio spends a fraction of a second
# starting up and connecting first.
read -r w_first w_last < <(python3 "$WORK/bench.py" fiostart "$WORK/delta_lat.1.log") ||
  die "cannot read fio's latency log $WORK/delta_lat.1.log"
standby_s=$(elapsed "$w_first" "$t1")
writes_s=$(elapsed "$w_first" "$w_last")
sent1=$(agent_field .replication.sent_bytes)
ps1=$(get "$PROCESS_URL/status")
sent=$((sent1 - sent0))
packed=$(($(jq -r .target_bytes_after_packing <<<"$ps1") - $(jq -r .target_bytes_after_packing <<<"$ps0")))
wire_ratio=$(div "$sent" "$DELTA_B")
say "standby: writes took $writes_s s ($(jq -r '.jobs[0].write | "\(.iops | round) IOPS, p99 \(.clat_ns.percentile["99.000000"] / 1000 | round) us"' "$WORK/fio-delta.json")), recovery point (seq $seq) at the master target $standby_s s after the first write (fio itself ran $(elapsed "$t0" "$t_writes") s)"
say "  agent sent $sent bytes (journal, before packing) for $DELTA_B bytes written; process server sent $packed bytes to the master target (packed)"

# The peers ship the same changed image: a plain copy of the agent's disk.
cp --sparse=always "$WORK/agent/disk.img" "$IMG"
drop_caches
t0=$(now)
rsync --inplace --no-whole-file --stats "$IMG" "rsync://127.0.0.1:$P_RSYNC/bench/disk.img" >"$WORK/rsync.log" 2>&1 ||
  { cat "$WORK/rsync.log" >&2; die "rsync failed"; }
rsync_s=$(elapsed "$t0" "$(now)")
cmp -s "$IMG" "$WORK/rsyncd/disk.img" || die "after rsync the destination differs from the changed image"
say "rsync --inplace --no-whole-file: $rsync_s s; $(grep -E '^Total bytes sent' "$WORK/rsync.log" | tr -s ' '), $(grep -E '^Matched data' "$WORK/rsync.log" | tr -s ' ')"

drop_caches
t0=$(now)
restic backup "${RESTIC_FLAGS[@]}" --json "$IMG" >"$WORK/restic-delta.json" 2>"$WORK/restic-delta.err" ||
  { tail -n 20 "$WORK/restic-delta.err" >&2; die "restic backup of the changed image failed"; }
restic_s=$(elapsed "$t0" "$(now)")
rsum=$(jq -rs 'map(select(.message_type == "summary")) | last | "\(.data_added) bytes added, \(.files_changed) file changed, restic says \(.total_duration | . * 100 | round / 100) s"' "$WORK/restic-delta.json" 2>/dev/null || echo "?")
say "restic backup (incremental): $restic_s s; $rsum"
say "delta: standby $standby_s s, rsync $rsync_s s, restic $restic_s s"

# --- churn -------------------------------------------------------------------------
churn_lines=()
for rate in "${RATES[@]}"; do
  wait_caught_up "before churn at $rate MiB/s"
  say "churn: $rate MiB/s of $CHURN_BS random writes for ${CHURN_SECONDS}s (replica caught up, waited $WAITED s)"
  samples=$WORK/churn-$rate.jsonl
  python3 "$WORK/bench.py" sample "$AGENT_URL/status" "$AGENT_PID" "$samples" 0.5 &
  SAMPLER_PID=$!
  c0=$(cpu_ticks "$AGENT_PID"); pc0=$(cpu_ticks "$PROCESS_PID"); tc0=$(cpu_ticks "$TARGET_PID"); w0=$(now)
  setsid fio --name="churn$rate" --ioengine=nbd --uri="$URI" --rw=randwrite --bs="$CHURN_BS" --size="$SIZE_B" \
    --rate="${rate}m" --iodepth=8 --numjobs=1 --time_based --runtime="$CHURN_SECONDS" --refill_buffers \
    --norandommap --randrepeat=1 --randseed="$rate" \
    --output-format=json --output="$WORK/fio-churn-$rate.json" >"$WORK/fio-churn-$rate.log" 2>&1 &
  FIO_PID=$!
  wait_fio
  c1=$(cpu_ticks "$AGENT_PID"); pc1=$(cpu_ticks "$PROCESS_PID"); tc1=$(cpu_ticks "$TARGET_PID"); w1=$(now)
  stop_pid "$SAMPLER_PID" sampler
  SAMPLER_PID=
  check_roles
  [ "$FRC" = 0 ] || { cat "$WORK/fio-churn-$rate.log" >&2; die "fio at $rate MiB/s exited with status $FRC"; }
  wall=$(elapsed "$w0" "$w1")
  cores() { awk -v c="$1" -v hz="$HZ" -v w="$wall" 'BEGIN{printf "%.2f", c / hz / w}'; }
  cpu=$(cores "$((c1 - c0))")
  got=$(jq -r '.jobs[0].write.bw_bytes / 1048576 | . * 10 | round / 10' "$WORK/fio-churn-$rate.json" 2>/dev/null || echo "?")
  read -r p50 p99 growing rss n nerr unknown rpomax b0 b1 l0 l1 states < <(python3 "$WORK/bench.py" churn "$samples" "$rate" "$(numfmt --from=iec "${CHURN_BS^^}")" "$SEG_B")
  hwm=$(awk '/VmHWM/{printf "%.1f", $2 / 1024}' "/proc/$AGENT_PID/status")
  say "  fio achieved $got MiB/s; $n samples ($nerr failed, $unknown rpo unknown); rpo p50 $p50 s, p99 $p99 s, max $rpomax s"
  say "  unshipped journal mean ${b0} MiB (first third) -> ${b1} MiB (last third); records not applied $l0 -> $l1; states $states"
  say "  agent max VmRSS $rss MiB (VmHWM since start $hwm MiB), cpu $cpu cores (process server $(cores "$((pc1 - pc0))"), master target $(cores "$((tc1 - tc0))"))"
  churn_lines+=("BENCH churn rate_mbps=$rate rpo_p50_s=$p50 rpo_p99_s=$p99 backlog_growing=$growing agent_rss_mib=$rss agent_cpu=$cpu")
done

say "load average $(cut -d' ' -f1-3 /proc/loadavg) at end; whole run took $((SECONDS - start)) s"
echo "BENCH delta speedup_vs_rsync=$(div "$rsync_s" "$standby_s") speedup_vs_restic=$(div "$restic_s" "$standby_s") wire_ratio=$wire_ratio"
echo "BENCH initial ratio_vs_read=$(div "$init_s" "$read_s") ratio_vs_copy=$(div "$init_s" "$copy_s")"
for l in "${churn_lines[@]}"; do echo "$l"; done
