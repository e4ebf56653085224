#!/usr/bin/env bash
# Runs one `gen train` as N processes on this machine, as a multi-host job would run
# (one coordinator on the loopback interface; each process gets --process_id).
#
#   launch/local.sh [--dry-run] [-n N] [--cpu_devices=K] -- --config=FILE --workdir=DIR [...]
#
# --cpu_devices=K gives every process K fake CPU devices (to test sharding without an
# accelerator). SIGTERM / SIGINT are passed on to every process: they agree on a step,
# checkpoint and exit 0; running the same command again resumes.
set -euo pipefail

n=2
cpu_devices=0
dry_run=0
port="${GEN_COORDINATOR_PORT:-$((20000 + RANDOM % 20000))}"
gen="${GEN:-gen}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    -n) n="$2"; shift 2 ;;
    -n=*|--num_processes=*) n="${1#*=}"; shift ;;
    --cpu_devices=*) cpu_devices="${1#*=}"; shift ;;
    --) shift; break ;;
    *) echo "local.sh: unknown option '$1' (usage: local.sh [--dry-run] [-n N] [--cpu_devices=K] -- GEN_TRAIN_FLAGS)" >&2; exit 2 ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "local.sh: give the gen train flags after --, e.g. -- --config=configs/vae/digits.py --workdir=runs/x" >&2
  exit 2
fi

address="127.0.0.1:${port}"
flags="$(printf '%q ' "$@")"
env_prefix=""
if [[ "$cpu_devices" -gt 0 ]]; then
  env_prefix="JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=${cpu_devices}"
fi

pids=()
for ((i = 0; i < n; i++)); do
  cmd="${env_prefix:+env ${env_prefix} }${gen} train ${flags}--coordinator=${address} --num_processes=${n} --process_id=${i} --coordinator_bind=${address}"
  if [[ "$dry_run" -eq 1 ]]; then
    echo "$cmd"
  else
    bash -c "exec $cmd" &
    pids+=($!)
  fi
done
[[ "$dry_run" -eq 1 ]] && exit 0

trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT
status=0
for pid in "${pids[@]}"; do
  while true; do  # `wait` returns early when a trapped signal arrives: wait again.
    set +e; wait "$pid"; rc=$?; set -e
    if kill -0 "$pid" 2>/dev/null; then continue; fi
    break
  done
  [[ "$rc" -ne 0 ]] && status="$rc"
done
exit "$status"
