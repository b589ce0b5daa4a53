"""Experiment-specific analyses, named by an experiment's ``analysis`` key.

Each analysis reads the experiment's run folders, computes what the theory
compares them with (a closed-form solution, an optimal value from an
independent solver, a bound), writes figures, and returns report sections
``(title, markdown, [image paths])`` for the experiment's ``report.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from gdlab import config as config_lib

Section = tuple[str, str, list]
ANALYSES: dict[str, Callable[..., list[Section]]] = {}


def register(name: str):
  def deco(fn):
    ANALYSES[name] = fn
    return fn
  return deco


def run(exp: config_lib.ExperimentConfig, out: Path, run_dirs: list[Path],
        smoke: bool = False) -> list[Section]:
  """Runs the experiment's analysis; no analysis gives no sections."""
  if exp.analysis is None:
    return []
  if exp.analysis not in ANALYSES:
    raise config_lib.ConfigError(
        f"analysis: expected one of {', '.join(sorted(ANALYSES))} or null; "
        f"got {exp.analysis!r}.")
  return ANALYSES[exp.analysis](exp, out, run_dirs, smoke=smoke)
