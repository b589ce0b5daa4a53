"""The shape of the package: imports point one way, and none hide in functions.

Read from the source with ``ast`` (nothing is imported or run): every
``import`` of a gdlab module by a gdlab module is an edge, and the graph
must have no cycle (a cycle says a concept is in the wrong module).  An
import inside a function is allowed only in the command line, ``gdlab.cli``,
where XLA's flags must be set before JAX initialises its backends, and for
the optional extras and slow-to-import libraries of ``LAZY``; the command
starts without importing the latter (one test imports it in a new process).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gdlab"

# The documented exception: the command line sets XLA_FLAGS before JAX
# initialises its backends.
FUNCTION_IMPORTS_ALLOWED = {"gdlab.cli"}
# Imports inside functions in modules whose owners are moving them to the
# top; remove an entry when its import moves (the test fails on a stale one).
PENDING = {
    ("gdlab.models", "__init__"),
}


def _module_name(path: Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(node, module: str) -> set[str]:
  """The gdlab modules an import statement of ``module`` imports."""
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  else:
    base = node.module or ""
    if node.level:
      package = module if MODULES[module].name == "__init__.py" else \
          module.rpartition(".")[0]
      for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
      base = f"{package}.{base}" if base else package
    names = []
    for alias in node.names:
      sub = f"{base}.{alias.name}"
      names.append(sub if sub in MODULES else base)
  out = set()
  for name in names:
    # `import gdlab.a.b` imports gdlab.a.b; a name that is not a module
    # (`from gdlab import __version__`) comes from the package itself.
    while name and name not in MODULES:
      name = name.rpartition(".")[0]
    if name.startswith("gdlab"):
      out.add(name)
  return out


# Optional extras, and libraries slower to import than the few functions
# that use them take to run (scipy's and scikit-learn's solvers and data
# sets), imported where they are used so that `import gdlab` and the `gdlab`
# command do not pay for them: allowed inside functions anywhere.
OPTIONAL_EXTRAS = {"pandas", "tensorboardX", "mnist1d"}
SLOW_TO_IMPORT = {"scipy", "sklearn"}
LAZY = OPTIONAL_EXTRAS | SLOW_TO_IMPORT


def _function_imports(tree) -> list[tuple[str, int]]:
  found = []
  for fn in ast.walk(tree):
    if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for node in ast.walk(fn):
        if isinstance(node, ast.Import) and all(
            a.name.split(".")[0] in LAZY for a in node.names):
          continue
        if (isinstance(node, ast.ImportFrom) and node.level == 0 and
            node.module.split(".")[0] in LAZY):
          continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
          found.append((fn.name, node.lineno))
  return found


def _graph() -> dict[str, set[str]]:
  graph = {}
  for module, path in MODULES.items():
    tree = ast.parse(path.read_text(), filename=str(path))
    edges = set()
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        edges |= _targets(node, module)
    edges.discard(module)
    graph[module] = edges
  return graph


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan)."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def _reaches(graph, start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for w in graph.get(todo.pop(), ()):
      if w not in seen:
        seen.add(w)
        todo.append(w)
  return seen


def test_the_walk_sees_the_package():
  for name in ("gdlab", "gdlab.config", "gdlab.build", "gdlab.run",
               "gdlab.results", "gdlab.folders", "gdlab.metrics_log",
               "gdlab.analyses", "gdlab.analyses.common", "gdlab.cli"):
    assert name in MODULES, name
  assert "gdlab.config" in GRAPH["gdlab.build"]
  assert {"gdlab.folders", "gdlab.metrics_log"} <= GRAPH["gdlab.results"]
  assert "gdlab.analyses.common" in GRAPH["gdlab.analyses.convexity"]


def test_the_cycle_finder_finds_cycles():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
      ["a", "b", "c"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
  assert _cycles(GRAPH) == []


def test_no_import_inside_a_function():
  found = set()
  for module, path in MODULES.items():
    if module in FUNCTION_IMPORTS_ALLOWED:
      continue
    for fn, line in _function_imports(ast.parse(path.read_text())):
      found.add((module, fn))
      assert (module, fn) in PENDING, (
          f"{path.relative_to(ROOT)}:{line}: an import inside {fn}(); move "
          f"it to the top of the module (a cycle it dodges says a concept "
          f"is in the wrong module)")
  stale = PENDING - found
  assert not stale, f"these imports moved to the top; remove them: {stale}"


@pytest.mark.parametrize("module,forbidden", [
    # Analyses read finished runs; they never train.
    ("gdlab.analyses", {"gdlab.run", "gdlab.sweep", "gdlab.cli"}),
    # The builder is pure: no folders, no figures.
    ("gdlab.build", {"gdlab.results", "gdlab.folders", "gdlab.metrics_log",
                     "gdlab.run", "gdlab.report", "gdlab.plots",
                     "gdlab.sweep", "gdlab.analyses"}),
    # The loop never reads a config, nor writes a folder.
    ("gdlab.loop", {"gdlab.config", "gdlab.build", "gdlab.results",
                    "gdlab.folders", "gdlab.metrics_log"}),
    ("gdlab.config", {"gdlab.build", "gdlab.results", "gdlab.folders",
                      "gdlab.metrics_log", "gdlab.run", "gdlab.sweep",
                      "gdlab.analyses"}),
    # Guarded folders know nothing of what a run writes in them.
    ("gdlab.folders", {"gdlab.results", "gdlab.metrics_log", "gdlab.build",
                       "gdlab.run", "gdlab.sweep", "gdlab.report",
                       "gdlab.plots"}),
    # The metrics log is columns of numbers: no run records, no runs.
    ("gdlab.metrics_log", {"gdlab.results", "gdlab.build", "gdlab.run",
                           "gdlab.sweep", "gdlab.report", "gdlab.plots"}),
    # Figures read run records (results), never reports, runs or analyses.
    ("gdlab.plots", {"gdlab.report", "gdlab.run", "gdlab.analyses"}),
])
def test_lower_modules_do_not_reach_up(module, forbidden):
  members = [m for m in MODULES if m == module or m.startswith(module + ".")]
  for m in members:
    reached = _reaches(GRAPH, m)
    assert not reached & forbidden, (m, sorted(reached & forbidden))


def test_nothing_imports_the_command_line():
  for module, edges in GRAPH.items():
    assert "gdlab.cli" not in edges, module


def test_the_command_starts_without_the_slow_imports():
  # scipy and scikit-learn take longer to import than a run's figures take to
  # draw; the analyses and data sets that need them import them when used.
  # The smoothing of stochastic loss curves needs neither.
  code = ("import sys, gdlab, gdlab.cli, gdlab.run; "
          "from gdlab import plots; plots.ema([3.0, 1.0, 2.0], 2); "
          "print(sorted({m.split('.')[0] for m in sys.modules} & "
          f"set({sorted(LAZY)!r})))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True, cwd=ROOT).stdout
  assert out.strip() == "[]"
