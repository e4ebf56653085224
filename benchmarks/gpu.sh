#!/usr/bin/env bash
# benchmarks/gpu.py on a machine where gen is not installed (a lent GPU machine).
#
#   bash benchmarks/gpu.sh [gpu.py flags]   # installs wheels carried in .whl/, then runs
#                                           # gpu.py; results under $OUT, else runs/gpu
#   bash benchmarks/gpu.sh --fetch-wheels   # where pip reaches PyPI: those wheels into .whl/
#
# The wheels are the packages gpu.py imports that such a machine may lack: ml_collections
# (configs), grain and its own needs (the input pipeline, imported by gen.core even when
# no data is read), for CPython 3.12 on x86-64 Linux (PYTHON_VERSION to change it). Keep
# .whl/ out of git: echo /.whl/ >> .git/info/exclude
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(ml_collections==1.1.0 grain==0.2.18 array_record==0.8.6 portpicker==1.6.0)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
  exec "$PY" -m pip download --no-deps --only-binary=:all: \
    --python-version "${PYTHON_VERSION:-3.12}" --implementation cp "${platforms[@]}" \
    -d .whl "${WHEELS[@]}"
fi

if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu.py "$@"
