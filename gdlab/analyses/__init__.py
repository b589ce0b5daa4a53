"""Experiment-specific analyses, named by an experiment's ``analysis`` key.

Each analysis reads the experiment's finished run folders (it never trains),
computes what the theory compares them with (a closed-form solution, an
optimal value from an independent solver, a bound), draws its own figures,
and returns :class:`gdlab.report.Section` records for the experiment's
``report.md``.

Contract of the analyses registered here: ``fn(exp, out, run_dirs,
smoke=False)``; figures go to ``out/plots/``, the numbers behind the report
tables to ``out/<analysis name>.json`` (for tests and notebooks).  A run's
data, model and initial parameters are rebuilt from its ``config.yaml``
(the same seed gives the same arrays), its final parameters are read from
its checkpoint.  A run the analysis does not apply to raises ``ConfigError``
naming what was expected.

=====================  =====================================================
``subgradient_bound``  ``f_best - f*`` of subgradient runs, ``f*`` from an
                       independent solver, against the classical bound
``closed_form``        least squares: GD against the normal equations
``seed_spread``        final losses and parameters over many seeds (reads
                       the seed sweeps of ``seed_sweep: true``)
``gradcheck``          hand-written backpropagation against ``jax.grad``:
                       the gradient-check grid, loss curves and speed
``surface``            optimiser paths on 2-D test functions
``landscape``          loss landscapes of networks: interpolation from the
                       initialisation, filter-normalised slices, the path
                       on its PCA plane
``edge_of_stability``  tracked sharpness of full-batch GD against ``2/eta``
``step_size``          each run's step size against ``2/lambda_max`` at
                       initialisation (closed form for least squares)
``mnist1d``            MNIST-1D test accuracies beside the published ones
``methods``            full-batch GD, SGD, mini-batch SGD, line search:
                       updates, record-gradients, time, and the cost of
                       a common training loss
``noise_scale``        steps to a target loss against the batch size, beside
                       the noise-scale prediction ``S_min (1 + B_noise/B)``
=====================  =====================================================
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from gdlab import config as config_lib
from gdlab import report
from gdlab.analyses.common import ANALYSES, register, run_config

# The module of each analysis.  A module registers its analysis when it is
# imported, which happens when the analysis runs (:func:`get`): importing
# gdlab, and starting the gdlab command, does not pay for the independent
# solvers and numerical tools that some analyses use (scikit-learn, scipy).
MODULES = {
    "closed_form": "closed_form",
    "seed_spread": "convexity",
    "methods": "default",
    "edge_of_stability": "edge_of_stability",
    "gradcheck": "engines",
    "landscape": "landscape",
    "mnist1d": "mnist1d",
    "noise_scale": "noise_scale",
    "step_size": "step_size",
    "subgradient_bound": "subgradient",
    "surface": "surface",
}


def check(exp: config_lib.ExperimentConfig) -> None:
  """Checks the experiment's analysis before any run trains.

  Raises:
    ConfigError: when ``exp.analysis`` is not ``None`` and not the name of a
      registered analysis; the message lists them.
  """
  if exp.analysis is not None and exp.analysis not in MODULES:
    raise config_lib.ConfigError(
        f"analysis: expected one of "
        f"{', '.join(repr(a) for a in sorted(MODULES))} or null; got "
        f"{config_lib.short(exp.analysis)}.")


def get(name: str) -> Callable[..., list[report.Section]]:
  """The analysis registered under ``name``, its module imported first.

  Raises:
    KeyError: for a name of no analysis (:data:`MODULES` lists them).
  """
  if name not in MODULES:
    raise KeyError(f"name: expected an analysis, one of "
                   f"{', '.join(sorted(MODULES))}; got {name!r}.")
  importlib.import_module(f"{__name__}.{MODULES[name]}")
  return ANALYSES[name]


def run(exp: config_lib.ExperimentConfig, out: Path, run_dirs: list[Path],
        smoke: bool = False) -> list[report.Section]:
  """Runs the experiment's analysis; no analysis gives no sections."""
  check(exp)
  if exp.analysis is None:
    return []
  return get(exp.analysis)(exp, out, run_dirs, smoke=smoke)


__all__ = ["ANALYSES", "MODULES", "check", "get", "register", "run",
           "run_config"]
