"""Smoke tests of the benchmarks: each runs on its tiny size and reports.

Nothing here asserts a timing: the figures depend on the machine and on
what else runs on it.  The tests check that every benchmark runs end to end
through ``benchmarks.run`` (each in its own process, as ``make bench`` runs
them), reports rows, targets and compile times, and that a missing peer is
skipped with a note rather than an error.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("throughput", "engines", "sweeps", "linesearch", "digits",
         "compile_time", "memory")
REPORT_NAMES = {"compile_time": "compile"}
# The throughput benchmark's rows of fits without and with tracking (named
# here rather than imported: the benchmark module counts compilations of
# the process that imports it).
TRACKING_ROWS = ("gdlab.fit, whole call, track=None",
                 "gdlab.fit, sharpness at the end (every=E)",
                 "gdlab.fit, sharpness every epoch (every=1)")


def run_bench(tmp_path, *args):
  out = tmp_path / "results.json"
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.run", "--size", "tiny", "--out",
       str(out), *args], cwd=ROOT, capture_output=True, text=True,
      timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return json.loads(out.read_text()), proc.stdout


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_runs_on_tiny_size(tmp_path, name):
  # Every run treats PyTorch as missing: the throughput benchmark must skip
  # its row with a note (and the suite need not time PyTorch).
  result, stdout = run_bench(tmp_path, "--only", name, "--without", "torch")
  assert result["size"] == "tiny"
  assert result["machine"]["cores"] >= 1 and result["machine"]["cpu"]
  # The devices, from the benchmark's own process.
  assert result["machine"]["backend"] == "cpu"
  assert result["machine"]["device_count"] >= 1
  report = result["benchmarks"][REPORT_NAMES.get(name, name)]
  assert "error" not in report
  assert report["rows"], report
  assert report["compile"], report
  for target in report["targets"]:
    assert set(target) == {"what", "value", "target", "met"}
  assert "== targets" in stdout
  if name == "throughput":  # the missing peer is skipped with a note
    assert any("skipped" in note for note in report["notes"]), report["notes"]
    assert not any("torch" in row["case"] for row in report["rows"])
    assert any("gdlab" in row["case"] for row in report["rows"])
    # Tracking adds no training chunk: the tracked fits run the untracked
    # fit's compiled program.
    rows = {row["case"]: row for row in report["rows"]}
    chunks = [rows[case]["chunk_compilations"] for case in TRACKING_ROWS]
    assert chunks == [1, 0, 0], chunks
  if name == "compile_time":  # the second `gdlab run` draws no figure anew
    rows = {row["case"]: row for row in report["rows"]}
    first, second = (rows[f"gdlab run closed_form --smoke, {p} process"]
                     for p in ("first", "second"))
    assert first["figures_drawn"] > 0 and second["figures_drawn"] == 0
    assert second["compilations"] == 0


def test_optional_peers_honour_without(monkeypatch):
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("GDLAB_BENCH_WITHOUT", "sklearn, scipy")
  assert common.optional("sklearn") is None
  assert common.optional("scipy") is None
  assert common.optional("no_such_package_here") is None
  monkeypatch.setenv("GDLAB_BENCH_WITHOUT", "")
  assert common.optional("numpy") is not None


def test_timing_alternates_and_reports_medians():
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  calls = []
  timings = common.alternate({"a": lambda: calls.append("a"),
                              "b": lambda: calls.append("b")}, repeats=3)
  assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
  assert set(timings) == {"a", "b"}
  assert all(len(t.samples) == 3 for t in timings.values())


def test_unknown_benchmark_is_rejected(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.run", "--only", "nope",
       "--no-write"], cwd=ROOT, capture_output=True, text=True, timeout=120,
      check=False)
  assert proc.returncode == 2
  assert "unknown benchmarks" in proc.stderr
