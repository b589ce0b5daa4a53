"""Runs the benchmarks, prints their tables and writes the results file.

    python -m benchmarks.run                      # every benchmark, full size
    python -m benchmarks.run --size tiny          # every benchmark, seconds each
    python -m benchmarks.run --only throughput,engines
    python -m benchmarks.run --without torch      # treat torch as missing

Each benchmark runs in its own process (``python -m benchmarks.NAME``), so
that its settings cannot leak into the next: the sweep benchmark gets
``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` before JAX
starts, and the line-search benchmark turns on float64.  Within a process,
gdlab and its peers run side by side, alternating.  The full-size results go
to ``benchmarks/results/<machine>.json`` (``--out`` to change it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common

BENCHMARKS = ("throughput", "engines", "sweeps", "linesearch", "digits",
              "compile_time", "memory")
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def environment(name: str, without: list[str]) -> dict[str, str]:
  env = dict(os.environ)
  env["GDLAB_BENCH_WITHOUT"] = ",".join(without)
  # First calls must compile: no program from an earlier run's disk cache.
  env["GDLAB_COMPILATION_CACHE"] = "off"
  path = env.get("PYTHONPATH", "")
  env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
  if name == "sweeps":
    flags = env.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
      env["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count="
                          f"{os.cpu_count() or 1}").strip()
  return env


def run_one(name: str, size: str, without: list[str]) -> dict:
  """Runs ``benchmarks.NAME`` in a child process; returns its report."""
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / f"{name}.json"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--size", size,
         "--json", str(out)], env=environment(name, without), cwd=ROOT,
        check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
      return {"name": name, "error": f"exited with status {proc.returncode}",
              "wall_s": wall}
    report = json.loads(out.read_text(encoding="utf-8"))
    report["wall_s"] = wall
    return report


def summary(reports: list[dict]) -> str:
  """Every target and every compile time, in two tables."""
  targets, compiles = [], []
  for r in reports:
    for t in r.get("targets", []):
      targets.append([r["name"], t["what"], t["value"], t["target"],
                      t["met"]])
    for c in r.get("compile", []):
      compiles.append([r["name"], c["case"], c["first_step_s"]])
  parts = ["== targets", common.table(
      ["benchmark", "target", "measured", "wanted", "met"], targets)]
  parts += ["", "== time to the first finished step (compile included)",
            common.table(["benchmark", "case", "seconds"], compiles)]
  errors = [f"{r['name']}: {r['error']}" for r in reports if "error" in r]
  if errors:
    parts += ["", "== errors"] + errors
  return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", choices=common.SIZES, default="full")
  parser.add_argument("--only", default="",
                      help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
  parser.add_argument("--without", default="",
                      help="peers to treat as missing: torch, sklearn, scipy")
  parser.add_argument("--out", help="results file (default: benchmarks/"
                      "results/<machine>.json for the full size)")
  parser.add_argument("--no-write", action="store_true",
                      help="print only; write no results file")
  args = parser.parse_args(argv)
  names = [n.strip() for n in args.only.split(",") if n.strip()] or list(
      BENCHMARKS)
  unknown = sorted(set(names) - set(BENCHMARKS))
  if unknown:
    parser.error(f"--only: unknown benchmarks {unknown}; known: "
                 f"{', '.join(BENCHMARKS)}")
  without = [w.strip() for w in args.without.split(",") if w.strip()]

  info = common.machine(with_devices=False)  # the devices: from a child
  print(f"machine: {info['cpu']}, {info['cores']} cores; jax {info['jax']}, "
        f"torch {info['torch']}, scikit-learn {info['sklearn']}", flush=True)
  t0 = time.perf_counter()
  reports = [run_one(name, args.size, without) for name in names]
  info.update(next((r.pop("devices") for r in reports if "devices" in r), {}))
  print()
  print(summary(reports))
  result = {
      "machine": info, "size": args.size,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "command": "python -m benchmarks.run " + " ".join(
          argv if argv is not None else sys.argv[1:]),
      "wall_s": time.perf_counter() - t0,
      "benchmarks": {r["name"]: r for r in reports},
  }
  out = args.out
  if out is None and args.size != "tiny" and not args.no_write:
    out = RESULTS / f"{common.machine_slug(info)}.json"
  if out and not args.no_write:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n",
                         encoding="utf-8")
    print(f"\nwrote {out}")
  return 1 if any("error" in r for r in reports) else 0


if __name__ == "__main__":
  raise SystemExit(main())
