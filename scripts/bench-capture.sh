#!/usr/bin/env bash
# bench-capture: fio through the agent's NBD server (every write journaled)
# against two peer NBD servers serving the same kind of file, in one run:
#
#   agent     bin/standby agent, journal on (limit large enough never to
#             overflow; checked after each run), state dir next to the disk
#   qemu-nbd  -f raw --cache=writeback -t --shared=16, unix socket
#   nbdkit    file plugin, default cache settings, unix socket
#
# Tests (fio --ioengine=nbd, numjobs 1, --time_based):
#   randwrite  4 KiB random writes, iodepth 16: IOPS and p99 completion latency
#   seqwrite   1 MiB sequential writes, iodepth 16: bandwidth
#
# Every measurement gets a freshly started server and a fresh file; the
# servers run interleaved (the order rotates each repetition), each
# measurement is repeated BENCH_REPS times and the better result is kept
# (randwrite: highest IOPS, with that run's p99; seqwrite: highest bandwidth).
#
# Output: human-readable lines, then
#   BENCH capture randwrite_iops_ratio=.. randwrite_p99_ratio=.. seqwrite_bw_ratio=.. best_peer=..
#   BENCH capture_server name=.. randwrite_iops=.. randwrite_p99_us=.. seqwrite_mibps=.. ...
# Ratios are agent / best peer (best peer by randwrite IOPS for the randwrite
# ratios; the best peer by bandwidth for seqwrite_bw_ratio).
#
# Environment (defaults in brackets):
#   BENCH_RUNTIME        measured seconds per fio run [20]
#   BENCH_RAMP           fio ramp seconds before measuring [5]
#   BENCH_SIZE           size of each served file, as for truncate(1) [2G]
#   BENCH_ALLOC          prealloc (fallocate) or sparse (truncate) [prealloc]
#   BENCH_REPS           repetitions of every measurement; best kept [2]
#   BENCH_IODEPTH        fio iodepth for both tests [16]
#   BENCH_SERVERS        servers to run, first must be agent [agent qemu-nbd nbdkit]
#   BENCH_TESTS          tests to run [randwrite seqwrite]
#   BENCH_DIR            parent of the scratch directory (files, journal, sockets);
#                        must be a real disk filesystem, not tmpfs [/var/tmp]
#   BENCH_JOURNAL_LIMIT  agent --journal-limit [64GiB]
#   BENCH_SETTLE         seconds of pause (after sync) between runs [2]
#   BENCH_START_TIMEOUT  seconds a server may take to accept connections [30]
#   BENCH_KEEP           1 keeps the scratch directory (logs, fio JSON) [0]
#   STANDBY_BIN          the standby binary [bin/standby, built if missing]
#
# Quick check:  BENCH_RUNTIME=3 BENCH_RAMP=1 ./scripts/bench-capture.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME=${BENCH_RUNTIME:-20}
RAMP=${BENCH_RAMP:-5}
SIZE=${BENCH_SIZE:-2G}
ALLOC=${BENCH_ALLOC:-prealloc}
REPS=${BENCH_REPS:-2}
IODEPTH=${BENCH_IODEPTH:-16}
read -r -a SERVERS <<<"${BENCH_SERVERS:-agent qemu-nbd nbdkit}"
read -r -a TESTS <<<"${BENCH_TESTS:-randwrite seqwrite}"
PARENT=${BENCH_DIR:-/var/tmp}
JOURNAL_LIMIT=${BENCH_JOURNAL_LIMIT:-64GiB}
SETTLE=${BENCH_SETTLE:-2}
START_TIMEOUT=${BENCH_START_TIMEOUT:-30}
KEEP=${BENCH_KEEP:-0}
STANDBY=${STANDBY_BIN:-bin/standby}
EXPORT=disk

say() { echo "bench-capture: $*"; }
die() { echo "bench-capture: FAIL: $*" >&2; exit 1; }

