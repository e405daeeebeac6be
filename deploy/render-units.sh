#!/usr/bin/env bash
# Regenerates systemd/*.service from the Ansible role templates (role
# defaults). Usage: deploy/render-units.sh [OUT_DIR]   (default: systemd/)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/systemd}
venv=${DREAMSTREAM_DEPLOY_VENV:-${DREAMSTREAM_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dreamstream}/deploy-venv}
[ -x "$venv/bin/ansible-playbook" ] || { echo "no $venv/bin/ansible-playbook: run deploy/check.sh once (it creates the venv)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$repo/deploy"
ANSIBLE_CONFIG="$repo/ansible/ansible.cfg" ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false \
  "$venv/bin/ansible-playbook" -i localhost, -e "out_dir=$out" render-units.yml >/dev/null
