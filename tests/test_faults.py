"""Faults placed on purpose: signals, kills, damaged and foreign folders.

Signals are sent by the process to itself at a chosen moment (start-up,
compilation, mid-chunk, between the metrics and the checkpoint, plotting),
from a driver that patches the function where the moment is; every case must
end with the signal's exit status, a true message, and a folder that resumes
to the numbers of an uninterrupted run.  The folder guards (names, --out,
the lock, resume checks, damaged files) run in process.  ``tests/kill_runs.py``
kills runs at random moments instead (by hand: it takes minutes).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from flax import serialization

from gdlab import _startup, cli, config, folders, metrics_log, results, run
from helpers import without_timing

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
# Two variants of two chunks each: enough moments to place a signal in.
SETS = ["--set", "train.stop.max_epochs=4", "--set", "train.chunk_epochs=2"]

# Runs the gdlab command in this process with a signal placed by patching
# one function; then (if the process lives) resumes and prints the outcome.
DRIVER = textwrap.dedent("""
    import json, os, signal, sys, threading
    from gdlab import cli, loop, report, results
    from gdlab import config as config_lib
    phase, signame, out, *argv = sys.argv[1:]
    sig = getattr(signal, signame)
    send = lambda: os.kill(os.getpid(), sig)
    where = {"startup": (config_lib, "load", 1),
             "compile": (loop, "compiled_chunk", 1),
             "compile2": (loop, "compiled_chunk", 1),
             "chunk": (loop, "_one_chunk", 2),
             "writing": (results, "write_checkpoint", 2),
             "sigkill": (results, "write_checkpoint", 2),
             "plotting": (report, "run_report", 1)}[phase]
    module, name, when = where
    original = getattr(module, name)
    calls = [0]
    def patched(*args, **kwargs):
      calls[0] += 1
      if calls[0] == when:
        if phase.startswith("compile"):
          # While XLA compiles: from another thread, as a user's Ctrl-C.
          threading.Timer(0.01, send).start()
          if phase == "compile2":
            threading.Timer(0.2, send).start()
        else:
          send()
      return original(*args, **kwargs)
    setattr(module, name, patched)
    code = cli.main(["run", *argv, "--out", out])
    setattr(module, name, original)
    print(json.dumps({"code": code}), flush=True)
