"""Training throughput: an MLP 784-512-512-10, mini-batch SGD, float32.

Same synthetic data (Gaussian inputs, labels from a random linear teacher),
same model (relu, He initialisation), same loss (softmax cross-entropy, mean
over the batch), same step size, float32 everywhere.  Cases, per batch size:

* ``gdlab.fit``: gdlab's compiled training loop with ``Regime("minibatch",
  B)`` and its default logging, one evaluation period per timed call (what
  :func:`gdlab.fit` runs per chunk: the compiled chunk and the read-back of
  its metrics), counted per epoch.  Per step it also gathers the shuffled
  batch on device, computes the step metrics (loss, gradient and update
  norms), checks the stopping criteria and skips the step once stopped; per
  epoch it reshuffles, and every ``eval_every="auto"`` epochs (evaluation at
  most 5% of training) it evaluates the loss and accuracy on the whole
  training set.
* ``gdlab.fit, loss-only logging``: the same with ``step_metrics="loss"``
  and no evaluation between epochs, one epoch per timed call.
* ``gdlab.make_step, Python loop``: gdlab's jitted step (with its metrics)
  called once per batch from Python.
* ``jax.grad + optax.sgd, Python loop``: the jitted step a JAX user writes.
* ``jax.grad + optax.sgd, lax.scan``: the same step scanned over one epoch
  inside one jitted call, reshuffled on device each epoch (one gather of the
  epoch's batches); nothing else.
* ``torch eager``: ``torch.nn`` layers, ``torch.optim.SGD``, one
  ``zero_grad/forward/backward/step`` per batch.

What tracking costs: whole :func:`gdlab.fit` calls of ``E`` epochs
(``track_epochs`` of the size: 3, 1 at the tiny size) from the same
parameters, with the model, data, batch and default logging of the first
case, timed side by side (alternating, ``track_repeats`` repeats, after the
first call) with the hand-written ``lax.scan`` epoch:

* ``gdlab.fit, whole call, track=None``: nothing tracked; per call it also
  checks the data on the host, initialises the carry and reads every chunk's
  log back.
* ``gdlab.fit, sharpness at the end (every=E)``: ``track=Track(
  ("sharpness",), every=E, subset=S)``, one sharpness (Lanczos, 20 steps,
  on a fixed subset of ``S`` training records, ``track_subset`` of the
  size: 1024 of the 8192 at the full size, all of them otherwise) after the
  last epoch.
* ``gdlab.fit, sharpness every epoch (every=1)``: one after every epoch.

Their ``vs_untracked`` column is their throughput (training steps per
second of the whole call, tracking included) over that of the untracked
call, ``vs_scan`` over that of the ``lax.scan`` epoch timed with them.  With
``E <= 20`` the three run the default chunk of one epoch
(:func:`gdlab.loop.default_chunk_epochs`, a divisor of every ``every``), so
the tracked calls must reuse the untracked call's compiled training chunk:
``chunk_compilations`` counts the chunk programs compiled over a case's
first call and timed calls (from JAX's monitoring events; 1 for the
untracked call, which runs first, 0 for the tracked ones: a target),
``compilations`` every XLA compilation (the carry's initialisation, the
tracking program).  At the tiny size ``E = 1``, so that the two tracked
cases share one tracking program and the suite compiles it once.

The Python loops iterate over batches already cut and on the device.  Steps
per second are the median over alternating repeats; GFLOP/s counts the
matrix products of one step, ``2 B (3 S - n_0 n_1)`` for
``S = sum_l n_{l-1} n_l`` (forward, weight gradients and input gradients of
every layer but the first), against the float32 matrix-multiply rate measured
in the same process (:func:`benchmarks.common.matmul_peak`); it is left out
of the whole ``gdlab.fit`` calls, whose time is not all training steps.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdlab
from gdlab import loop
from gdlab import tracking
from benchmarks import common

LEARNING_RATE = 0.01
SIZES = {
    # n_train, hidden sizes, batch sizes, repeats; epochs per gdlab.fit call
    # and repeats of the tracking cases
    "tiny": dict(n=256, hidden=(32, 32), batches=(32,), repeats=2,
                 track_epochs=1, track_repeats=1, track_subset=None),
    "full": dict(n=8192, hidden=(512, 512), batches=(32, 128), repeats=7,
                 track_epochs=3, track_repeats=3, track_subset=1024),
    # A GPU or TPU: batches where the step is matrix-multiply bound.
    "accelerator": dict(n=65536, hidden=(512, 512), batches=(512, 2048),
                        repeats=7, track_epochs=3, track_repeats=3,
                        track_subset=None),
}
FIT = "gdlab.fit (minibatch regime)"
FIT_LEAN = "gdlab.fit, loss-only logging"
MAKE_STEP = "gdlab.make_step, Python loop"
HAND_LOOP = "jax.grad + optax.sgd, Python loop"
HAND_SCAN = "jax.grad + optax.sgd, lax.scan"
TORCH = "torch eager (torch.optim.SGD)"
# gdlab.fit's timed call runs one evaluation period, up to this many epochs.
MAX_EPOCHS_PER_CALL = 20
# The targets: gdlab.fit with its default logging, and with
# loss-only logging, against the hand-written lax.scan.
FIT_TARGET = 0.85
FIT_LEAN_TARGET = 0.95
EVAL = "gdlab per-epoch evaluation alone"
# What tracking costs: whole gdlab.fit calls (see the module docstring).
FIT_UNTRACKED = "gdlab.fit, whole call, track=None"
FIT_TRACK_END = "gdlab.fit, sharpness at the end (every=E)"
FIT_TRACK_EPOCH = "gdlab.fit, sharpness every epoch (every=1)"
TRACKED = "sharpness"
# XLA compilations, by the name of the compiled function.
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CHUNK_PROGRAM = f"jit({loop.run_chunk.__name__})"
_compiled: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, fun_name=None, **kw: _compiled.append(
        str(fun_name)) if event == COMPILE_EVENT else None)


def synthetic(n: int, d: int = 784, k: int = 10, seed: int = 0):
  """Gaussian inputs and the labels of a random linear teacher (float32)."""
  kx, kw = jax.random.split(jax.random.PRNGKey(seed))
  x = jax.random.normal(kx, (n, d), jnp.float32)
  w = jax.random.normal(kw, (d, k), jnp.float32)
  y = jnp.argmax(x @ w, axis=1).astype(jnp.int32)
  return x, y


def step_flops(sizes: tuple[int, ...], batch: int) -> int:
  s = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
  return 2 * batch * (3 * s - sizes[0] * sizes[1])


def hand_loss(params, x, y):
  """The MLP and loss as a JAX user writes them (same tree as gdlab's)."""
  h = x
  n = len(params["w"])
  for i, (w, b) in enumerate(zip(params["w"], params["b"])):
    h = h @ w + b
    if i < n - 1:
      h = jax.nn.relu(h)
  return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()


def hand_step(optimizer):
  def step(params, state, x, y):
    grads = jax.grad(hand_loss)(params, x, y)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def hand_scan_epoch(optimizer, n: int, batch: int):
  """One epoch: reshuffle, gather the epoch's batches, scan the step."""
  step = hand_step(optimizer)
  num = n // batch

  def epoch(params, state, key, x, y):
    idx = jax.random.permutation(key, n)[:num * batch].reshape(num, batch)
    def body(carry, b):
      return step(*carry, *b), None
    return jax.lax.scan(body, (params, state), (x[idx], y[idx]))[0]
  return epoch


def torch_case(torch, sizes, params, batches, lr):
  """A torch model with gdlab's initial weights, and one epoch of SGD."""
  layers = []
  for i, (w, b) in enumerate(zip(params["w"], params["b"])):
    lin = torch.nn.Linear(w.shape[0], w.shape[1])
    with torch.no_grad():
      lin.weight.copy_(torch.from_numpy(np.array(w).T))
      lin.bias.copy_(torch.from_numpy(np.array(b)))
    layers.append(lin)
    if i < len(sizes) - 2:
      layers.append(torch.nn.ReLU())
  model = torch.nn.Sequential(*layers)
  opt = torch.optim.SGD(model.parameters(), lr=lr)
  tb = [(torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)).long())
        for x, y in batches]
  loss_fn = torch.nn.functional.cross_entropy

  def one_step(xb, yb):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(xb), yb)
    loss.backward()
    opt.step()
    return loss

  def epoch():
    for xb, yb in tb:
      one_step(xb, yb)

  return epoch, lambda: one_step(*tb[0])