for v in RUNTIME RAMP REPS IODEPTH SETTLE START_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "BENCH_$v=${!v}: want a whole number"
done
[ "$REPS" -ge 1 ] && [ "$RUNTIME" -ge 1 ] || die "BENCH_REPS and BENCH_RUNTIME must be at least 1"
case $ALLOC in prealloc|sparse) ;; *) die "BENCH_ALLOC=$ALLOC: want prealloc or sparse" ;; esac
[ "${SERVERS[0]:-}" = agent ] && [ ${#SERVERS[@]} -ge 2 ] || die "BENCH_SERVERS must start with agent and name at least one peer"
for s in "${SERVERS[@]}"; do case $s in agent|qemu-nbd|nbdkit) ;; *) die "unknown server $s (agent, qemu-nbd, nbdkit)" ;; esac; done
for t in "${TESTS[@]}"; do case $t in randwrite|seqwrite) ;; *) die "unknown test $t (randwrite, seqwrite)" ;; esac; done

# --- tools -------------------------------------------------------------------
need_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
need fio fio
need qemu-nbd qemu-utils
need nbdkit nbdkit
need nbdinfo libnbd-bin
need python3 python3
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

# --- scratch directory and cleanup ---------------------------------------------
mkdir -p "$PARENT"
WORK=$(mktemp -d "$PARENT/standby-bench-capture.XXXXXX")
SERVER_PID=
FIO_PID=

stop_pid() { # pid name: SIGTERM, wait up to 60 s, then SIGKILL
  local pid=$1 name=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 600; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "bench-capture: $name (pid $pid) ignored SIGTERM for 60 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$FIO_PID" ] && stop_pid "$FIO_PID" fio
  [ -n "$SERVER_PID" ] && stop_pid "$SERVER_PID" server
  if [ "$KEEP" = 1 ]; then
    echo "bench-capture: kept $WORK" >&2
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

# --- servers -------------------------------------------------------------------
# start_server NAME RUNDIR: a fresh file and a freshly started server whose
# export $EXPORT answers on RUNDIR/nbd.sock. Sets SERVER_PID and SOCK.
start_server() {
  local name=$1 dir=$2 img=$2/disk.img
  SOCK=$dir/nbd.sock
  mkdir -p "$dir"
  if [ "$ALLOC" = prealloc ] && fallocate -l "$SIZE" "$img" 2>/dev/null; then :; else
    rm -f "$img"; truncate -s "$SIZE" "$img"
  fi
  case $name in
  agent)
    mkdir -p "$dir/state"
    "$STANDBY" agent --machine bench --state-dir "$dir/state" --listen-unix "$SOCK" \
      --disk "$EXPORT=$img" --journal-limit "$JOURNAL_LIMIT" --log-level warn \
      --status "$dir/status.sock" >"$dir/server.log" 2>&1 &
    ;;
  qemu-nbd)
    qemu-nbd -f raw --cache=writeback -t --shared=16 -k "$SOCK" -x "$EXPORT" "$img" \
      >"$dir/server.log" 2>&1 &
    ;;
  nbdkit)
    nbdkit --foreground --exit-with-parent -U "$SOCK" -e "$EXPORT" file "$img" \
      >"$dir/server.log" 2>&1 &
    ;;
  esac
  SERVER_PID=$!
  local deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null && rc=0 || rc=$?
      SERVER_PID=
      echo "---- $name log ($dir/server.log):" >&2; cat "$dir/server.log" >&2
      die "$name did not start: it exited with status $rc"
    fi
    if [ -S "$SOCK" ] && nbdinfo --size "nbd+unix:///$EXPORT?socket=$SOCK" >/dev/null 2>&1; then
      break
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "---- $name log ($dir/server.log):" >&2; cat "$dir/server.log" >&2
      die "$name did not start: no NBD export \"$EXPORT\" on $SOCK after ${START_TIMEOUT}s"
    fi
    sleep 0.1
  done
}

# agent_health RUNDIR: prints "state dirty_bytes journal_bytes" from /status.
agent_health() {
  python3 - "$1/status.sock" <<'EOF'
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(sys.argv[1])
try:
    c = C("localhost"); c.request("GET", "/status")
    s = json.load(c.getresponse())["capture"]
    print(s.get("state", "?"), s.get("dirty_bytes", -1), s.get("journal_bytes", -1))
except Exception as e:
    print("unknown -1 -1")
EOF
}

