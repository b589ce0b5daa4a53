"""The gdlab command."""

import os
import subprocess
import sys

from gdlab import cli


def test_check_grads_subset_passes(capsys):
  code = cli.main(["check-grads", "--activations", "tanh,relu", "--losses",
                   "mse,softmax_cross_entropy", "--depths", "1",
                   "--biases", "per_neuron,shared"])
  out = capsys.readouterr().out
  assert code == 0
  assert "8/8 rows pass" in out
  assert "relu" in out and "softmax_cross_entropy" in out


def test_check_grads_bad_name_exits_2(capsys):
  code = cli.main(["check-grads", "--activations", "rleu"])
  err = capsys.readouterr().err
  assert code == 2
  assert "--activations" in err and "'relu'" in err and "'rleu'" in err
  assert "Traceback" not in err


def test_console_script_runs():
  out = subprocess.run([sys.executable, "-m", "gdlab.cli", "devices"],
                       capture_output=True, text=True, check=True).stdout
  assert "cpu" in out.lower()


def test_one_host_device_per_core_despite_the_imports():
  """gdlab.cli imports the library at the top; XLA_FLAGS is still in time.

  JAX reads the flags when it initialises its backends, which importing
  gdlab does not do; the command sets them first thing in ``main``.
  """
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  out = subprocess.run([sys.executable, "-m", "gdlab.cli", "devices"],
                       capture_output=True, text=True, check=True,
                       env=env).stdout
  devices = [line for line in out.splitlines() if line.startswith("  ")]
  assert len(devices) == (os.cpu_count() or 1), out