def fit_case(objective, optimizer, regime, criteria, params, data,
             **options):
  """``(first call, timed call, epochs per timed call)`` for ``gdlab.fit``'s
  chunk program, as ``fit`` builds and calls it.

  A timed call runs one evaluation period (``plan.eval_every`` epochs, one
  where evaluation is per epoch or never), so that its time per epoch
  includes the evaluation's share.
  """
  n = int(data.x_train.shape[0])
  plan, _ = loop.make_plan(objective, optimizer, regime, criteria,
                           n_train=n, chunk_epochs=1, **options)
  epochs = plan.eval_every if plan.eval_every <= MAX_EPOCHS_PER_CALL else 1
  plan, numbers = loop.make_plan(objective, optimizer, regime, criteria,
                                 n_train=n, chunk_epochs=epochs, **options)
  # The chunk program takes its carry's buffers: its own copy of the
  # parameters the cases share.
  state: dict[str, Any] = {"carry": loop.own_buffers(loop.initial_carry(
      objective, optimizer, jax.random.PRNGKey(2), params), copy=True)}

  def first():
    loop.clear_programs()
    state["compiled"], _ = loop.compiled_chunk(plan, state["carry"], data,
                                               numbers)
    # The carry is donated: keep the one the call returns.
    out = state["compiled"](state["carry"], data, numbers)
    state["carry"] = out[0]
    jax.device_get(out[1:])

  def call():
    carry, epoch_log, steps = state["compiled"](state["carry"], data,
                                                numbers)
    jax.device_get((epoch_log, steps))
    state["carry"] = carry

  return common.first_call(first), call, epochs


