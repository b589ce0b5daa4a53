"""Two processes on loopback, through jax.distributed, on CPU."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from gdlab import cli
from gdlab import results

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
SETS = ["--set", "data.n=80", "--set", "train.dtype=float64", "--set",
        "train.stop.max_epochs=10"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") +
             " --xla_force_host_platform_device_count=1")
  port = _free_port()
  procs = []
  for pid in range(2):
    args = [sys.executable, "-m", "gdlab.cli", "run", str(TINY), "--out",
            str(tmp_path / f"out{pid}"), "--distributed", "--coordinator",
            f"127.0.0.1:{port}", "--num-processes", "2", "--process-id",
            str(pid)] + SETS
    procs.append(subprocess.Popen(args, env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, out + err
  # Only process 0 writes a results folder.
  assert (tmp_path / "out0" / "report.md").exists()
  assert not (tmp_path / "out1").exists()
  # The same run in one process: this one.
  assert cli.main(["run", str(TINY), "--out", str(tmp_path / "single")] +
                  SETS) == 0
  for run in ("gd", "momentum"):
    two = results.load_run(tmp_path / "out0" / "runs" / run)
    one = results.load_run(tmp_path / "single" / "runs" / run)
    assert two.summary["processes"] == 2 and two.summary["devices"] == 2
    assert len(two.steps["loss"]) == len(one.steps["loss"]) == 10 * 8
    np.testing.assert_allclose(two.steps["loss"], one.steps["loss"],
                               rtol=1e-10)
    np.testing.assert_allclose(two.epochs["test_loss"],
                               one.epochs["test_loss"], rtol=1e-10)