cpu_ticks() { # utime+stime of a process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
sys_ticks() { # "busy total" over all CPUs from /proc/stat
  awk '/^cpu /{busy = $2 + $3 + $4 + $7 + $8 + $9; total = busy + $5 + $6; print busy, total}' /proc/stat
}
HZ=$(getconf CLK_TCK)

# --- one measurement -------------------------------------------------------------
# run_one TEST SERVER REP: appends a result line to $WORK/results.
run_one() {
  local test=$1 name=$2 rep=$3 dir=$WORK/run-$1-$2-$3
  local rw bs
  case $test in
  randwrite) rw=randwrite bs=4k ;;
  seqwrite) rw=write bs=1M ;;
  esac
  start_server "$name" "$dir"
  local c0 s0 t0 c1 s1 t1
  c0=$(cpu_ticks "$SERVER_PID"); read -r s0 t0 < <(sys_ticks); local w0=$EPOCHREALTIME
  fio --name="$test" --ioengine=nbd --uri="nbd+unix:///$EXPORT?socket=$SOCK" \
    --rw="$rw" --bs="$bs" --iodepth="$IODEPTH" --numjobs=1 \
    --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
    --output-format=json --output="$dir/fio.json" >"$dir/fio.log" 2>&1 &
  FIO_PID=$!
  local frc=0
  wait "$FIO_PID" || frc=$?
  FIO_PID=
  c1=$(cpu_ticks "$SERVER_PID"); read -r s1 t1 < <(sys_ticks); local w1=$EPOCHREALTIME
  if [ "$frc" != 0 ]; then
    cat "$dir/fio.log" >&2
    die "fio $test against $name exited with status $frc"
  fi
  local health="- -1 -1"
  [ "$name" = agent ] && health=$(agent_health "$dir")
  stop_pid "$SERVER_PID" "$name"
  SERVER_PID=
  python3 - "$dir/fio.json" "$test" "$name" "$rep" "$c0" "$c1" "$s0" "$t0" "$s1" "$t1" "$w0" "$w1" "$HZ" $health \
    >>"$WORK/results" <<'EOF' || die "cannot read fio's output for $test against $name"
import json, sys
(path, test, name, rep, c0, c1, s0, t0, s1, t1, w0, w1, hz, state, dirty, jbytes) = sys.argv[1:]
text = open(path).read()
d = json.loads(text[text.index("{"):])
job = d["jobs"][0]
if job.get("error"):
    sys.exit(f"fio job error {job['error']}")
w = job["write"]
wall = float(w1) - float(w0)
srv_cpu = 100.0 * (int(c1) - int(c0)) / int(hz) / wall
busy = 100.0 * (int(s1) - int(s0)) / max(1, int(t1) - int(t0))
p99 = w["clat_ns"]["percentile"].get("99.000000", 0) / 1000.0
print(test, name, rep, f"{w['iops']:.1f}", f"{p99:.1f}", f"{w['bw_bytes'] / 2**20:.1f}",
      f"{srv_cpu:.0f}", f"{job['usr_cpu'] + job['sys_cpu']:.0f}", f"{busy:.0f}", state, dirty, jbytes)
EOF
  local line; line=$(tail -n1 "$WORK/results")
  read -r _ _ _ iops p99 mibps scpu fcpu busy state dirty jbytes <<<"$line"
  local extra=""
  if [ "$name" = agent ]; then
    extra=" journal=$((jbytes / 1048576))MiB state=$state"
    if [ "$state" != journaling ] || [ "$dirty" != 0 ]; then
      extra+=" WARNING: journal overflowed or state unknown (dirty_bytes=$dirty); raise BENCH_JOURNAL_LIMIT"
    fi
  fi
  case $test in
  randwrite) printf 'bench-capture: %-9s %-8s rep %d: %9.0f IOPS  p99 %8.1f us  server cpu %3d%%  fio cpu %3d%%  machine busy %3d%%%s\n' \
    "$test" "$name" "$rep" "$iops" "$p99" "$scpu" "$fcpu" "$busy" "$extra" ;;
  seqwrite) printf 'bench-capture: %-9s %-8s rep %d: %9.1f MiB/s  p99 %8.1f us  server cpu %3d%%  fio cpu %3d%%  machine busy %3d%%%s\n' \
    "$test" "$name" "$rep" "$mibps" "$p99" "$scpu" "$fcpu" "$busy" "$extra" ;;
  esac
  rm -rf "$dir/disk.img" "$dir/state"
  sync
  sleep "$SETTLE"
}

