"""Trains a tiny config on fake CPU devices and saves its final params and losses.

Run as a subprocess by test_parallel.py (XLA_FLAGS must be set before jax is imported):

  python multidevice_run.py DEVICES WORKDIR OUT.npz FAMILY OVERRIDES_JSON [I N ADDRESS]

FAMILY is vae or lm (the tiny test configs of conftest.py). With I N ADDRESS it is process
I of N, with the coordinator at ADDRESS (loopback), each process with DEVICES devices.
Only process 0 writes OUT.npz (the params) and metrics.jsonl. Environment:
GEN_TEST_STOP_AT=K stops at step K as if preempted; GEN_TEST_SIGNALS=1 handles SIGTERM.
"""

import json
import os
import sys

devices, workdir, out, family, overrides = sys.argv[1:6]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import tiny_lm, tiny_vae  # noqa: E402  (Before jax: it adds test XLA flags.)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from gen.core import parallel, train  # noqa: E402
from gen.core.logging import setup_logging  # noqa: E402

setup_logging()
if len(sys.argv) > 6:
  pid, n, address = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
  parallel.initialize_distributed(address, n, pid, bind_address=address)
assert jax.local_device_count() == int(devices), jax.devices()
make = {"vae": tiny_vae, "lm": tiny_lm}[family]
stop_at = int(os.environ.get("GEN_TEST_STOP_AT", 0)) or None
state = train.train(make(**json.loads(overrides)), workdir, stop_at_step=stop_at,
                    handle_signals=os.environ.get("GEN_TEST_SIGNALS") == "1")
params = parallel.to_host(state.params)  # Whole arrays, gathered (every process takes part).
if jax.process_index() == 0:
  leaves = jax.tree_util.tree_leaves_with_path(params)
  np.savez(out, **{jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves})
