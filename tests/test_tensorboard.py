"""TensorBoard event files: what a run logged, read back from the files.

The events are read with a reader written here from the TFRecord framing
(length, masked CRC-32C of the length, data, masked CRC-32C of the data,
with a CRC-32C of our own) and tensorboardX's protobuf classes, and compared
with the run's :class:`gdlab.History`, rebuilt by a plain loop over its
columns: tags, global steps and float32 values, exactly.
"""

import json
import struct
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdlab import (cli, config, loop, models, report, results, stopping,
                   sweep)
from gdlab import tensorboard
from gdlab.data.batching import Regime
from gdlab.objective import Objective
from gdlab.optim.gd import gradient_descent

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
plugin_hparams_pb2 = pytest.importorskip(
    "tensorboardX.proto.plugin_hparams_pb2")

# ----------------------------------------------------------------------------
# A reader of event files.


def _crc32c_table() -> list[int]:
  table = []
  for n in range(256):
    c = n
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), bit-reflected, as TFRecord files use it."""
  crc = 0xFFFFFFFF
  for b in data:
    crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_crc32c_matches_the_published_check_value():
  # RFC 3720, B.4: CRC-32C of "123456789" and of 32 zero bytes.
  assert crc32c(b"123456789") == 0xE3069283
  assert crc32c(bytes(32)) == 0x8A9136AA


def read_file(path: Path) -> list:
  """The events of one file, every record's two CRCs checked."""
  raw = path.read_bytes()
  events, at = [], 0
  while at < len(raw):
    header = raw[at:at + 8]
    (length,) = struct.unpack("<Q", header)
    (length_crc,) = struct.unpack("<I", raw[at + 8:at + 12])
    assert length_crc == masked(crc32c(header)), (path, at)
    data = raw[at + 12:at + 12 + length]
    (data_crc,) = struct.unpack("<I", raw[at + 12 + length:at + 16 + length])
    assert len(data) == length and data_crc == masked(crc32c(data)), (path,
                                                                       at)
    events.append(event_pb2.Event.FromString(data))
    at += 16 + length
  return events


def event_files(logdir: Path) -> list[Path]:
  return sorted(logdir.glob("events.out.tfevents.*"))


def read_events(logdir: Path) -> list:
  """Every event of a folder, file after file in name order."""
  return [e for f in event_files(logdir) for e in read_file(f)]


def scalars(events, *, purge: bool = False) -> dict[str, list]:
  """``{tag: [(step, value), ...]}`` in file order.

  ``purge``: as TensorBoard shows them: a restart marker (SessionLog START)
  at step ``s`` drops the earlier events at steps ``>= s``.
  """
  out: dict[str, list] = {}
  for e in events:
    if purge and e.HasField("session_log") and (
        e.session_log.status == event_pb2.SessionLog.START):
      out = {t: [(s, v) for s, v in rows if s < e.step]
             for t, rows in out.items()}
    for v in e.summary.value:
      if v.WhichOneof("value") == "simple_value":
        out.setdefault(v.tag, []).append((e.step, v.simple_value))
  return {t: rows for t, rows in out.items() if rows}


def expected(history) -> dict[str, list]:
  """What the events should hold, from the history by a plain loop."""
  out: dict[str, list] = {}
  for name, column in history.steps.items():
    if np.ndim(column) != 1 or name == "step":  # "step": read from a folder
      continue
    for i, v in enumerate(column):
      if not np.isnan(v):
        out.setdefault(f"step/{name}", []).append((i + 1, np.float32(v)))
  for name, column in history.epochs.items():
    if name == "step":
      continue
    for i, v in enumerate(column):
      if not np.isnan(v):
        out.setdefault(f"epoch/{name}", []).append(
            (int(history.epochs["step"][i]), np.float32(v)))
  return out


def assert_same(got: dict, want: dict) -> None:
  assert sorted(got) == sorted(want)
  for tag, rows in want.items():
    g = sorted(got[tag], key=lambda r: r[0])
    assert [s for s, _ in g] == [s for s, _ in rows], tag
    np.testing.assert_array_equal(np.float32([v for _, v in g]),
                                  np.float32([v for _, v in rows]),
                                  err_msg=tag)


def hparams_of(events) -> dict:
  """The HParams plugin's session start info, as plain values."""
  for e in events:
    for v in e.summary.value:
      if v.tag == "_hparams_/session_start_info":
        data = plugin_hparams_pb2.HParamsPluginData.FromString(
            v.metadata.plugin_data.content)
        return {k: getattr(x, x.WhichOneof("kind"))
                for k, x in data.session_start_info.hparams.items()}
  return {}