""")


def _driver(tmp_path, phase, signame, out):
  script = tmp_path / "driver.py"
  script.write_text(DRIVER)
  env = dict(os.environ)
  if phase.startswith("compile"):  # so that XLA does compile
    env["GDLAB_COMPILATION_CACHE"] = "off"
  return subprocess.run(
      [sys.executable, str(script), phase, signame, str(out), str(TINY),
       *SETS], capture_output=True, text=True, timeout=300, env=env)


def _numbers(out: Path) -> dict:
  """Each run's logged rows, summary and final state, timing aside."""
  found = {}
  for run_dir in sorted((out / "runs").iterdir()):
    lines = (run_dir / metrics_log.METRICS).read_text().splitlines()
    summary = json.loads((run_dir / results.SUMMARY).read_text())
    summary.pop("versions")
    # steps.npz byte for byte, and no chunk files left beside it.
    assert not (run_dir / metrics_log.STEP_CHUNKS).exists()
    found[run_dir.name] = (
        lines and [without_timing(json.loads(line)) for line in lines],
        (run_dir / metrics_log.STEPS).read_bytes(),
        without_timing(summary), results.read_checkpoint(run_dir).state,
        (run_dir / results.CONFIG).read_bytes())
  return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run, by the command in this process."""
  out = tmp_path_factory.mktemp("faults") / "reference"
  assert cli.main(["run", str(TINY), *SETS, "--out", str(out)]) == 0
  return _numbers(out)


def _resume(out: Path) -> None:
  args = ["run", str(TINY), *SETS, "--out", str(out)]
  assert cli.main(args + (["--resume"] if folders.is_gdlab_folder(out)
                          else [])) == 0


@pytest.mark.parametrize("phase,signame", [
    ("startup", "SIGTERM"), ("compile", "SIGINT"), ("chunk", "SIGTERM"),
    ("writing", "SIGINT"), ("plotting", "SIGTERM"), ("compile2", "SIGINT"),
    ("sigkill", "SIGKILL")])
def test_a_signal_at_any_moment_leaves_a_folder_that_resumes(
    tmp_path, reference, phase, signame):
  out = tmp_path / "out"
  proc = _driver(tmp_path, phase, signame, out)
  err = proc.stderr
  assert "Traceback" not in err and "Segmentation" not in err, err
  sig = getattr(signal, signame)
  if phase == "sigkill":
    assert proc.returncode == -signal.SIGKILL
    # Killed between a chunk's metric rows and its checkpoint: the log is a
    # chunk ahead of the checkpoint, and resume cuts it back.
    run_dir = out / "runs" / "gd"
    meta = results.read_checkpoint(run_dir).meta
    steps = metrics_log.read_metrics(run_dir)[0]
    assert len(steps["loss"]) > meta["step_rows"]
    assert list((run_dir / metrics_log.STEP_CHUNKS).glob("*.npz"))
  elif phase == "compile2":  # a second Ctrl-C: out at once
    assert proc.returncode == 128 + sig, err
    assert "stopped at once" in err
  else:
    assert proc.returncode == 0, err
    assert json.loads(proc.stdout.splitlines()[-1])["code"] == 128 + sig, err
    message = err.strip().splitlines()[-1]
    checkpoints = list(out.glob(f"runs/*/{results.CHECKPOINT}"))
    if "checkpoints are in" in message:
      assert checkpoints, message
      assert "--resume" in message
    elif "nothing was written" in message:
      assert not out.exists(), message
    else:
      assert "no checkpoint yet" in message and not checkpoints, message
  _resume(out)
  assert _numbers(out) == reference
  # Integer columns stay integers through a resume (the bytes, not only the
  # numbers, of an uninterrupted run).
  row = json.loads((out / "runs" / "gd" / metrics_log.METRICS).read_text()
                   .splitlines()[0])
  for key in ("epoch", "step", "fun_evals", "grad_evals"):
    assert isinstance(row[key], int), row
  steps = metrics_log.read_metrics(out / "runs" / "gd")[0]
  for key in ("step", "fun_evals", "grad_evals"):
    assert steps[key].dtype == np.int64, key


# ----------------------------------------------------------------------------
# Resume: refused unless the folder is the run's own, unchanged and intact.


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished run folder of two chunks (copied by each test)."""
  exp = config.load(TINY)
  cfg = config.apply_overrides(exp.base, {"train.stop.max_epochs": 4,
                                          "train.chunk_epochs": 2})
  out = tmp_path_factory.mktemp("finished") / "run"
  run.run(cfg, out, plots=False)
  return cfg, out


def _copy(src: Path, dst: Path) -> Path:
  subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
  return dst


def _snapshot(folder: Path) -> dict:
  return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
          for p in sorted(folder.rglob("*"))}


def _refused(fn, match, folder):
  before = _snapshot(folder)
  with pytest.raises(config.ConfigError, match=match) as e:
    fn()
  assert "\n" not in str(e.value)
  assert _snapshot(folder) == before


@pytest.mark.parametrize("change,key", [
    ({"model.hidden": [8]}, "model.hidden"),
    ({"optimizer.learning_rate": 0.5}, "optimizer.learning_rate"),
    ({"train.regime.batch_size": 16}, "train.regime.batch_size"),
    ({"data.seed": 3}, "data.seed"),
])
def test_resume_with_another_config_is_refused(tmp_path, finished, change,
                                               key):
  cfg, src = finished
  folder = _copy(src, tmp_path / "run")
  other = config.apply_overrides(cfg, change)
  _refused(lambda: run.run(other, folder, resume=True, plots=False,
                           allow_changes=True),
           rf"--resume: the config differs .* in {key} ", folder)