class Compilations:
  """Counts the XLA compilations made inside the calls it wraps."""

  def __init__(self):
    self.all = 0
    self.chunk = 0  # of gdlab's training chunk program

  def wrap(self, fn):
    def counted():
      start = len(_compiled)
      fn()
      names = _compiled[start:]
      self.all += len(names)
      self.chunk += sum(name == CHUNK_PROGRAM for name in names)
    return counted


def fit_call(objective, optimizer, regime, epochs: int, params, data,
             track: tracking.Track | None):
  """One whole ``gdlab.fit`` of ``epochs`` epochs from ``params``."""
  criteria = gdlab.Criteria(max_epochs=epochs)

  def call():
    result = gdlab.fit(objective, optimizer, data, key=jax.random.PRNGKey(2),
                       regime=regime, criteria=criteria, params=params,
                       progress=False, track=track)
    jax.block_until_ready(result.params)
  return call


def tracking_cost(report: common.Report, cfg, objective, optimizer, params,
                  data, batch: int, scan_epoch) -> None:
  """The rows, target and note of what tracking costs (module docstring).

  ``scan_epoch`` runs one epoch of the hand-written ``lax.scan``, compiled.
  """
  n = int(data.x_train.shape[0])
  num = n // batch
  epochs = cfg["track_epochs"]
  regime = gdlab.Regime("minibatch", batch)
  subset = cfg["track_subset"]
  tracks = {FIT_UNTRACKED: None,
            FIT_TRACK_END: tracking.Track((TRACKED,), every=epochs,
                                          subset=subset),
            FIT_TRACK_EPOCH: tracking.Track((TRACKED,), every=1,
                                            subset=subset)}
  tracking.clear_programs()
  counts = {name: Compilations() for name in tracks}
  cases = {}
  for name, track in tracks.items():  # the untracked call compiles first
    cases[name] = counts[name].wrap(fit_call(objective, optimizer, regime,
                                             epochs, params, data, track))
    report.compile.append({"case": f"{name}, batch {batch}",
                           "first_step_s": common.first_call(cases[name])})
  cases[HAND_SCAN] = scan_epoch
  timings = common.alternate(cases, cfg["track_repeats"], warmup=0)
  rate = {name: epochs * num / timings[name].median for name in tracks}
  scan_rate = num / timings[HAND_SCAN].median
  for name in tracks:
    report.rows.append({
        "case": name, "batch": batch, "steps_per_s": rate[name],
        "vs_scan": rate[name] / scan_rate,
        "vs_untracked": rate[name] / rate[FIT_UNTRACKED],
        "s_per_epoch": timings[name].median / epochs,
        "spread": timings[name].spread,
        "compilations": counts[name].all,
        "chunk_compilations": counts[name].chunk})
  # The untracked call's one compilation shows that the count sees them.
  recompiled = counts[FIT_TRACK_END].chunk + counts[FIT_TRACK_EPOCH].chunk
  report.target(f"training chunks compiled by the tracked gdlab.fit calls, "
                f"batch {batch}", recompiled, "0 (untracked: 1)",
                recompiled == 0 and counts[FIT_UNTRACKED].chunk == 1)
  extra = (timings[FIT_TRACK_EPOCH].median -
           timings[FIT_UNTRACKED].median) / epochs
  report.notes.append(
      f"batch {batch}: one {TRACKED} evaluation (on {min(subset or n, n)} "
      f"of the {n} training records) adds {extra * 1e3:.1f} ms to a gdlab.fit call, "
      f"{extra * rate[FIT_UNTRACKED] / num:.2f} untracked epochs "
      f"({epochs}-epoch calls).")


