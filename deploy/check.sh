#!/usr/bin/env bash
# The deployment (ansible/, systemd/), linted and applied for real (issue #8).
#
#   (a) a venv with pinned ansible, ansible-lint and yamllint
#   (b) ansible-playbook --syntax-check, ansible-lint (production profile) and
#       yamllint on ansible/
#   (c) systemd/*.service: identical to the role templates rendered with the
#       role defaults; systemd-analyze security --offline=yes, exposure <= 2.0
#   (d) a minimal Debian bookworm root (debootstrap, cached) gets site.yml
#       through the chroot connection, every group on that one root, with the
#       built binaries; the result is checked (users, files, rendered
#       cluster.toml and environment files, units, binaries, TLS), the units
#       pass systemd-analyze verify inside it, and a second run changes nothing
#   (e) services cannot start in a chroot (no init system runs there): the
#       control node is started on the host from the rendered unit's ExecStart
#       and ExecStartPost lines and the rendered environment file, against
#       PostgreSQL, Redis and nginx started from the root with their rendered
#       configuration; /healthz, /readyz, TLS, the WebSocket upgrade through
#       nginx, a GPU node joining over mutual TLS (started the same way from
#       its rendered unit) and the graceful stops on SIGTERM are checked
#       (deploy/host_run.py)
#
# Needs root and the Debian packages debootstrap, systemd (systemd-analyze),
# curl, openssl and python3-venv (or any python3 with venv). Exits non-zero on
# any failure. Safe to rerun: each run starts from a fresh copy of the cached
# root and unmounts what it mounted.
#
# Environment:
#   DREAMSTREAM_BIN, GPU_NODE_BIN  built binaries to deploy; unset: this script
#                                  runs `cargo build -p dreamstream -p gpu-node`
#                                  (debug profile, incremental after the tests)
#                                  and uses $CARGO_TARGET_DIR/debug/*
#   DREAMSTREAM_DEPLOY_CACHE       cache (default ~/.cache/dreamstream): venv,
#                                  debootstrap root, .deb files, the last run
#                                  and the copies of the binaries it deployed
#   DEBIAN_MIRROR                  default http://deb.debian.org/debian
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${DREAMSTREAM_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dreamstream}
venv=$cache/deploy-venv
base=$cache/debootstrap/bookworm
debs=$cache/apt-archives
work=$cache/deploy-check
root=$work/root
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
pins=(ansible==12.3.0 ansible-lint==26.10.1 yamllint==1.38.0)
max_exposure=2.0

export PYTHONDONTWRITEBYTECODE=1 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
export ANSIBLE_CONFIG=$repo/ansible/ansible.cfg ANSIBLE_LOCALHOST_WARNING=false

t_start=$SECONDS
t_step=$SECONDS
timings=()
step() {
  local now=$SECONDS
  [ -n "${current:-}" ] && timings+=("$(printf '%5ds  %s' $((now - t_step)) "$current")")
  current=$1
  t_step=$now
  printf '\n== %s\n' "$1"
}
die() { printf 'deploy check FAILED: %s\n' "$*" >&2; exit 1; }

# Unmounts everything below $1 (deepest first).
unmount_below() {
  local dir=$1 m
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd -P)
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
}
# Removes a directory tree that may hold a chroot, never crossing into mounts.
safe_rm() {
  [ -e "$1" ] || return 0
  unmount_below "$1"
  if awk -v d="$(cd "$1" && pwd -P)/" 'index($2, d) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
    die "$1 still has mounts below it; not removing it"
  fi
  rm -rf --one-file-system "$1"
}
cleanup() {
  unmount_below "$root"
}
trap cleanup EXIT

step "prerequisites"
[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot, mount)"
missing=()
for cmd in debootstrap systemd-analyze chroot mount flock curl openssl python3; do
  command -v "$cmd" >/dev/null || missing+=("$cmd")