def test_resume_allows_a_larger_budget_when_asked(tmp_path, finished):
  cfg, src = finished
  folder = _copy(src, tmp_path / "run")
  # A changed chunk size leaves the finished run as it was.
  state = results.read_checkpoint(folder).state
  rechunked = config.apply_overrides(cfg, {"train.chunk_epochs": 3})
  run.run(rechunked, folder, resume=True, allow_changes=True, plots=False)
  assert results.read_checkpoint(folder).state == state
  assert results.load_run(folder).summary["epochs"] == 4
  more = config.apply_overrides(rechunked, {"train.stop.max_epochs": 6,
                                            "train.chunk_epochs": 2})
  _refused(lambda: run.run(more, folder, resume=True, plots=False),
           "pass --allow-changes", folder)
  result = run.run(more, folder, resume=True, allow_changes=True,
                   plots=False)
  assert result.stop_reason == "max_epochs"
  assert results.load_run(folder).summary["epochs"] == 6
  whole = run.run(more, tmp_path / "whole", plots=False)
  assert results.read_checkpoint(folder).state == results.read_checkpoint(
      tmp_path / "whole").state
  del whole


@pytest.mark.parametrize("damage,match", [
    (lambda d: _flip(d / results.CHECKPOINT), "checksum does not match|do "
     "not parse"),
    (lambda d: (d / results.CHECKPOINT).write_bytes(b"\x00" * 40),
     "checkpoint"),
    (lambda d: (d / metrics_log.METRICS).write_text(""),
     "metrics.jsonl: expected the .* rows"),
    (lambda d: (d / metrics_log.STEPS).unlink(),
     "steps.npz: expected the .* step rows .* missing"),
    (lambda d: (d / metrics_log.STEPS).write_bytes(
        b"PK\x03\x04" + b"\x00" * 40),
     "steps.npz: expected NumPy arrays"),
    (lambda d: (d / metrics_log.METRICS).write_text(
        "{not json\n" + (d / metrics_log.METRICS).read_text()),
     "metrics.jsonl: line 1: expected a JSON object"),
    (lambda d: (d / results.CONFIG).write_text("name: edited\n"),
     "config.yaml' was changed after the run started"),
    (lambda d: (d / folders.MARKER).write_text("[]"),
     "gdlab.json: expected a JSON object"),
    (lambda d: (d / folders.MARKER).unlink(), "expected a folder that gdlab "
     "made"),
])
def test_a_damaged_folder_is_named_never_resumed(tmp_path, finished, damage,
                                                 match):
  cfg, src = finished
  folder = _copy(src, tmp_path / "run")
  damage(folder)
  _refused(lambda: run.run(cfg, folder, resume=True, plots=False), match,
           folder)


def test_step_chunks_are_read_in_order_and_cut_at_the_checkpoint(tmp_path):
  rng = np.random.default_rng(0)
  steps = {"loss": rng.normal(size=10).astype(np.float32),
           "step_size": rng.normal(size=10),
           "grad_evals": np.arange(10, dtype=np.int32)}
  epochs = {"epoch": np.arange(1, 4), "train_loss": rng.normal(size=3)}
  part = lambda d, n: {k: v[:n] for k, v in d.items()}

  def read(rows=None):
    got, _ = metrics_log.read_metrics(tmp_path, rows=rows)
    n = len(got["loss"])
    np.testing.assert_array_equal(got["step"], np.arange(1, n + 1))
    for k, v in steps.items():
      np.testing.assert_array_equal(got[k], v[:n])
      assert got[k].dtype == (np.int64 if k == "grad_evals" else np.float64)
    return n

  metrics_log.write_metrics(tmp_path, {}, {})
  # Three chunks; the checkpoint covers the first two (7 steps, 2 epochs).
  for (s0, e0), (s1, e1) in zip([(0, 0), (4, 1), (7, 2)],
                                [(4, 1), (7, 2), (10, 3)]):
    metrics_log.append_metrics(tmp_path, part(steps, s1), part(epochs, e1),
                               s0, e0)
  chunks = tmp_path / metrics_log.STEP_CHUNKS
  assert sorted(p.name for p in chunks.iterdir()) == [
      "000000000.npz", "000000004.npz", "000000007.npz"]
  assert read() == 10 and read((7, 2)) == 7
  # A resume writes the rows it keeps whole and drops the chunk files.
  stale = (chunks / "000000004.npz").read_bytes()
  metrics_log.write_metrics(tmp_path, part(steps, 7), part(epochs, 2))
  assert not chunks.exists() and read() == 7
  first = (tmp_path / metrics_log.STEPS).read_bytes()
  metrics_log.write_metrics(tmp_path, part(steps, 7), part(epochs, 2))
  assert (tmp_path / metrics_log.STEPS).read_bytes() == first
  with np.load(tmp_path / metrics_log.STEPS) as z:
    assert z["loss"].dtype == np.float32 and z["step_size"].dtype == float
  # Killed while steps/ was being removed: the rows left are read once.
  chunks.mkdir()
  (chunks / "000000004.npz").write_bytes(stale)
  assert read() == 7
  # A chunk with no rows before it is damage, named.
  (tmp_path / metrics_log.STEPS).unlink()
  with pytest.raises(config.ConfigError, match="000000004.npz: expected "
                     "step rows from 1"):
    metrics_log.read_metrics(tmp_path)