# --- the run ---------------------------------------------------------------------
start=$SECONDS
say "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at start; scratch $WORK ($fstype, ${avail_gib} GiB free)"
read -r b0 t0 < <(sys_ticks); sleep 2; read -r b1 t1 < <(sys_ticks)
idle_busy=$((100 * (b1 - b0) / (t1 - t0 > 0 ? t1 - t0 : 1)))
say "machine busy ${idle_busy}% of all CPUs over 2 s before the first run"
if [ "$idle_busy" -gt 20 ]; then
  say "WARNING: other work is using the CPUs; the figures will be noisy"
fi
say "fio $(fio --version | sed 's/^fio-//'), $(qemu-nbd --version | head -n1), $(nbdkit --version | head -n1), standby $STANDBY"
say "file $SIZE ($ALLOC) per run; runtime ${RUNTIME}s after ${RAMP}s ramp; iodepth $IODEPTH; numjobs 1; $REPS rep(s) each, better one kept"
say "server cpu = % of one CPU over the fio run (incl. ramp); machine busy = % of all $(nproc) CPUs"
: >"$WORK/results"
for test in "${TESTS[@]}"; do
  for ((rep = 1; rep <= REPS; rep++)); do
    # rotate the order each repetition so no server always runs first
    n=${#SERVERS[@]}
    for ((i = 0; i < n; i++)); do
      run_one "$test" "${SERVERS[$(((i + rep - 1) % n))]}" "$rep"
    done
  done
done

say "load average $(cut -d' ' -f1-3 /proc/loadavg) at end; whole run took $((SECONDS - start)) s"
python3 - "$WORK/results" "$REPS" "$RUNTIME" "${SERVERS[@]}" <<'EOF'
import sys
path, reps, runtime, servers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
best = {}  # (test, server) -> row of the better repetition
for line in open(path):
    f = line.split()
    row = dict(test=f[0], name=f[1], iops=float(f[3]), p99=float(f[4]), mibps=float(f[5]), cpu=int(f[6]))
    key = (row["test"], row["name"])
    score = "iops" if row["test"] == "randwrite" else "mibps"
    if key not in best or row[score] > best[key][score]:
        best[key] = row
pick = f"best of {reps}" if reps > 1 else "single run"
print(f"bench-capture: summary ({pick} per server and test):")
for s in servers:
    parts = []
    if ("randwrite", s) in best:
        r = best[("randwrite", s)]
        parts.append(f"randwrite {r['iops']:.0f} IOPS, p99 {r['p99']:.1f} us, server cpu {r['cpu']}%")
    if ("seqwrite", s) in best:
        r = best[("seqwrite", s)]
        parts.append(f"seqwrite {r['mibps']:.1f} MiB/s, server cpu {r['cpu']}%")
    print(f"bench-capture:   {s:<8} " + "; ".join(parts))

def ratio(a, b):
    return f"{a / b:.3f}" if b else "nan"
peers = [s for s in servers if s != "agent"]
out = ["BENCH capture"]
bp = None
if ("randwrite", "agent") in best:
    bp = max((p for p in peers if ("randwrite", p) in best), key=lambda p: best[("randwrite", p)]["iops"])
    a, b = best[("randwrite", "agent")], best[("randwrite", bp)]
    out += [f"randwrite_iops_ratio={ratio(a['iops'], b['iops'])}", f"randwrite_p99_ratio={ratio(a['p99'], b['p99'])}"]
if ("seqwrite", "agent") in best:
    sp = max((p for p in peers if ("seqwrite", p) in best), key=lambda p: best[("seqwrite", p)]["mibps"])
    out.append(f"seqwrite_bw_ratio={ratio(best[('seqwrite', 'agent')]['mibps'], best[('seqwrite', sp)]['mibps'])}")
    if bp is None:
        bp = sp
out += [f"best_peer={bp}", f"reps={reps}", f"runtime_s={runtime}"]
print(" ".join(out))
for s in servers:
    kv = [f"name={s}"]
    if ("randwrite", s) in best:
        r = best[("randwrite", s)]
        kv += [f"randwrite_iops={r['iops']:.0f}", f"randwrite_p99_us={r['p99']:.1f}", f"randwrite_cpu_pct={r['cpu']}"]
    if ("seqwrite", s) in best:
        r = best[("seqwrite", s)]
        kv += [f"seqwrite_mibps={r['mibps']:.1f}", f"seqwrite_cpu_pct={r['cpu']}"]
    print("BENCH capture_server " + " ".join(kv))
EOF