done
[ ${#missing[@]} = 0 ] || die "missing ${missing[*]}: apt-get install -y debootstrap systemd curl openssl python3-venv"
mkdir -p "$cache"
exec 9>"$cache/deploy-check.lock"
flock -n 9 || die "another deploy/check.sh is running"

if [ -n "${DREAMSTREAM_BIN:-}" ] && [ -n "${GPU_NODE_BIN:-}" ]; then
  control_bin=$DREAMSTREAM_BIN
  gpu_bin=$GPU_NODE_BIN
else
  echo "building the binaries (debug profile; set DREAMSTREAM_BIN and GPU_NODE_BIN to skip)"
  (cd "$repo" && cargo build --locked -p dreamstream -p gpu-node --bins)
  target=${CARGO_TARGET_DIR:-$repo/target}
  control_bin=$target/debug/dreamstream
  gpu_bin=$target/debug/gpu-node
fi
for b in "$control_bin" "$gpu_bin"; do
  [ -x "$b" ] || die "$b is not an executable file"
done
echo "control node: $(realpath "$control_bin")"
echo "GPU node:     $(realpath "$gpu_bin")"
# A copy of each, so that a build finishing meanwhile (a shared target
# directory) cannot change the binaries between the two runs and the host run.
bins=$cache/deploy-check-bin
rm -rf "$bins"
mkdir -p "$bins"
cp --reflink=auto "$control_bin" "$bins/dreamstream"
cp --reflink=auto "$gpu_bin" "$bins/gpu-node"
control_bin=$bins/dreamstream
gpu_bin=$bins/gpu-node

step "(a) venv with ${pins[*]}"
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "${pins[*]}" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
  echo "${pins[*]}" >"$venv/.pins"
fi
export PATH=$venv/bin:$PATH
ansible --version | sed -n 1p
ansible-lint --version | sed -n 1p
yamllint --version

step "(b) syntax check, ansible-lint (production), yamllint"
(
  cd "$repo/ansible"
  ansible-playbook -i inventory.example.ini --syntax-check site.yml
  ansible-lint --profile production --strict
  yamllint --strict .
)

step "(c) systemd units: rendered from the templates, exposure <= $max_exposure"
rendered=$work-units
rm -rf "$rendered"
DREAMSTREAM_DEPLOY_VENV=$venv "$repo/deploy/render-units.sh" "$rendered"
for unit in dreamstream.service dreamstream-gpu-node.service; do
  diff -u "$repo/systemd/$unit" "$rendered/$unit" ||
    die "systemd/$unit differs from its template rendered with the role defaults: run deploy/render-units.sh"
done
rm -rf "$rendered"
scores=()
for unit in dreamstream.service dreamstream-gpu-node.service; do
  out=$(systemd-analyze security --offline=yes "$repo/systemd/$unit" 2>&1) || true
  score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
  [ -n "$score" ] || { echo "$out"; die "no exposure score for $unit"; }
  grep -F '✗' <<<"$out" || true
  echo "exposure $unit: $score"
  scores+=("$unit $score")
  awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }' || die "$unit: exposure $score > $max_exposure"
done

step "(d) debootstrap root ($base)"
if [ ! -f "$base/.complete" ]; then
  safe_rm "$base.partial"
  mkdir -p "$(dirname "$base")"
  debootstrap --variant=minbase --include=python3,systemd,systemd-sysv,iproute2,ca-certificates \
    bookworm "$base.partial" "$mirror"
  unmount_below "$base.partial"
  touch "$base.partial/.complete"
  safe_rm "$base"
  mv "$base.partial" "$base"
else
  echo "reusing the cached root"
fi

step "(d) fresh copy of the root, apply site.yml through the chroot connection"
# The previous run's tree is moved aside and deleted in the background (a
# large tree takes a while to delete on a busy disk).
unmount_below "$work"
if [ -e "$work" ]; then
  trash=$cache/deploy-check.trash.$$
  safe_rm "$trash"
  awk -v d="$work/" 'index($2, d) == 1 { found = 1 } END { exit found }' /proc/self/mounts || die "mounts left below $work"
  mv "$work" "$trash"
fi
for old in "$cache"/deploy-check.trash.*; do
  [ -e "$old" ] && ! awk -v d="$old/" 'index($2, d) == 1 { found = 1 } END { exit !found }' /proc/self/mounts &&
    (rm -rf --one-file-system "$old" >/dev/null 2>&1 &)
done
mkdir -p "$work/inventory" "$debs"
cp -a "$base" "$root"
rm -f "$root/.complete"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# No daemon starts during package installation (the standard chroot guard).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
find "$debs" -maxdepth 1 -name '*.deb' -exec cp -t "$root/var/cache/apt/archives/" {} +
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"

# Free loopback ports, so that nothing here collides with services of the host.
read -r p_http p_cluster p_db p_redis p_proxy_http p_proxy_https < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
cat >"$work/params.json" <<EOF
{
  "control_node_binary_src": "$control_bin",
  "gpu_node_binary_src": "$gpu_bin",
  "control_node_listen": "127.0.0.1:$p_http",
  "control_node_cluster_listen": "127.0.0.1:$p_cluster",
  "common_cluster_port": $p_cluster,
  "common_db_port": $p_db,
  "common_redis_port": $p_redis,
  "control_node_proxy_http_port": $p_proxy_http,
  "control_node_proxy_https_port": $p_proxy_https,
  "secrets_dir": "$work/inventory/secrets",
  "work_dir": "$work"
}
EOF
cp -r "$repo/deploy/test-inventory/group_vars" "$work/inventory/"
cat >"$work/inventory/hosts.ini" <<EOF
# One Debian root in every group, reached with the chroot connection.
[control]
dreamstream-test ansible_host=$root

[gpu]
dreamstream-test

[db]
dreamstream-test

[redis]
dreamstream-test

[all:vars]
ansible_connection=community.general.chroot
ansible_python_interpreter=/usr/bin/python3
# Already root in the chroot; su (no sudo in a fresh root) for become_user postgres.
ansible_become_method=ansible.builtin.su
private_address=127.0.0.1
EOF
ansible-vault view --vault-password-file "$repo/deploy/test-vault-password" \
  "$work/inventory/group_vars/all/vault.yml" >"$work/vault.plain.yml"
play() {
  (cd "$repo/ansible" && ansible-playbook -i "$work/inventory/hosts.ini" \
    --vault-password-file "$repo/deploy/test-vault-password" -e "@$work/params.json" site.yml) >"$1" 2>&1 || {
    tail -60 "$1"
    die "ansible-playbook failed (log: $1)"
  }
  sed -n '/PLAY RECAP/,$p' "$1"
}
t_play=$SECONDS
play "$work/run1.log"
echo "first run: $((SECONDS - t_play)) s"
find "$root/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -exec cp -n -t "$debs/" {} +

step "(d) check the applied root"
"$venv/bin/python" "$repo/deploy/verify_root.py" "$root" "$repo" "$work/params.json" "$work/vault.plain.yml"
for unit in "$repo/systemd/dreamstream.service" "$repo/systemd/dreamstream-gpu-node.service" \
  /etc/systemd/system/dreamstream.service /etc/systemd/system/dreamstream-gpu-node.service \
  /etc/systemd/system/dreamstream-pg-backup.service /etc/systemd/system/dreamstream-pg-backup.timer; do
  out=$(systemd-analyze verify --man=no --root="$root" "$unit" 2>&1) || die "systemd-analyze verify $unit: $out"
  [ -z "$out" ] || die "systemd-analyze verify $unit: $out"
  echo "  ok   systemd-analyze verify --root=<root> $unit"
done
for unit in dreamstream.service dreamstream-gpu-node.service; do
  systemd-analyze security --offline=yes --root="$root" "$unit" 2>&1 | tail -1 | sed 's/^/  installed: /'
done

step "(d) second run: idempotent"
t_play=$SECONDS
play "$work/run2.log"
echo "second run: $((SECONDS - t_play)) s"
recap=$(grep -E '^dreamstream-test +:' "$work/run2.log")
if ! grep -qE 'changed=0 .*failed=0' <<<"$recap"; then
  grep -B4 -E '^changed:' "$work/run2.log" || true
  die "the second run changed something: $recap"
fi
echo "second run: changed=0"

step "(e) the control node on the host from the rendered unit and environment file"
"$venv/bin/python" "$repo/deploy/host_run.py" "$root" "$work/params.json"

step "done"
unmount_below "$root"
rm -rf "$bins"
printf '\ntimings:\n'
printf '%s\n' "${timings[@]}"
printf '%5ds  total\n' $((SECONDS - t_start))
printf '\nexposure (systemd-analyze security --offline=yes):\n'
printf '  %s\n' "${scores[@]}"
echo "deploy check passed"
