"""Trains the tiny digits VAE on N fake CPU devices and saves the final params (.npz).

Run as a subprocess by test_parallel.py: XLA_FLAGS must be set before jax is imported.
Usage: python multidevice_run.py NUM_DEVICES WORKDIR OUT.npz
"""

import os
import sys

n, workdir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from conftest import tiny_vae  # noqa: E402

from gen.core import train  # noqa: E402

assert jax.device_count() == n, jax.devices()
state = train.train(tiny_vae(**{"train.num_steps": 3, "train.checkpoint_every": 0}), workdir,
                    handle_signals=False)
leaves = jax.tree_util.tree_leaves_with_path(state.params)
np.savez(out, **{jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves})
