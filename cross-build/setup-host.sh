#!/bin/sh
# Prepares a Debian 12 x86_64 host (root) to build and smoke-test the ARM
# single executables: qemu-user, binfmt_misc registration (if the kernel
# lets us), the arm64/armhf libraries node links against, and strip tools.
#
# Idempotent: every step checks first and does nothing when already done.
# Safe to run on every CI job: `sh cross-build/setup-host.sh`.
#
# Exit status is non-zero only if something the smoke tests cannot do
# without is missing at the end (qemu-user and the target libraries).
# Binfmt registration and the cross strip tools are best effort: the test
# helper falls back to calling qemu explicitly, the build to no stripping.
set -eu

log() { printf 'setup-host: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

export DEBIAN_FRONTEND=noninteractive

# ---- foreign architectures -------------------------------------------------
need_update=
for arch in arm64 armhf; do
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    log "adding dpkg architecture $arch"
    $SUDO dpkg --add-architecture "$arch"
    need_update=1
  fi
done

# ---- packages --------------------------------------------------------------
# qemu-user-static: runs ARM binaries; the libraries: node is dynamically
# linked against glibc, libstdc++ (and on armhf libatomic).
# binutils-*: strip for ARM ELF (llvm-strip also works when installed).
pkgs="qemu-user-static libc6:arm64 libstdc++6:arm64 libgcc-s1:arm64 \
libc6:armhf libstdc++6:armhf libgcc-s1:armhf libatomic1:armhf \
binutils binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf xz-utils"

missing=
for p in $pkgs; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing="$missing $p"
  fi
done

if [ -n "$missing" ]; then
  if [ -n "$need_update" ] || [ ! -d /var/lib/apt/lists ] || \
     [ -z "$(ls /var/lib/apt/lists 2>/dev/null | grep -E 'binary-(arm64|armhf)_Packages' || true)" ]; then
    log "apt-get update"
    # A mirror mid-sync can fail one index (seen: bookworm-security armhf);
    # the install below still works from the rest, so only warn here.
    $SUDO apt-get update -qq || log "warning: apt-get update reported errors, continuing"
  fi
  log "installing:$missing"
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  log "packages already installed"
fi

# ---- binfmt_misc -----------------------------------------------------------
# Lets the kernel run ARM ELF files directly through qemu-*-static. Needs a
# writable /proc/sys/fs/binfmt_misc (fails in unprivileged containers; the
# test helper then runs qemu explicitly).
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
  $SUDO mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || \
    log "warning: cannot mount binfmt_misc (qemu will be invoked explicitly)"
fi
if [ -e "$binfmt/register" ]; then
  for name in qemu-aarch64 qemu-arm; do
    if [ -e "$binfmt/$name" ]; then
      log "binfmt $name already registered"
      continue
    fi
    conf=/usr/lib/binfmt.d/$name.conf
    if [ -f "$conf" ]; then
      # The .conf holds one ':name:M:...' line; the register file takes it as is.
      if grep -v '^#' "$conf" | grep . | head -n1 | $SUDO tee "$binfmt/register" >/dev/null 2>&1; then
        log "binfmt $name registered"
      else
        log "warning: cannot register binfmt $name"
      fi
    else
      log "warning: $conf missing"
    fi
  done
fi

# ---- final check -----------------------------------------------------------
ok=1
for b in qemu-aarch64-static qemu-arm-static; do
  command -v "$b" >/dev/null || { log "error: $b not found"; ok=; }
done
[ -e /lib/ld-linux-aarch64.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 ] || { log "error: arm64 libc missing"; ok=; }
[ -e /lib/ld-linux-armhf.so.3 ] || [ -e /usr/lib/arm-linux-gnueabihf/ld-linux-armhf.so.3 ] || { log "error: armhf libc missing"; ok=; }
if command -v aarch64-linux-gnu-strip >/dev/null || command -v llvm-strip >/dev/null; then :; else
  log "warning: no ARM-capable strip (binaries will be left unstripped)"
fi
[ -n "$ok" ] || exit 1
log "ready"
