"""Runs notebooks top to bottom in a Jupyter kernel, at smoke size.

    python notebooks/execute.py notebooks/*.ipynb        # make notebooks

writes each notebook back with its outputs (text and figures): the outputs
committed with the notebooks.  Each runs in a fresh kernel of this Python
(``ipykernel``, driven by ``nbclient``), from the notebook's folder, with
``GDLAB_SMOKE=1`` and ``GDLAB_OUT`` in a temporary folder removed afterwards.
A cell's text streams are merged, progress bars shown at their last state.
tqdm's notice that ``ipywidgets`` is missing (a bar is then drawn as text)
is left out: it is about this environment, not the notebook.  A cell that
fails stops the command with the cell and its traceback, and leaves that
notebook as it was.

:func:`execute` is also what the tests run, with the Python of another
environment (tests/test_notebooks.py).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

KERNEL = "gdlab"
TIMEOUT_S = 600
# A warnings filter (PYTHONWARNINGS) for tqdm's notice of a missing ipywidgets.
NO_WIDGETS_NOTICE = "ignore:IProgress not found"


def _kernel_manager(python: str, folder: Path) -> AsyncKernelManager:
  """A manager of kernels run by ``python``, whose spec lives in ``folder``.

  The kernel's interpreter is named in its own spec, so no kernel
  installed for the user (a ``python3`` of another environment) is used.
  """
  spec = folder / KERNEL
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": f"Python ({python})",
      "language": "python",
  }))
  # Local sockets, not TCP: the kernel's channels stay on this machine.
  return AsyncKernelManager(
      kernel_name=KERNEL, transport="ipc", ip=str(folder / "ipc"),
      kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder)]))


def execute(path: str | os.PathLike, *, python: str = sys.executable,
            cwd: str | os.PathLike | None = None,
            env: dict[str, str] | None = None) -> nbformat.NotebookNode:
  """The notebook at ``path`` run top to bottom, its outputs filled in.

  Args:
    path: the ``.ipynb`` file; it is not written.
    python: the interpreter of the kernel (it must import ``ipykernel``).
    cwd: the kernel's working folder (default: the notebook's).
    env: the kernel's environment (default: this process's), less
      ``MPLBACKEND``.

  Raises:
    nbclient.exceptions.CellExecutionError: a cell failed; the message holds
      the cell's source and traceback.
  """
  nb = nbformat.read(path, as_version=4)
  env = dict(os.environ if env is None else env)
  # The kernel's own inline backend shows the figures; a backend set for
  # scripts (MPLBACKEND=Agg) would hide them.
  env.pop("MPLBACKEND", None)
  with tempfile.TemporaryDirectory(prefix="gdlab-kernel-") as kernels:
    client = nbclient.NotebookClient(
        nb, km=_kernel_manager(python, Path(kernels)), timeout=TIMEOUT_S,
        record_timing=False, coalesce_streams=True,
        resources={"metadata": {"path": str(cwd or Path(path).parent)}})
    # The kernel manager is ours, so nbclient stops the kernel only if asked.
    client.execute(env=env, cleanup_kc=True)
  return nb


def main(paths: list[str]) -> int:
  if not paths:
    print("usage: python notebooks/execute.py NOTEBOOK.ipynb ...",
          file=sys.stderr)
    return 2
  for path in paths:
    with tempfile.TemporaryDirectory(prefix="gdlab-notebook-") as out:
      filters = os.environ.get("PYTHONWARNINGS")
      env = dict(os.environ, GDLAB_SMOKE="1", GDLAB_OUT=out,
                 PYTHONWARNINGS=",".join(filter(None, [filters,
                                                       NO_WIDGETS_NOTICE])))
      nb = execute(path, env=env)
    nbformat.write(nb, path)
    print(f"{path}: {len(nb.cells)} cells, {Path(path).stat().st_size:,} "
          "bytes")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