def test_a_folder_of_the_older_format_is_read_never_resumed(tmp_path,
                                                           finished):
  cfg, src = finished
  folder = _copy(src, tmp_path / "run")
  steps, epochs = metrics_log.read_metrics(folder)
  # The older layout: a JSON line per step before the epoch lines.
  lines = [json.dumps({"kind": "step", **{k: v[i].item() for k, v in
                                          steps.items()}})
           for i in range(len(steps["loss"]))]
  old = folder / metrics_log.METRICS
  old.write_text("\n".join(lines) + "\n" + old.read_text())
  (folder / metrics_log.STEPS).unlink()
  again, epochs_again = metrics_log.read_metrics(folder)
  assert again.keys() == steps.keys() and epochs_again.keys() == epochs.keys()
  for k in steps:
    np.testing.assert_array_equal(again[k], steps[k])
    assert again[k].dtype == steps[k].dtype
  blob = serialization.msgpack_restore((folder / results.CHECKPOINT)
                                       .read_bytes())
  (folder / results.CHECKPOINT).write_bytes(serialization.msgpack_serialize(
      {**blob, "format": "gdlab-checkpoint/2"}))
  _refused(lambda: run.run(cfg, folder, resume=True, plots=False),
           "format 'gdlab-checkpoint/2'.* reads such a folder but does not "
           "resume it", folder)


def _flip(path: Path) -> None:
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))


def test_resume_needs_a_run_folder(tmp_path, finished):
  cfg, _ = finished
  with pytest.raises(config.ConfigError, match="does not exist"):
    run.run(cfg, tmp_path / "nowhere", resume=True, plots=False)
  assert not (tmp_path / "nowhere").exists()
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("my notes")
  _refused(lambda: run.run(cfg, mine, resume=True, plots=False),
           "expected a folder that gdlab made", mine)


# ----------------------------------------------------------------------------
# Folders: names, --out, one writer.


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "a/b", "..",
                                  ".hidden", "a\\b", "x" * 201, "new\nline"])
