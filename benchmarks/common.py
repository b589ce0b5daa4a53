"""What every benchmark shares: timing, peers, the machine, results.

Timing.  :func:`alternate` warms every case up, then runs the cases in turn
(``a b c, b c a, c a b, ...``) for several repeats, so that a slow spell of
the machine falls on every case alike, and reports the median, the minimum
and the spread of the repeats.  Each case is a callable that blocks until its
result is ready (``jax.block_until_ready``).

Results.  A benchmark returns a :class:`Report`: rows of absolute figures
(one row per case), the ratios its targets are stated in, its compile times
and notes (a skipped peer, what a case does per step).  ``benchmarks.run``
prints them as tables and writes them to ``benchmarks/results/<machine>.json``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
import time
from typing import Any, Callable

# tiny: seconds each, for the tests; full: the figures of a CPU machine;
# accelerator: GPU/TPU sizes (larger batches and sweeps) where a benchmark
# defines them, its full size otherwise.
SIZES = ("tiny", "full", "accelerator")


def sized(sizes: dict[str, Any], size: str) -> dict[str, Any]:
  """A benchmark's settings for ``size``; its full size where it has none."""
  return sizes.get(size, sizes["full"])

# Peers that may be missing; ``--without NAME`` (or the environment variable
# GDLAB_BENCH_WITHOUT=torch,sklearn) makes a benchmark treat them as missing.
_OPTIONAL = {"torch": "torch", "sklearn": "sklearn", "scipy": "scipy.optimize"}


def without() -> set[str]:
  raw = os.environ.get("GDLAB_BENCH_WITHOUT", "")
  return {w.strip() for w in raw.split(",") if w.strip()}


def optional(name: str):
  """The module of an optional peer, or ``None`` when it is missing."""
  if name in without():
    return None
  try:
    return importlib.import_module(_OPTIONAL.get(name, name))
  except ImportError:
    return None


def skipped_note(peer: str, package: str) -> str:
  return (f"{peer} skipped: the package {package!r} is not installed "
          f"(see benchmarks/README.md to add it).")


@dataclasses.dataclass
class Timing:
  """Seconds per repeat of one case."""
  samples: list[float]

  @property
  def median(self) -> float:
    return statistics.median(self.samples)

  @property
  def best(self) -> float:
    return min(self.samples)

  @property
  def spread(self) -> float:
    """Interquartile range over the median (0 for fewer than 4 repeats)."""
    if len(self.samples) < 4:
      return 0.0
    q = statistics.quantiles(self.samples, n=4)
    return (q[2] - q[0]) / self.median

  def as_dict(self) -> dict[str, Any]:
    return {"median_s": self.median, "best_s": self.best,
            "spread": self.spread, "repeats": len(self.samples)}


def alternate(cases: dict[str, Callable[[], Any]], repeats: int,
              warmup: int = 1) -> dict[str, Timing]:
  """Times ``cases`` in turn after ``warmup`` calls each; see module doc."""
  names = list(cases)
  for name in names:
    for _ in range(warmup):
      cases[name]()
  samples: dict[str, list[float]] = {n: [] for n in names}
  for r in range(repeats):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      t0 = time.perf_counter()
      cases[name]()
      samples[name].append(time.perf_counter() - t0)
  return {n: Timing(samples[n]) for n in names}


def first_call(fn: Callable[[], Any]) -> float:
  """Seconds until ``fn()`` (trace, compile and one run) has finished."""
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


@dataclasses.dataclass
class Report:
  """What one benchmark measured.

  Attributes:
    name: the benchmark's name.
    title: one line saying what is compared.
    columns: the column names of ``rows`` (besides ``case``).
    rows: one dict per case and setting: ``case`` plus the columns.
    targets: ``{"what", "value", "target", "met"}`` per target of the issue.
    compile: ``{"case", "first_step_s"}``: time to the first finished step.
    notes: skipped peers, what each case does per step.
    setup: sizes and settings.
  """
  name: str
  title: str
  columns: list[str]
  rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  targets: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  compile: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  notes: list[str] = dataclasses.field(default_factory=list)
  setup: dict[str, Any] = dataclasses.field(default_factory=dict)

  def target(self, what: str, value: float | None, target: str,
             met: bool | None) -> None:
    self.targets.append({"what": what, "value": value, "target": target,
                         "met": met})

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# ----------------------------------------------------------------------------
# The machine.


def cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
      if line.startswith("Model name:"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def devices() -> dict[str, Any]:
  """JAX's backend, the kind of its first device, and their count."""
  import jax  # pylint: disable=g-import-not-at-top
  return {"backend": jax.default_backend(),
          "device": jax.devices()[0].device_kind,
          "device_count": jax.device_count()}


def machine(with_devices: bool = True) -> dict[str, Any]:
  """The machine's CPU, core count and software versions, and its JAX
  devices (:func:`devices`) unless ``with_devices`` is False: then JAX is
  not started (a process that runs the benchmarks in children takes them
  from the children's reports)."""
  info = {"cpu": cpu_model(), "cores": os.cpu_count(),
          "python": platform.python_version(),
          "jax": importlib.metadata.version("jax"),
          "platform": platform.platform()}
  if with_devices:
    info.update(devices())
  # Read from the installed distributions: importing scikit-learn, SciPy
  # or PyTorch only to learn their versions would cost seconds a run.
  for name, distribution in (("optax", "optax"), ("numpy", "numpy"),
                             ("scipy", "scipy"), ("sklearn", "scikit-learn"),
                             ("torch", "torch")):
    try:
      info[name] = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
      info[name] = None
  return info


def machine_slug(info: dict[str, Any] | None = None) -> str:
  """A file name for the machine: its accelerator (a GPU or TPU kind and
  count), or its CPU model and core count."""
  info = info or {"cpu": cpu_model(), "cores": os.cpu_count()}
  if info.get("backend") not in (None, "cpu"):
    slug = re.sub(r"[^a-z0-9]+", "-", info["device"].lower()).strip("-")
    return f"{slug or info['backend']}-x{info['device_count']}"
  slug = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
  return f"{slug or 'cpu'}-{info['cores']}c"


def matmul_peak(size: str, repeats: int = 5) -> dict[str, Any]:
  """The measured float32 matrix-multiply rate of XLA on this machine.

  Square products ``(n, n) @ (n, n)`` in float32 for a few ``n``; each size's
  median rate over ``repeats``, and the best of those is the peak.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  dims = {"tiny": (128, 256), "accelerator": (2048, 4096, 8192)}.get(
      size, (512, 1024, 2048))
  rates = {}
  for n in dims:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    reps = max(1, int(4e9 / (2 * n**3)))  # ~4 GFLOP per timed call
    def case(a=a, b=b, f=f, reps=reps):
      for _ in range(reps):
        out = f(a, b)
      jax.block_until_ready(out)
    t = alternate({"mm": case}, repeats, warmup=1)["mm"]
    rates[n] = 2 * n**3 * reps / t.median / 1e9
  best = max(rates, key=rates.get)
  return {"gflops": rates[best], "n": best,
          "by_size": {str(k): v for k, v in rates.items()}}


# ----------------------------------------------------------------------------
# Tables.


def fmt(v: Any) -> str:
  if v is None:
    return "-"
  if isinstance(v, bool):
    return "yes" if v else "no"
  if isinstance(v, float):
    if v != v:
      return "nan"
    if v == 0:
      return "0"
    if abs(v) >= 1000:
      return f"{v:,.0f}"
    if abs(v) >= 10:
      return f"{v:.1f}"
    if abs(v) >= 0.01:
      return f"{v:.3f}"
    return f"{v:.2e}"
  return str(v)


def table(header: list[str], rows: list[list[Any]]) -> str:
  cells = [header] + [[fmt(v) for v in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
           for r in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def render(report: Report | dict) -> str:
  """A benchmark's tables as text."""
  r = report if isinstance(report, dict) else report.as_dict()
  out = [f"== {r['name']}: {r['title']}"]
  if r["rows"]:
    header = ["case"] + r["columns"]
    out.append(table(header, [[row.get(c) for c in header]
                              for row in r["rows"]]))
  if r["targets"]:
    out.append("")
    out.append(table(["target", "measured", "wanted", "met"],
                     [[t["what"], t["value"], t["target"], t["met"]]
                      for t in r["targets"]]))
  if r["compile"]:
    out.append("")
    out.append(table(["first finished step", "seconds"],
                     [[c["case"], c["first_step_s"]] for c in r["compile"]]))
  for note in r["notes"]:
    out.append(f"note: {note}")
  return "\n".join(out)


# ----------------------------------------------------------------------------
# Running one benchmark module on its own.


def main(run: Callable[[str], Report], argv: list[str] | None = None) -> int:
  """``python -m benchmarks.NAME [--size tiny|full] [--json PATH]``."""
  import argparse  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", choices=SIZES, default="full")
  parser.add_argument("--json", help="write the report to this file")
  args = parser.parse_args(argv)
  report = run(args.size)
  print(render(report), flush=True)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({**report.as_dict(), "devices": devices()}, f, indent=1)
  return 0