def metric_tags(events) -> list[str]:
  for e in events:
    for v in e.summary.value:
      if v.tag == "_hparams_/experiment":
        data = plugin_hparams_pb2.HParamsPluginData.FromString(
            v.metadata.plugin_data.content)
        return [m.name.tag for m in data.experiment.metric_infos]
  return []


# ----------------------------------------------------------------------------
# fit(..., on_chunk=writer): one tiny run shared by the tests below.

HPARAMS = {"learning_rate": 0.05, "optimizer": "gd", "nesterov": False,
           "hidden": [4], "f_star": None}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
  """A linear regression in mini-batches of 16, a test set, 4 epochs of 3
  steps in chunks of one epoch, evaluated every other epoch."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 3))
  y = x @ rng.normal(size=(3, 1)) + 0.1 * rng.normal(size=(60, 1))
  data = (jnp.asarray(x[:48]), jnp.asarray(y[:48]), jnp.asarray(x[48:]),
          jnp.asarray(y[48:]))
  logdir = tmp_path_factory.mktemp("tb") / "fit"
  calls = []
  with tensorboard.Writer(logdir, hparams=HPARAMS) as writer:
    def on_chunk(carry, history):
      writer(carry, history)
      calls.append(len(scalars(read_events(logdir)).get("step/loss", ())))
    result = loop.fit(Objective(models.linear_regression(3), "mse"),
                      gradient_descent(0.05), data,
                      key=jax.random.PRNGKey(0), regime=Regime("minibatch", batch_size=16),
                      criteria=stopping.Criteria(max_epochs=4),
                      chunk_epochs=1, eval_every=2, on_chunk=on_chunk,
                      progress=False)
  return logdir, result.history, calls


def test_fit_callback_writes_the_history(fitted):
  logdir, history, _ = fitted
  assert history.num_steps == 12 and history.num_epochs == 4
  events = read_events(logdir)
  got = scalars(events)
  assert_same(got, expected(history))
  # Step rows at the update's number, epoch rows at the step ending them.
  assert [s for s, _ in got["step/loss"]] == list(range(1, 13))
  assert [s for s, _ in got["epoch/epoch"]] == [3, 6, 9, 12]
  assert [v for _, v in got["epoch/epoch"]] == [1, 2, 3, 4]
  # Evaluated every other epoch (and at the last): the others are left out.
  assert [s for s, _ in got["epoch/test_loss"]] == [6, 12]


def test_each_call_writes_its_chunk_and_flushes(fitted):
  _, _, calls = fitted
  # Read back after every chunk: each call added exactly its epoch's steps.
  assert calls == [3, 6, 9, 12]


def test_hyperparameters_are_written(fitted):
  logdir, _, _ = fitted
  events = read_events(logdir)
  assert hparams_of(events) == {"learning_rate": 0.05, "optimizer": "gd",
                                "nesterov": False, "hidden": "[4]"}
  assert metric_tags(events) == list(tensorboard.HPARAM_METRICS)
  texts = [v.tensor.string_val[0].decode() for e in events
           for v in e.summary.value if v.tag.startswith("hparams")]
  assert texts and "| learning_rate | 0.05 |" in texts[0]


def _prefix(history, n_epochs: int):
  """The history up to the end of its ``n_epochs``-th epoch."""
  n_steps = int(history.epochs["step"][n_epochs - 1])
  return type(history)(
      {k: v[:n_steps] for k, v in history.steps.items()},
      {k: v[:n_epochs] for k, v in history.epochs.items()})


def test_a_resumed_writer_appends_without_duplicates(fitted, tmp_path):
  _, history, _ = fitted
  part = _prefix(history, 2)
  with tensorboard.Writer(tmp_path) as w:
    w.write(part)
  with tensorboard.Writer(tmp_path, start=part) as w:
    w.write(history)
  assert len(event_files(tmp_path)) == 2  # opened in the same second
  got = scalars(read_events(tmp_path))
  assert_same(got, expected(history))
  for rows in got.values():
    assert len({s for s, _ in rows}) == len(rows)


def test_events_past_the_checkpoint_are_hidden_on_resume(fitted, tmp_path):
  # A process that wrote all four epochs but was killed before its last
  # checkpoint, of epoch 2: the resumed run writes epochs 3 and 4 again.
  _, history, _ = fitted
  with tensorboard.Writer(tmp_path) as w:
    w.write(history)
  with tensorboard.Writer(tmp_path, start=_prefix(history, 2)) as w:
    w.write(history)
  events = read_events(tmp_path)
  assert len(scalars(events)["step/loss"]) == 12 + 6  # on disk, twice
  starts = [e.step for e in events if e.HasField("session_log")]
  assert starts[-1] == 7  # the first step the resumed writer may write
  assert_same(scalars(events, purge=True), expected(history))


# ----------------------------------------------------------------------------
# The command and the config key.

CONFIG = """\
name: tbrun
base:
  data: {name: linear, n: 40}
  model: {kind: linear}
  loss: {name: mse}
  optimizer: {name: gd, learning_rate: 0.05}
  train: {regime: {kind: minibatch, batch_size: 8}, stop: {max_epochs: 3},
          chunk_epochs: 1%s}