def test_variant_names_that_escape_are_refused(tmp_path, monkeypatch, capsys,
                                               name):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "exp.yaml").write_text(
      TINY.read_text().replace("  gd: {}", f"  {json.dumps(name)}: {{}}"))
  before = _snapshot(tmp_path.parent)
  assert cli.main(["run", "exp.yaml", "--out", "out"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("gdlab run: error: variants: ") and "\n" not in err
  assert _snapshot(tmp_path.parent) == before


def _cli_refused(tmp_path, capsys, argv, match):
  before = _snapshot(tmp_path)
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "Traceback" not in err, err
  assert err.startswith(f"gdlab {argv[0]}: error: ")
  assert match in err, err
  assert _snapshot(tmp_path) == before


def test_out_must_be_a_new_empty_or_gdlab_folder(tmp_path, monkeypatch,
                                                 capsys):
  monkeypatch.chdir(tmp_path)
  Path("afile").write_text("x")
  mine = Path("mine")
  mine.mkdir()
  (mine / "report.md").write_text("my report")
  for argv, match in [
      (["run", str(TINY), "--smoke", "--out", "afile"], "which is a file"),
      (["run", str(TINY), "--smoke", "--out", "afile/sub"],
       "inside the file"),
      (["run", str(TINY), "--smoke", "--out", "mine"],
       "gdlab did not write"),
      (["run", str(TINY), "--smoke", "--out", "/proc/gdlab-out"],
       "cannot make the folder"),
      (["sweep", str(TINY), "--smoke", "--out", "mine"],
       "gdlab did not write"),
      (["run", str(TINY), "--smoke", "--out", "new", "--resume"],
       "does not exist"),
      (["run", str(TINY), "--smoke", "--out", "mine", "--resume"],
       "expected a folder that gdlab made"),
      (["run", str(TINY), "--smoke", "--out", "new", "--allow-changes"],
       "expected with --resume"),
      # Rejected when the data meet the loss: the new folder is removed.
      (["run", str(TINY), "--smoke", "--set", "loss.name=hinge", "--out",
        "new"], "y_train: expected labels in {-1, +1}"),
      (["sweep", str(TINY), "--smoke", "--set", "loss.name=hinge", "--out",
        "new"], "y_train: expected labels in {-1, +1}"),
  ]:
    _cli_refused(tmp_path, capsys, argv, match)


def test_a_sweep_or_run_is_never_replaced(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  args = ["--smoke", "--grid", "optimizer.learning_rate=0.1"]
  assert cli.main(["sweep", str(TINY), *args, "--out", "s"]) == 0
  capsys.readouterr()
  _cli_refused(tmp_path, capsys, ["sweep", str(TINY), *args, "--out", "s"],
               "already holds a gdlab sweep")
  _cli_refused(tmp_path, capsys, ["run", str(TINY), "--smoke", "--out", "s",
                                  "--resume"], "holds a sweep")


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(
    tmp_path, finished):
  cfg, src = finished
  folder = _copy(src, tmp_path / "run")
  lock = folder / folders.LOCK
  lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "since": "now"}))
  with pytest.raises(config.ConfigError,
                     match=rf"being written by another gdlab process \(pid "
                     rf"{os.getpid()}"):
    run.run(cfg, folder, resume=True, plots=False)
  gone = subprocess.Popen(["true"])
  gone.wait()
  lock.write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(),
                              "since": "then"}))
  run.run(cfg, folder, resume=True, plots=False)
  assert not lock.exists()


def test_two_commands_on_one_folder(tmp_path):
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "gdlab.cli", "run", str(TINY), "--smoke",
         "--out", str(out)]
  procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
  outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
  assert [code for code, _ in outcomes] == [0, 2], outcomes
  err = outcomes[1][1].strip()
  assert "\n" not in err and ("another gdlab process" in err or
                              "already holds a gdlab" in err), err
  assert results.load_run(out / "runs" / "gd").summary["stop_reason"] == (
      "max_epochs")


def test_files_follow_the_umask(tmp_path, finished):
  cfg, _ = finished
  old = os.umask(0o027)
  try:
    run.run(cfg, tmp_path / "run", plots=False)
  finally:
    os.umask(old)
  for name in (results.CONFIG, metrics_log.METRICS, metrics_log.STEPS,
               results.SUMMARY, results.CHECKPOINT, folders.MARKER):
    assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o640, name


@pytest.mark.parametrize("argv,orig,expected", [
    (["/venv/bin/gdlab", "run"], ["python", "/venv/bin/gdlab", "run"], True),
    (["-m"], ["python", "-m", "gdlab.cli", "run"], True),
    (["-m"], ["python", "-m", "myexp"], False),  # a program importing gdlab
    (["script.py"], ["python", "script.py"], False),
    ([""], ["python"], False),
])
def test_start_up_signals_are_guarded_only_for_the_command(
    monkeypatch, argv, orig, expected):
  monkeypatch.setattr(sys, "argv", argv)
  monkeypatch.setattr(sys, "orig_argv", orig, raising=False)
  assert _startup.is_command() is expected
