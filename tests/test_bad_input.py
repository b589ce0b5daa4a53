"""Bad input to the gdlab command: one line on standard error, exit status 2.

Each case runs ``gdlab.cli.main`` in this process, in a folder of its own
holding ``tiny.yaml`` and the files the case writes.  It must end with exit
status 2 (argparse's ``SystemExit(2)`` for bad usage) and one line on
standard error, ``gdlab <command>: error: ...`` (``gdlab: error: ...``
without a command), that names the key, file or
flag at fault, quotes no line of the files the case wrote, and leaves the
folder as it was.  Every case fails before anything is built or compiled:
the entry points that train, sweep, check gradients or write reports are
replaced by tripwires.
"""

import importlib
import os
import re
from pathlib import Path

import pytest

from gdlab import analyses
from gdlab import cli
from gdlab import config
from gdlab import optim

TINY = Path(__file__).parent / "configs" / "tiny.yaml"

# Text of files a case may read; the message must not quote them.
PASSWD = ("root:x:0:0:root:/root:/bin/bash\n"
          "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
SHADOW = "root:$6$S3CRETSALT$S3CRETHASHS3CRETHASH:19000:0:99999:7:::\n"


def _tiny(**replace: str) -> str:
  """tiny.yaml's text with some of its lines replaced (by their start)."""
  lines = TINY.read_text().splitlines()
  for start, new in replace.items():
    (i,) = [i for i, line in enumerate(lines) if line.startswith(start)]
    lines[i] = new
  return "\n".join(lines) + "\n"


# (id, argv, what the message must contain, files to write first).
# A file's content is bytes or text; None makes a folder.
CASES = [
    # -- The config file.
    ("binary_file", ["run", "bin.yaml"],
     "config: cannot read 'bin.yaml' as UTF-8 text",
     {"bin.yaml": b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 8}),
    ("empty_file", ["run", "empty.yaml"],
     "'empty.yaml'; got an empty file", {"empty.yaml": ""}),
    ("comments_only", ["run", "notes.yaml"],
     "'notes.yaml'; got no settings", {"notes.yaml": "# to do\n"}),
    ("missing_file", ["run", "missing.yaml"],
     "'missing.yaml': no such file", {}),
    ("folder_as_config", ["run", "folder"], "'folder', a directory",
     {"folder": None}),
    ("text_not_a_mapping", ["run", "passwd"],
     "expected a YAML mapping of settings in 'passwd'; got a string",
     {"passwd": PASSWD}),
    ("list_not_a_mapping", ["run", "list.yaml"], "'list.yaml'; got a list",
     {"list.yaml": "- gd\n- sgd\n"}),
    ("key_that_is_not_a_name", ["run", "shadow"],
     "that is not a setting name", {"shadow": SHADOW}),
    ("syntax_error", ["run", "broken.yaml"],
     "'broken.yaml'; got malformed YAML",
     {"broken.yaml": "name: x\nbase: {data: [1, 2\nsweep: {}\n"}),
    ("python_tag", ["run", "code.yaml"], "'code.yaml'; got malformed YAML",
     {"code.yaml": "name: !!python/object/apply:os.system ['echo hi']\n"}),
    ("duplicate_key", ["run", "twice.yaml"], "found the key 'variants' twice",
     {"twice.yaml": _tiny() + "variants: {only: {}}\n"}),
    ("two_documents", ["run", "two.yaml"], "'two.yaml'",
     {"two.yaml": "name: a\n---\nname: b\n"}),
    ("nul_character", ["run", "nul.yaml"], "#x0000",
     {"nul.yaml": b"name: a\x00b\n"}),
    ("file_too_large", ["run", "large.yaml"], "'large.yaml' of 2.0 MiB",
     {"large.yaml": "#" * (2 << 20) + "\n"}),
    ("nesting_too_deep", ["run", "deep.yaml"], "nesting too deep",
     {"deep.yaml": "name: " + "[" * 1500 + "]" * 1500 + "\n"}),
    ("integer_of_5000_digits", ["run", "digits.yaml"], "'digits.yaml'",
     {"digits.yaml": "base: {seed: 1" + "0" * 5000 + "}\n"}),
    ("impossible_date", ["run", "date.yaml"], "'date.yaml'",
     {"date.yaml": "name: 2020-13-45\n"}),
    ("unknown_top_level_key", ["run", "typo.yaml"], "basee: unknown key",
     {"typo.yaml": "basee: {seed: 0}\n"}),
    ("variants_a_list", ["run", "variants.yaml"], "variants: expected dict",
     {"variants.yaml": _tiny().replace(
         "variants:\n  gd: {}\n  momentum: {optimizer.momentum: 0.9}\n",
         "variants: [gd, sgd]\n")}),
    ("variant_not_a_mapping", ["run", "variant.yaml"], "variants.gd",
     {"variant.yaml": _tiny(**{"  gd:": "  gd: 3"})}),
    ("variant_unknown_key", ["run", "variant_key.yaml"], "optimizer.lr",
     {"variant_key.yaml": _tiny(**{"  gd:": "  gd: {optimizer.lr: 1}"})}),
    ("unknown_analysis", ["run", "analysis.yaml"], "analysis: expected one of",
     {"analysis.yaml": _tiny() + "analysis: nope\n"}),
    ("seed_spread_without_seed_sweep", ["run", "spread.yaml"],
     "analysis: 'seed_spread'",
     {"spread.yaml": _tiny() + "analysis: seed_spread\n"}),
    ("sweep_not_a_list", ["run", "sweep.yaml"], "sweep.seed",
     {"sweep.yaml": _tiny(**{"  seed: [0, 1]": "  seed: 3"})}),
    ("name_escaping_the_folder", ["run", "escape.yaml"],
     "name: expected a folder name",
     {"escape.yaml": _tiny(**{"name:": "name: ../../escape"})}),
    ("huge_max_epochs_in_file", ["run", "epochs.yaml"],
     "base.train.stop.max_epochs: expected an integer in [1, 2147483647]",
     {"epochs.yaml": _tiny(**{"  train:": "  train: {stop: {max_epochs: "
                                          "100000000000000000000}}"})}),
    ("zero_width_in_file", ["run", "hidden.yaml"], "base.model.hidden[0]",
     {"hidden.yaml": _tiny(**{"  model:": "  model: {hidden: [0]}"})}),
    ("bad_smoke_override", ["run", "smoke.yaml", "--smoke"],
     "train.stop.max_epochs",
     {"smoke.yaml": _tiny(**{"  train.stop": "  train.stop.max_epochs: 0"})}),
    ("no_such_experiment", ["run", "no_such_experiment"],
     "no experiment or file named 'no_such_experiment'", {}),
    ("name_too_long", ["run", "x" * 5000], "file name too long", {}),
    # -- --set.
    ("set_without_equals", ["run", "tiny.yaml", "--set", "seed"],
     "--set: expected key=value; got 'seed'", {}),
    ("set_without_key", ["run", "tiny.yaml", "--set", "=1"],
     "--set: expected key=value", {}),
    ("set_unknown_key", ["run", "tiny.yaml", "--set", "unknown.key=1"],
     "unknown.key: unknown key", {}),
    ("set_moved_key", ["run", "tiny.yaml", "--set", "train.max_epochs=3"],
     "train.max_epochs: moved to train.stop.max_epochs", {}),
    ("set_wrong_type", ["run", "tiny.yaml", "--set", "seed=abc"],
     "seed: expected int; got 'abc'", {}),
    ("set_malformed_value", ["run", "tiny.yaml", "--set", "seed=[1"],
     "seed: expected a YAML value", {}),
    ("set_python_tag", ["run", "tiny.yaml", "--set",
                        "seed=!!python/object:os.system"],
     "seed: expected a YAML value", {}),
    ("set_section_to_a_number", ["run", "tiny.yaml", "--set", "model=3"],
     "model: expected ModelConfig", {}),
    ("set_negative_seed", ["run", "tiny.yaml", "--set", "seed=-1"],
     "seed: expected an integer in [0, 2**32); got -1", {}),
    ("set_seed_2_32", ["run", "tiny.yaml", "--set", "seed=4294967296"],
     "seed: expected an integer in [0, 2**32); got 4294967296", {}),
    ("set_huge_max_epochs",
     ["run", "default", "--smoke", "--set",
      "train.stop.max_epochs=100000000000000000000"],
     "train.stop.max_epochs: expected an integer in [1, 2147483647]; got "
     "100000000000000000000.", {}),
    ("set_max_steps_2_40", ["run", "tiny.yaml", "--set",
                            "train.stop.max_steps=1099511627776"],
     "train.stop.max_steps: expected an integer in [1, 2147483647]", {}),
    ("set_zero_batch", ["run", "tiny.yaml", "--set",
                        "train.regime.batch_size=0"],
     "train.regime.batch_size: expected an integer >= 1; got 0", {}),
    ("set_batch_2_31", ["run", "tiny.yaml", "--set",
                        "train.regime.batch_size=2147483648"],
     "train.regime.batch_size: expected an integer in [1, 2147483647]", {}),
    ("set_batch_above_data", ["run", "tiny.yaml", "--set",
                              "train.regime.batch_size=100000"],
     "train.regime.batch_size: expected at most data.n = 64", {}),
    ("set_nan_learning_rate", ["run", "tiny.yaml", "--set",
                               "optimizer.learning_rate=.nan"],
     "optimizer.learning_rate: expected a finite number in (0, inf); got nan",
     {}),
    ("set_inf_learning_rate", ["run", "tiny.yaml", "--set",
                               "optimizer.learning_rate=.inf"],
     "optimizer.learning_rate: expected a finite number", {}),
    ("set_zero_learning_rate", ["run", "tiny.yaml", "--set",
                                "optimizer.learning_rate=0"],
     "optimizer.learning_rate", {}),
    ("set_learning_rate_beyond_float", ["run", "tiny.yaml", "--set",
                                        "optimizer.learning_rate=1" +
                                        "0" * 400],
     "optimizer.learning_rate: expected a finite number", {}),
    ("set_momentum_above_1", ["run", "tiny.yaml", "--set",
                              "optimizer.momentum=1.5"],
     "optimizer.momentum: expected a finite number in [0, 1)", {}),
    ("set_zero_width", ["run", "tiny.yaml", "--set", "model.hidden=[0]"],
     "model.hidden[0]: expected an integer in [1, 2147483647]; got 0", {}),
    ("set_negative_width", ["run", "tiny.yaml", "--set",
                            "model.hidden=[4, -3]"],
     "model.hidden[1]: expected an integer in [1, 2147483647]; got -3", {}),
    ("set_start_of_3", ["run", "tiny.yaml", "--set", "model.start=[1, 2, 3]"],
     "model.start: expected 2 numbers", {}),
    ("set_zero_eval_every", ["run", "tiny.yaml", "--set",
                             "train.eval_every=0"],
     "train.eval_every: expected an integer >= 1", {}),
    ("set_huge_chunk", ["run", "tiny.yaml", "--set",
                        "train.chunk_epochs=2147483648"],
     "train.chunk_epochs: expected an integer in [1, 2147483647]", {}),
    ("set_one_record", ["run", "tiny.yaml", "--set", "data.n=1"],
     "data.n: expected an integer in [2, 2147483647]", {}),
    ("set_test_fraction_1", ["run", "tiny.yaml", "--set",
                             "data.test_fraction=1"],
     "data.test_fraction: expected a finite number in (0, 1)", {}),
    ("set_unknown_activation", ["run", "tiny.yaml", "--set",
                                "model.activation=rleu"],
     "model.activation: expected one of", {}),
    ("set_unknown_loss", ["run", "tiny.yaml", "--set", "loss.name=l3"],
     "loss.name: expected one of", {}),
    ("set_unknown_data", ["run", "tiny.yaml", "--set", "data.name=mnist"],
     "data.name: expected one of", {}),
    ("set_unknown_optimizer", ["run", "tiny.yaml", "--set",
                               "optimizer.name=adamw"],
     "optimizer.name: expected one of", {}),
    ("set_float16", ["run", "tiny.yaml", "--set", "train.dtype=float16"],
     "train.dtype: expected one of", {}),
    ("set_wolfe_c1_above_c2", ["run", "tiny.yaml", "--set",
                               "optimizer.line_search=wolfe", "--set",
                               "optimizer.c1=0.95"],
     "optimizer.c1, c2: expected 0 < c1 < c2 < 1", {}),
    # -- argparse.
    ("unknown_flag", ["run", "tiny.yaml", "--foo"],
     "gdlab run: error: unrecognized arguments: --foo (see gdlab run --help)",
     {}),
    ("missing_config", ["run"],
     "gdlab run: error: the following arguments are required: config", {}),
    ("no_command", [], "gdlab: error:", {}),
    ("unknown_command", ["frobnicate"], "invalid choice: 'frobnicate'", {}),
    ("argument_to_list", ["list", "extra"],
     "gdlab list: error: unrecognized arguments: extra", {}),
    ("zero_devices", ["run", "tiny.yaml", "--devices", "0"],
     "argument --devices: expected an integer in [1, 2147483647]; got '0'",
     {}),
    ("zero_processes", ["run", "tiny.yaml", "--distributed",
                        "--num-processes", "0"],
     "argument --num-processes", {}),
    # -- check-grads.
    ("seed_not_a_number", ["check-grads", "--seed", "x"],
     "argument --seed: expected an integer in [0, 2**32); got 'x'", {}),
    ("negative_seed", ["check-grads", "--seed", "-1"],
     "argument --seed: expected an integer in [0, 2**32); got '-1'", {}),
    ("negative_depth", ["check-grads", "--depths", "-1"],
     "--depths: expected comma-separated integers >= 0 and <= 32", {}),
    ("depth_not_a_number", ["check-grads", "--depths", "x"], "--depths", {}),
    ("huge_depth", ["check-grads", "--depths", "1,100000000"],
     "got '1,100000000'", {}),
    ("unknown_activation", ["check-grads", "--activations", "rleu"],
     "--activations: expected one of", {}),
    ("no_activations", ["check-grads", "--activations", ","],
     "--activations: expected comma-separated names", {}),
    ("unknown_reduction", ["check-grads", "--reductions", "avg"],
     "--reductions: expected one of", {}),
    # -- sweep and report.
    ("grid_without_equals", ["sweep", "tiny.yaml", "--grid", "seed"],
     "--grid: expected key=v1,v2", {}),
    ("grid_wrong_type", ["sweep", "tiny.yaml", "--grid", "seed=0,x"],
     "seed: expected int; got 'x'", {}),
    ("grid_moved_key", ["sweep", "tiny.yaml", "--grid",
                        "train.batch_size=4,8"],
     "train.batch_size: moved to train.regime.batch_size", {}),
    ("report_missing_folder", ["report", "nowhere"], "'nowhere'", {}),
    ("report_not_a_run", ["report", "folder"], "'folder'", {"folder": None}),
]


def _tree(root: Path) -> list:
  """Every path under ``root`` with its size and modification time."""
  return sorted((str(p.relative_to(root)), p.stat().st_size,
                 p.stat().st_mtime_ns) for p in root.rglob("*"))


def _tripwire(*args, **kwargs):
  raise AssertionError("bad input reached the work it should have stopped")


@pytest.fixture
def gdlab_in(tmp_path, monkeypatch):
  """Runs ``gdlab`` in ``tmp_path``: ``(argv) -> (status, stdout, stderr)``.

  ``tmp_path`` holds ``tiny.yaml``; the work a command does once its input
  is checked is replaced by a tripwire.
  """
  (tmp_path / "tiny.yaml").write_text(TINY.read_text())
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv("GDLAB_DEBUG", raising=False)
  # main() adds to XLA_FLAGS; the test leaves them as they were.
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
  for module, name in [(cli.run_lib, "run_experiment"),
                       (cli.sweep, "run_sweep"), (cli.gradcheck, "grid"),
                       (cli.report, "compare")]:
    monkeypatch.setattr(module, name, _tripwire)

  def run(argv, capsys):
    try:
      status = cli.main(argv)
    except SystemExit as e:  # argparse
      status = e.code
    out, err = capsys.readouterr()
    return status, out, err
  return run


def _write(root: Path, files: dict) -> list[str]:
  """Writes ``files`` under ``root``; returns their lines worth quoting."""
  lines = []
  for name, content in files.items():
    path = root / name
    if content is None:
      path.mkdir()
      continue
    if isinstance(content, str):
      content = content.encode()
    path.write_bytes(content)
    lines += [line for line in content.decode("utf-8", "replace").splitlines()
              if len(line.strip()) >= 12]
  return lines


@pytest.mark.parametrize("argv,match,files",
                         [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_writes_nothing(argv, match, files,
                                                   gdlab_in, tmp_path,
                                                   capsys):
  quotable = _write(tmp_path, files)
  before = _tree(tmp_path)
  status, out, err = gdlab_in(argv, capsys)
  assert status == 2, err
  assert out == ""
  lines = err.splitlines()
  assert len(lines) == 1 and lines[0].strip(), err
  assert re.match(r"gdlab( [a-z-]+)?: error: \S", lines[0]), err
  assert "Traceback" not in err
  assert match in err
  for line in quotable:
    assert line not in err, line
  assert _tree(tmp_path) == before


def test_the_cases_are_distinct():
  assert len(CASES) >= 45
  assert len({case[0] for case in CASES}) == len(CASES)
  assert len({(tuple(c[1]), tuple(sorted(c[3].items(), key=str)))
              for c in CASES}) == len(CASES)


def test_an_unregistered_analysis_fails_before_training(gdlab_in, monkeypatch,
                                                        tmp_path, capsys):
  monkeypatch.delitem(analyses.MODULES, "closed_form")
  before = _tree(tmp_path)
  status, _, err = gdlab_in(["run", "closed_form", "--smoke"], capsys)
  assert status == 2
  assert err.startswith("gdlab run: error: analysis: expected one of ")
  assert "got 'closed_form'" in err and len(err.splitlines()) == 1
  assert _tree(tmp_path) == before


def test_every_experiment_passes_the_checks():
  for name in cli.run_lib.experiment_names():
    exp = config.load(cli.run_lib.find(name))
    analyses.check(exp)
    for smoke in (False, True):
      for cfg in config.resolve_runs(exp, smoke=smoke):
        cli._check_names(cfg)  # pylint: disable=protected-access


def test_optimizers_are_named_as_configs_name_them():
  """``optimizer.name: gd`` is ``gdlab.optim.gd``, a function, not a module."""
  assert optim.gd is optim.gradient_descent
  assert optim.subgradient is optim.subgradient_descent
  # Importing the module by its full name leaves the name alone.
  module = importlib.import_module("gdlab.optim.gd")
  assert optim.gd is optim.gradient_descent
  state = optim.gd(0.1).init({"w": 1.0})
  assert isinstance(state, module.GradientDescentState)
