#!/usr/bin/env bash
# The whole test suite. Installs the Debian packages the tests need (real NBD
# clients and servers, fio, FUSE, filesystem tools) when they are missing,
# then runs vet, a format check and every Go test.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh ./internal/nbd/...   # some packages
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
need qemu-io qemu-utils
need qemu-img qemu-utils
need qemu-nbd qemu-utils
need nbdinfo libnbd-bin
need nbdcopy libnbd-bin
need nbdfuse libnbd-bin
need nbdkit nbdkit
need fio fio
need fusermount3 fuse3
need mkfs.ext4 e2fsprogs
need losetup mount
# The push install tests start their own sshd (internal/pushinstall/sshtest).
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
# PostgreSQL's server binaries are not on PATH on Debian; the store tests
# start their own cluster from them (internal/store/postgres/pgtest).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_pkgs+=(postgresql)
# The qemu machine driver's tests boot a tiny guest (internal/driver/qemu):
# the emulator, a Debian kernel with its modules, and a static busybox.
need qemu-system-x86_64 qemu-system-x86
compgen -G '/boot/vmlinuz-*' >/dev/null || need_pkgs+=(linux-image-cloud-amd64)
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${need_pkgs[@]}" | sort -u | tr '\n' ' ')
  if [ "$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else SUDO=none; fi
  if [ "$SUDO" = none ]; then
    echo "test.sh: not root and no sudo: cannot install $pkgs; tests that need them will skip" >&2
  else
    echo "test.sh: installing $pkgs" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  fi
fi

# Facilities some tests need; say plainly what this machine lacks.
[ -e /dev/fuse ] || echo "test.sh: /dev/fuse missing: nbdfuse tests will skip" >&2
[ -e /dev/loop-control ] || echo "test.sh: /dev/loop-control missing: loop-device tests will skip" >&2

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:" >&2; echo "$unformatted" >&2; exit 1
fi
go vet ./...
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
go test -count=1 -timeout 20m -p 2 "${pkgs[@]}"
if [ $# -eq 0 ]; then
  # The concurrent core again under the race detector.
  go test -count=1 -race -timeout 10m -p 2 ./internal/capture ./internal/journal ./internal/agent ./internal/nbd ./internal/spool ./internal/process ./internal/replica ./internal/twosite
fi
