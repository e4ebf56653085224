#!/usr/bin/env bash
# A TPU VM or pod slice with gcloud: create it, install gen on every worker, run the same
# `gen train` on all of them (jax.distributed finds the other workers by itself), stream
# the logs, delete it.
#
#   launch/tpu_vm.sh [--dry-run] create NAME --zone=ZONE --type=v4-32 [--version=VERSION] [--spot]
#   launch/tpu_vm.sh [--dry-run] setup  NAME --zone=ZONE [--repo=GIT_URL --ref=REF]
#   launch/tpu_vm.sh [--dry-run] train  NAME --zone=ZONE -- --config=FILE --workdir=gs://BUCKET/DIR [...]
#   launch/tpu_vm.sh [--dry-run] delete NAME --zone=ZONE
#
# The workdir should be on GCS (gs://...) so every worker reads and writes the same
# checkpoints. `setup` copies this checkout (its committed HEAD) to every worker, or
# clones --repo at --ref, and installs it with the `tpu` extra. After a maintenance
# event or preemption, run `train` again: it resumes.
# --dry-run prints the gcloud commands instead of running them.
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
action="${1:-}"; name="${2:-}"
if [[ -z "$action" || -z "$name" ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
shift 2

zone=""; type=""; version="tpu-ubuntu2204-base"; spot=""
repo=""; ref="main"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --zone=*) zone="${1#*=}"; shift ;;
    --type=*) type="${1#*=}"; shift ;;
    --version=*) version="${1#*=}"; shift ;;
    --spot) spot="--spot"; shift ;;
    --repo=*) repo="${1#*=}"; shift ;;
    --ref=*) ref="${1#*=}"; shift ;;
    --) shift; break ;;
    *) echo "tpu_vm.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[[ -n "$zone" ]] || { echo "tpu_vm.sh: --zone=ZONE is required" >&2; exit 2; }

run() {
  if [[ "$dry_run" -eq 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}
ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="$1"
}

case "$action" in
  create)
    [[ -n "$type" ]] || { echo "tpu_vm.sh: create needs --type=ACCELERATOR (e.g. v4-32)" >&2; exit 2; }
    run gcloud compute tpus tpu-vm create "$name" --zone="$zone" --accelerator-type="$type" \
      --version="$version" ${spot:+"$spot"}
    ;;
  setup)
    install="cd gen && python3 -m venv .venv && .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e '.[tpu]'"
    if [[ -n "$repo" ]]; then
      ssh_all "set -e; rm -rf gen && git clone -q $repo gen && (cd gen && git checkout -q $ref) && $install"
    else
      archive="$(mktemp -d)/gen.tar.gz"
      run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$archive" HEAD
      run gcloud compute tpus tpu-vm scp "$archive" "$name:gen.tar.gz" --zone="$zone" --worker=all
      ssh_all "set -e; rm -rf gen && mkdir gen && tar xzf gen.tar.gz -C gen && $install"
    fi
    ;;
  train)
    [[ $# -gt 0 ]] || { echo "tpu_vm.sh: give the gen train flags after --" >&2; exit 2; }
    # --coordinator=auto: jax.distributed.initialize() reads the slice's topology.
    ssh_all "cd gen && .venv/bin/gen train $(printf '%q ' "$@")--coordinator=auto 2>&1 | tee -a train.log"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$name" --zone="$zone" --quiet
    ;;
  *)
    echo "tpu_vm.sh: unknown action '$action' (create | setup | train | delete)" >&2; exit 2 ;;
esac