def run(size: str = "full") -> common.Report:
  cfg = common.sized(SIZES, size)
  torch = common.optional("torch")
  report = common.Report(
      "throughput", "MLP 784-512-512-10 training throughput, SGD, float32"
      if size == "full" else "MLP training throughput (tiny size)",
      ["batch", "steps_per_s", "gflops", "pct_of_peak", "vs_scan",
       "vs_untracked", "s_per_epoch", "spread", "compilations",
       "chunk_compilations"])
  peak = common.matmul_peak(size)
  n = cfg["n"]
  sizes = (784, *cfg["hidden"], 10)
  report.setup = {"n_train": n, "sizes": sizes, "learning_rate":
                  LEARNING_RATE, "dtype": "float32",
                  "repeats": cfg["repeats"], "matmul_peak": peak,
                  "track_epochs": cfg["track_epochs"],
                  "track_repeats": cfg["track_repeats"]}
  x, y = synthetic(n)
  model = gdlab.mlp(sizes, activation="relu", init_scheme="he",
                    dtype=jnp.float32)
  objective = gdlab.Objective(model, "softmax_cross_entropy", "mean")
  params = model.init(jax.random.PRNGKey(1))
  optimizer = optax.sgd(LEARNING_RATE)
  opt_state = optimizer.init(params)
  data = loop.Data(x, y)
  if torch is None:
    report.notes.append(common.skipped_note("torch eager", "torch"))
  else:
    torch.manual_seed(0)
    report.setup["torch_threads"] = torch.get_num_threads()

  for batch in cfg["batches"]:
    num = n // batch
    flops = step_flops(sizes, batch)
    perm = np.random.default_rng(batch).permutation(n)[:num * batch]
    batches = [(x[i], y[i]) for i in perm.reshape(num, batch)]
    cases, first = {}, {}
    epochs = {}  # epochs per timed call of the gdlab.fit cases

    # gdlab.fit's compiled chunk, one evaluation period per call, as fit
    # calls it; then the same with step_metrics="loss" (no per-step norms)
    # and no whole-set evaluation between epochs (eval_every past the budget).
    jax.clear_caches()
    regime = gdlab.Regime("minibatch", batch)
    criteria = gdlab.Criteria(max_epochs=10**6)
    for name, options in ((FIT, {}), (FIT_LEAN, {"step_metrics": "loss",
                                                 "eval_every": 10**6})):
      first[name], cases[name], epochs[name] = fit_case(
          objective, optimizer, regime, criteria, params, data, **options)

    # gdlab.make_step from Python.
    gstep = gdlab.make_step(objective, optimizer)
    first[MAKE_STEP] = common.first_call(
        lambda: jax.block_until_ready(gstep(params, opt_state, batches[0])))

    def make_step_epoch():
      p, s = params, opt_state
      for b in batches:
        p, s, _ = gstep(p, s, b)
      jax.block_until_ready(p)
    cases[MAKE_STEP] = make_step_epoch

    # The hand-written step from Python.
    hstep = jax.jit(hand_step(optimizer))
    first[HAND_LOOP] = common.first_call(
        lambda: jax.block_until_ready(hstep(params, opt_state, *batches[0])))

    def hand_loop_epoch():
      p, s = params, opt_state
      for b in batches:
        p, s = hstep(p, s, *b)
      jax.block_until_ready(p)
    cases[HAND_LOOP] = hand_loop_epoch

    # The hand-written step inside lax.scan.
    hscan = jax.jit(hand_scan_epoch(optimizer, n, batch))
    keys = iter(jax.random.split(jax.random.PRNGKey(3), 10_000))
    first[HAND_SCAN] = common.first_call(
        lambda: jax.block_until_ready(hscan(params, opt_state, next(keys), x,
                                            y)))
    cases[HAND_SCAN] = lambda: jax.block_until_ready(
        hscan(params, opt_state, next(keys), x, y))

    if torch is not None:
      torch_epoch, torch_one = torch_case(torch, sizes, params, batches,
                                          LEARNING_RATE)
      first[TORCH] = common.first_call(torch_one)
      cases[TORCH] = torch_epoch

    # What the per-epoch evaluation of gdlab.fit costs by itself.
    metrics = jax.jit(objective.metrics)
    cases[EVAL] = lambda: jax.block_until_ready(metrics(params, x, y))

    timings = common.alternate(cases, cfg["repeats"], warmup=1)
    per_epoch = {k: t.median / epochs.get(k, 1) for k, t in timings.items()}
    rate = {k: num / per_epoch[k] for k in timings if k != EVAL}
    for name, t in timings.items():
      if name == EVAL:
        share = t.median / per_epoch[FIT]
        report.rows.append({"case": name, "batch": batch,
                            "steps_per_s": None, "spread": t.spread,
                            "s_per_epoch": t.median})
        report.notes.append(
            f"batch {batch}: one evaluation (loss and accuracy on all {n} "
            f"training records) takes {t.median * 1e3:.1f} ms, "
            f"{100 * share:.0f}% of a gdlab.fit epoch; gdlab.fit evaluates "
            f"every {epochs[FIT]} epochs (eval_every='auto').")
        continue
      gflops = rate[name] * flops / 1e9
      report.rows.append({
          "case": name, "batch": batch, "steps_per_s": rate[name],
          "gflops": gflops, "pct_of_peak": 100 * gflops / peak["gflops"],
          "vs_scan": rate[name] / rate[HAND_SCAN], "spread": t.spread,
          "s_per_epoch": per_epoch[name]})
    for name, s in first.items():
      report.compile.append({"case": f"{name}, batch {batch}",
                             "first_step_s": s})
    report.setup.setdefault("fit_epochs_per_call", {})[batch] = epochs[FIT]

    fit_ratio = rate[FIT] / rate[HAND_SCAN]
    report.target(f"gdlab.fit / hand lax.scan, batch {batch}", fit_ratio,
                  f">= {FIT_TARGET}", fit_ratio >= FIT_TARGET)
    lean_ratio = rate[FIT_LEAN] / rate[HAND_SCAN]
    report.target(f"gdlab.fit, loss-only logging / hand lax.scan, batch "
                  f"{batch}", lean_ratio, f">= {FIT_LEAN_TARGET}",
                  lean_ratio >= FIT_LEAN_TARGET)
    step_ratio = rate[MAKE_STEP] / rate[HAND_LOOP]
    report.target(f"gdlab.make_step / hand jit step (Python loops), batch "
                  f"{batch}", step_ratio, ">= 0.95", step_ratio >= 0.95)
    if batch == 32:
      if TORCH in rate:
        r = rate[FIT] / rate[TORCH]
        report.target("gdlab.fit / torch eager, batch 32", r, ">= 1.3",
                      r >= 1.3)
      else:
        report.target("gdlab.fit / torch eager, batch 32", None, ">= 1.3",
                      None)
    if batch == 128:
      pct = rate[FIT] * flops / 1e9 / peak["gflops"]
      report.target("gdlab.fit share of matmul peak, batch 128", pct,
                    ">= 0.80", pct >= 0.80)
    tracking_cost(report, cfg, objective, optimizer, params, data, batch,
                  cases[HAND_SCAN])
  report.notes.append(
      f"float32 matrix-multiply peak measured in this run: "
      f"{peak['gflops']:.1f} GFLOP/s (XLA, {peak['n']}x{peak['n']}).")
  return report


if __name__ == "__main__":
  raise SystemExit(common.main(run))
