"""Kills `gdlab run` at random moments, resumes, and compares with a whole run.

Run by hand (it takes minutes; the test suite places its signals
deterministically instead, in tests/test_faults.py)::

    python tests/kill_runs.py [--kills 20] [--seed 0] [--workers 2]

Each trial starts ``gdlab run`` on tests/configs/tiny.yaml (two variants, a
few hundred chunks), waits a random time from start-up to the last plot, and
sends SIGINT, SIGTERM, SIGKILL or two SIGINTs.  It then checks that the
process did not crash (no SIGSEGV or SIGABRT), that the exit status is the
signal's (130, 143 or -9), that the folder is either absent (nothing was
written yet) or a valid gdlab folder, resumes it with ``--resume`` (or runs
it afresh when absent), and compares every run's files with those of an
uninterrupted run: config.yaml, gdlab.json and steps.npz byte for byte,
metrics.jsonl once timing fields are set aside, summary.json's numbers, and
the checkpoint's state.  Prints one line per trial and a total; exits 1 on any
failure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flax import serialization

from gdlab import folders
from gdlab import metrics_log
from gdlab import results
from helpers import without_timing

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "tiny.yaml"
SETS = ["--set", "train.stop.max_epochs=8000", "--set",
        "train.chunk_epochs=40"]
ACTIONS = ("SIGINT", "SIGTERM", "SIGKILL", "SIGINT x2")


def _command(out: Path, *extra: str) -> list[str]:
  return [sys.executable, "-m", "gdlab.cli", "run", str(CONFIG), "--out",
          str(out), *SETS, *extra]


def _run_files(run_dir: Path) -> dict:
  """What must equal an uninterrupted run's, timing fields aside."""
  files = {}
  for name in (results.CONFIG, folders.MARKER, metrics_log.STEPS):
    files[name] = (run_dir / name).read_bytes()
  if (run_dir / metrics_log.STEP_CHUNKS).exists():
    files[metrics_log.STEP_CHUNKS] = "left behind"
  files[metrics_log.METRICS] = [
      without_timing(json.loads(line)) for line in
      (run_dir / metrics_log.METRICS).read_text().splitlines()]
  summary = json.loads((run_dir / results.SUMMARY).read_text())
  summary.pop("versions", None)
  files[results.SUMMARY] = without_timing(summary)
  point = results.read_checkpoint(run_dir)
  files[results.CHECKPOINT] = (
      point.state, without_timing(point.meta))
  # The state itself, decoded, so a mismatch is readable.
  serialization.msgpack_restore(point.state)
  return files


def _compare(reference: Path, out: Path) -> str | None:
  for ref_run in sorted((reference / "runs").iterdir()):
    run_dir = out / "runs" / ref_run.name
    if not run_dir.is_dir():
      return f"{run_dir.name}: missing"
    a, b = _run_files(ref_run), _run_files(run_dir)
    for name in a:
      if a[name] != b[name]:
        return f"{run_dir.name}/{name} differs"
  return None


def trial(i: int, seed: int, reference: Path, span: float,
          work: Path) -> tuple[bool, str]:
  rnd = random.Random(seed * 1000 + i)
  action = ACTIONS[i % len(ACTIONS)]
  delay = rnd.uniform(0.0, span)
  out = work / f"kill{i}"
  proc = subprocess.Popen(_command(out), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  time.sleep(delay)
  sig = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM,
         "SIGKILL": signal.SIGKILL, "SIGINT x2": signal.SIGINT}[action]
  if proc.poll() is None:
    proc.send_signal(sig)
    if action == "SIGINT x2":
      time.sleep(0.05)
      if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=600)
  code = proc.returncode
  where = f"#{i:2d} {action:9s} at {delay:5.2f} s: exit {code}"
  if code in (-signal.SIGSEGV, -signal.SIGABRT, 128 + signal.SIGSEGV,
              128 + signal.SIGABRT):
    return False, f"{where}: CRASHED\n{err}"
  allowed = {0, 128 + sig} if sig != signal.SIGKILL else {0, -signal.SIGKILL}
  if code not in allowed:
    return False, f"{where}: unexpected exit status\n{err}"
  if "Traceback" in err:
    return False, f"{where}: traceback\n{err}"
  resume = folders.is_gdlab_folder(out)
  if out.exists() and not resume and folders.contents(out):
    return False, f"{where}: {out} is not a gdlab folder and not empty"
  # A folder killed before gdlab.json was written holds nothing to resume.
  again = _command(out, "--resume") if resume else _command(out)
  done = subprocess.run(again, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, text=True, timeout=600)
  if done.returncode != 0:
    return False, f"{where}: resume failed ({done.returncode})\n{done.stderr}"
  problem = _compare(reference, out)
  if problem:
    return False, f"{where}: after resume, {problem}"
  state = ("had finished" if code == 0 else "resumed" if resume else
           "ran afresh")
  return True, f"{where}: {state}, identical to the whole run"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--keep", action="store_true",
                      help="keep the folders (printed)")
  args = parser.parse_args()
  work = Path(tempfile.mkdtemp(prefix="gdlab-kills-"))
  reference = work / "reference"
  t0 = time.monotonic()
  subprocess.run(_command(reference), check=True, stdout=subprocess.DEVNULL)
  span = time.monotonic() - t0
  print(f"uninterrupted run: {span:.1f} s; kills placed in [0, {span:.1f}] s")
  ok = 0
  with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
    futures = [pool.submit(trial, i, args.seed, reference, span, work)
               for i in range(args.kills)]
    for f in futures:
      passed, line = f.result()
      ok += passed
      print(("ok   " if passed else "FAIL ") + line, flush=True)
  print(f"{ok} of {args.kills} trials: no crash, a valid folder, and a "
        f"resume identical to the uninterrupted run")
  if args.keep:
    print(f"folders: {work}")
  else:
    shutil.rmtree(work, ignore_errors=True)
  return 0 if ok == args.kills else 1


if __name__ == "__main__":
  os.environ.setdefault("PYTHONUNBUFFERED", "1")
  sys.exit(main())