"""


def _config(tmp_path: Path, extra: str = "") -> Path:
  path = tmp_path / "tbrun.yaml"
  path.write_text(CONFIG % extra)
  return path


@pytest.fixture
def no_figures(monkeypatch):
  # The figures take seconds and are not what these tests check.
  monkeypatch.setattr(report, "run_report", lambda *a, **k: None)
  monkeypatch.setattr(report, "compare", lambda *a, **k: None)


def test_the_flag_writes_events_and_a_resume_appends(tmp_path, monkeypatch,
                                                     no_figures, capsys):
  path, out, tb = _config(tmp_path), tmp_path / "out", tmp_path / "tb"
  original, calls = results.write_run, []

  def interrupt_after_one_chunk(*args, **kwargs):
    original(*args, **kwargs)
    if kwargs.get("written") is not None:
      calls.append(1)
      if len(calls) == 1:
        raise KeyboardInterrupt
  monkeypatch.setattr(results, "write_run", interrupt_after_one_chunk)
  argv = ["run", str(path), "--out", str(out), "--tensorboard", str(tb)]
  assert cli.main(argv) == 130
  assert f"--tensorboard {tb}" in capsys.readouterr().err  # to continue
  part = results.load_run(out / "runs" / "tbrun").history
  assert part.num_epochs == 1
  assert_same(scalars(read_events(tb / "tbrun")), expected(part))

  assert cli.main(argv + ["--resume"]) == 0
  rec = results.load_run(out / "runs" / "tbrun")
  assert rec.history.num_epochs == 3
  events = read_events(tb / "tbrun")
  got = scalars(events)  # on disk, not only as TensorBoard shows it
  assert_same(got, expected(rec.history))
  assert len(event_files(tb / "tbrun")) == 2
  want = {k: v for k, v in results.flatten(rec.config).items()
          if v is not None and k != "train.tensorboard"}
  want = {k: json.dumps(v) if isinstance(v, (list, dict)) else v
          for k, v in want.items()}
  assert hparams_of(events) == want
  assert want["optimizer.learning_rate"] == 0.05

  # A new run into the same TensorBoard folder is refused before it starts.
  argv[3] = str(tmp_path / "again")
  assert cli.main(argv) == 2
  assert "holds the events of an earlier run" in capsys.readouterr().err
  assert not (tmp_path / "again").exists()


def test_the_config_key_writes_a_sweeps_events(tmp_path, capsys):
  tb = tmp_path / "tb"
  exp = config.load(_config(tmp_path, f", tensorboard: '{tb}'"))
  out = sweep.run_sweep(exp, tmp_path / "sweep",
                        grid={"optimizer.learning_rate": [0.05, 0.1]},
                        report=False)
  capsys.readouterr()
  names = sorted(p.name for p in tb.iterdir())
  assert names == ["tbrun[learning_rate=0.05]", "tbrun[learning_rate=0.1]"]
  for name, lr in zip(names, [0.05, 0.1]):
    rec = results.load_run(out / "runs" / name)
    events = read_events(tb / name)
    assert_same(scalars(events), expected(rec.history))
    assert hparams_of(events)["optimizer.learning_rate"] == lr
    assert "train.tensorboard" not in hparams_of(events)


# ----------------------------------------------------------------------------
# Errors.


def test_missing_package_names_the_extra(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails
  with pytest.raises(ImportError, match=r'pip install "gdlab\[tensorboard\]"'):
    tensorboard.Writer(tmp_path / "tb")
  assert cli.main(["run", str(_config(tmp_path)), "--out",
                   str(tmp_path / "out"), "--tensorboard",
                   str(tmp_path / "tb")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("gdlab run: error: train.tensorboard: ")
  assert 'pip install "gdlab[tensorboard]"' in err
  assert not (tmp_path / "out").exists() and not (tmp_path / "tb").exists()


@pytest.mark.parametrize("value,message", [
    ("", r"train.tensorboard: expected a folder path \(a non-empty string\) "
         r"or null; got ''"),
    (3, r"train.tensorboard: expected str or null; got 3"),
])
def test_config_key_is_checked(value, message):
  with pytest.raises(config.ConfigError, match=message):
    config.override(config.RunConfig(), "train.tensorboard", value)
