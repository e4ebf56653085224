"""The same run on 1 and on 8 (fake CPU) devices: the batch is sharded, results agree."""

import json
import os
import subprocess
import sys

import numpy as np
from conftest import ROOT


def _run(n, tmp_path):
  out = tmp_path / f"params{n}.npz"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  subprocess.run([sys.executable, os.path.join(ROOT, "tests", "multidevice_run.py"), str(n),
                  str(tmp_path / f"run{n}"), str(out)], check=True, env=env, cwd=ROOT,
                 capture_output=True)
  lines = [json.loads(l) for l in open(tmp_path / f"run{n}" / "metrics.jsonl")]
  return dict(np.load(out)), [l["loss"] for l in lines if l["split"] == "train"]


def test_one_and_eight_devices_agree(tmp_path):
  p1, loss1 = _run(1, tmp_path)
  p8, loss8 = _run(8, tmp_path)
  assert len(loss1) == 3 and len(loss8) == 3
  np.testing.assert_allclose(loss1, loss8, rtol=1e-5)
  assert p1.keys() == p8.keys()
  for k in p1:
    # Same math, different reduction order across devices: equal up to float rounding.
    np.testing.assert_allclose(p1[k], p8[k], rtol=1e-4, atol=1e-6, err_msg=k)
