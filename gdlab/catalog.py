"""Where the named experiments live: ``experiments/<name>.yaml``.

The repository keeps them in its top-level ``experiments/`` folder; an
installed gdlab carries the same files inside the package, as
``gdlab/experiments/`` (see ``setup.py``), read through
:mod:`importlib.resources`.  A checkout (this package's parent holds
``pyproject.toml`` and ``experiments/``: a clone, an editable install) reads
its own folder, so an edit there is seen at once; anything else reads the
installed copy.  Nothing here imports JAX.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def _checkout() -> Path | None:
  """The top-level ``experiments/`` of the checkout this package is in."""
  root = Path(__file__).resolve().parent.parent
  folder = root / "experiments"
  if (root / "pyproject.toml").is_file() and folder.is_dir():
    return folder
  return None


def _installed() -> Path:
  """The experiments shipped in the installed package (a wheel unpacks to
  files, so the resource is a folder on disk)."""
  return Path(str(importlib.resources.files("gdlab") / "experiments"))


def experiments_dir() -> Path:
  """The folder of the named experiments: the checkout's, else the
  installed package's."""
  return _checkout() or _installed()

