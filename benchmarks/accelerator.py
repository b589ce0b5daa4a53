"""The accelerator checks, in one script: tests, benchmarks, a large sweep.

On a machine with a GPU or TPU (it runs on a CPU too, as a rehearsal)::

    pip install --no-deps -e .          # gdlab, in the accelerator's Python
    python -m benchmarks.accelerator    # about ten minutes on one GPU

1. The test subset that exercises the device path: the compiled chunk
   without host transfers, donation, training, sweeps, data parallelism,
   resume and the gradient check (``TESTS``), with pytest.
2. ``gdlab check-grads`` at its default precision for the backend (float64
   on CPU and GPU, float32 with looser tolerances on a TPU), on a small grid.
3. Every benchmark at its ``accelerator`` size (``python -m benchmarks.run
   --size accelerator``): throughput at batches 512 and 2048 against the
   device's measured matrix-multiply rate, the 64-rate sweep against 64
   separate runs (target 20x), a sweep of 1,024 rates, and the memory of a
   training chunk with and without donation (the device allocator's peak).

Everything goes to ``benchmarks/results/<device>.json`` (``--out``): the
benchmark reports, the test outcome and the check's precision line.
Record the figures in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common
from benchmarks import run as bench_run

ROOT = Path(__file__).resolve().parent.parent
TESTS = ("tests/test_transfers.py", "tests/test_train.py",
         "tests/test_runner.py", "tests/test_parallel.py",
         "tests/test_faults.py", "tests/test_gradcheck.py")


def _timed(cmd: list[str], env: dict | None = None) -> dict:
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                        env=env, check=False)
  return {"command": " ".join(cmd), "returncode": proc.returncode,
          "wall_s": time.perf_counter() - t0,
          "stdout_head": proc.stdout.strip().splitlines()[:3],
          "stdout_tail": proc.stdout.strip().splitlines()[-3:],
          "stderr_tail": proc.stderr.strip().splitlines()[-5:]}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="accelerator",
                      choices=common.SIZES,
                      help="benchmark size (tiny: a rehearsal in minutes)")
  parser.add_argument("--out", help="the results file (default: "
                      "benchmarks/results/<device>.json)")
  parser.add_argument("--skip-tests", action="store_true")
  args = parser.parse_args(argv)
  info = common.machine()
  print(f"device: {info['device']} x{info['device_count']} "
        f"({info['backend']}); jax {info['jax']}", flush=True)
  result: dict = {"machine": info, "size": args.size}
  if not args.skip_tests:
    result["tests"] = _timed([sys.executable, "-m", "pytest", "-q", "-x",
                              "-p", "no:cacheprovider", *TESTS])
    print("tests:", *result["tests"]["stdout_tail"][-1:], flush=True)
  result["check_grads"] = _timed([sys.executable, "-m", "gdlab.cli",
                                  "check-grads", "--depths", "0,1"])
  print("check-grads:", *result["check_grads"]["stdout_head"][:2],
        *result["check_grads"]["stdout_tail"][-1:], sep="\n  ", flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    bench_out = Path(tmp) / "bench.json"
    code = bench_run.main(["--size", args.size, "--out", str(bench_out)])
    result["benchmarks"] = json.loads(bench_out.read_text())["benchmarks"]
  if args.out:
    out = Path(args.out)
  elif args.size == "tiny":  # a rehearsal: not the machine's figures
    out = Path(tempfile.mkdtemp()) / "accelerator.json"
  else:
    out = (ROOT / "benchmarks" / "results" /
           f"{common.machine_slug(info)}.json")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
  print(f"wrote {out}")
  failed = (code != 0 or result["check_grads"]["returncode"] != 0 or
            (result.get("tests") or {}).get("returncode", 0) != 0)
  return 1 if failed else 0


if __name__ == "__main__":
  os.environ.setdefault("PYTHONUNBUFFERED", "1")
  raise SystemExit(main())
