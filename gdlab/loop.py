"""The training loop, compiled: epochs of steps on device, in chunks.

``fit`` runs a whole training run as one compiled program, called once per
*chunk* of epochs.  Inside a chunk everything happens on device: shuffling
and batch selection from a ``jax.random`` key, the update steps
(``lax.while_loop`` over the batches of an epoch, a ``lax.cond`` for the one
step of a full-batch epoch, ``lax.scan`` over the epochs of a chunk), the
stopping criteria (``gdlab.stopping``) and the per-epoch
evaluation on the training and test sets.  Between chunks the host reads the
metrics, updates the progress display and calls ``on_chunk`` (to write logs
and checkpoints): one round trip per chunk, none per step.

Data regimes (``Regime``):

* ``"full_batch"``: one update per epoch on all ``n`` records (the gradient
  is their mean or sum, as the objective's reduction says);
* ``"sgd"``: one record per update, ``n`` updates per epoch, records
  reshuffled every epoch;
* ``"minibatch"``: ``batch_size`` records per update, reshuffled every epoch;
  the last partial batch is dropped (``remainder="drop"``) or padded and
  masked out (``remainder="pad"``, so every record is used once per epoch and
  the partial batch's loss is the mean or sum over its real records).

Once a run stops, the remaining steps of its chunk are skipped (their metrics
are marked inactive and dropped from the history).  The same program, vmapped
over hyperparameters and seeds, runs sweeps (``gdlab.sweep``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdlab import _checks
from gdlab import stopping
from gdlab import train
from gdlab.history import (EPOCH_METRICS, STEP_METRICS, History, Progress,
                           append_chunk, empty_history)
from gdlab.data import batching
from gdlab.parallel import (Mesh, batch_constraint, replicate, shard_data,
                            to_host)
from gdlab.objective import Objective, value_grad_and_output_fn

Array = jax.Array
REGIMES = ("full_batch", "sgd", "minibatch")
STEP_METRIC_CHOICES = ("all", "loss")


@dataclasses.dataclass(frozen=True)
class Regime:
  """How records are grouped into updates; see the module docstring."""
  kind: str = "full_batch"
  batch_size: int | None = None
  remainder: str = "drop"

  def __post_init__(self):
    _checks.check_choice("regime", self.kind, REGIMES)
    _checks.check_choice("remainder", self.remainder, batching.REMAINDERS)
    if self.kind == "minibatch":
      if self.batch_size is None:
        raise ValueError("batch_size: the 'minibatch' regime needs a batch "
                         "size (an integer >= 1); got None.")
      _checks.check_positive_int("batch_size", self.batch_size)

  def size(self, n: int) -> int:
    """Records per update for a training set of ``n`` records."""
    if self.kind == "full_batch":
      return n
    if self.kind == "sgd":
      return 1
    if self.batch_size > n:
      raise ValueError(f"batch_size: expected an integer in [1, n] with "
                       f"n={n} training records; got {self.batch_size}.")
    return self.batch_size

  def steps_per_epoch(self, n: int) -> int:
    if self.kind == "full_batch":
      return 1
    return batching.num_batches(n, self.size(n), self.remainder)


class Data(NamedTuple):
  """Arrays on device: the training set and an optional test set."""
  x_train: Array
  y_train: Array
  x_test: Array | None = None
  y_test: Array | None = None


def as_data(data) -> Data:
  """A :class:`Data` from a ``Data``, a ``gdlab.data.Dataset`` or a tuple."""
  if isinstance(data, Data):
    return data
  if hasattr(data, "x_train"):
    return Data(data.x_train, data.y_train, getattr(data, "x_test", None),
                getattr(data, "y_test", None))
  if isinstance(data, (tuple, list)) and len(data) in (2, 4):
    return Data(*data)
  raise TypeError("data: expected a gdlab.data.Dataset, a loop.Data or a "
                  "tuple (x_train, y_train[, x_test, y_test]); got "
                  f"{type(data).__name__}.")


class Carry(NamedTuple):
  """Everything a run carries from step to step (what a checkpoint holds)."""
  params: Any
  opt_state: Any
  stop: stopping.StopState
  key: Array
  epoch: Array
  step: Array
  fun_evals: Array
  grad_evals: Array


Setup = Callable[[Any], tuple[Objective, optax.GradientTransformation]]


class Program(NamedTuple):
  """A run's compiled pieces: ``init`` and ``run_chunk`` (both pure)."""
  init: Callable[..., Carry]
  run_chunk: Callable[..., tuple[Carry, dict, dict]]
  steps_per_epoch: int
  chunk_epochs: int


def build(setup: Setup, regime: Regime, criteria: stopping.Criteria, *,
          n_train: int, engine: str = "autodiff", chunk_epochs: int = 1,
          has_test: bool = False, record_params: bool = False,
          mesh: Mesh | None = None, eval_every: int = 1,
          step_metrics: str = "all",
          reuse_search_point: bool | None = None) -> Program:
  """Builds the pure functions of a run.

  Args:
    setup: ``hparams -> (objective, optimizer)``; ``hparams`` is a pytree of
      numbers that may be traced (vmapped in sweeps).
    regime: the data regime.
    criteria: the stopping criteria.
    n_train: the number of training records (static).
    engine: the gradient engine.
    chunk_epochs: epochs per call of ``run_chunk``.
    has_test: whether ``Data`` carries a test set.
    record_params: log the parameters ``x_k`` (flattened) of every step under
      the step metric ``"params"``: for small problems such as the 2-D test
      functions, whose trajectories are plotted.
    mesh: a device mesh with a ``"data"`` axis for data parallelism: every
      batch is sharded along its records over that axis (see
      ``gdlab.parallel``).
    eval_every: evaluate the loss and accuracy on the whole training and test
      sets every this many epochs (and at the last one); the other epochs log
      NaN.  The evaluation is a forward pass over the data sets, a fifth of
      a mini-batch epoch's time or more.  In the full-batch regime the
      training set's evaluation shares its forward and backward pass with
      the next step (at the cost of keeping that gradient from one epoch to
      the next), so only the test set's follows ``eval_every``.
    step_metrics: ``"all"`` logs the gradient and update norms of every
      step; ``"loss"`` skips them (NaN) unless a stopping criterion needs
      them, which saves two passes over the parameters per step.
    reuse_search_point: take ``f`` and its gradient at the new parameters
      from a line search that stored them (``gdlab.train.make_update``);
      ``None`` for the full-batch regime, where every step sees the same
      batch.  Sweeps turn it off: under ``vmap`` it saves nothing.

  Returns:
    A :class:`Program`.
  """
  batch = regime.size(n_train)
  steps_per_epoch = regime.steps_per_epoch(n_train)
  pad = regime.kind == "minibatch" and regime.remainder == "pad"
  shard_batch = batch_constraint(mesh, regime, batch)
  _checks.check_choice("step_metrics", step_metrics, STEP_METRIC_CHOICES)
  _checks.check_positive_int("eval_every", eval_every)
  norms = step_metrics == "all" or criteria.needs_norms
  reuse = (regime.kind == "full_batch" if reuse_search_point is None
           else reuse_search_point)

  def init(key: Array, params, hparams) -> Carry:
    _, optimizer = setup(hparams)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    zero = jnp.int32(0)
    return Carry(params, optimizer.init(params), stopping.init(dtype), key,
                 zero, zero, zero, zero)

  def flat(params):
    return jnp.concatenate([jnp.ravel(p) for p in
                            jax.tree_util.tree_leaves(params)])

  def run_chunk(carry: Carry, data: Data, hparams):
    objective, optimizer = setup(hparams)
    update_fn = train.make_update(objective, optimizer, engine, norms=norms,
                                  reuse_search_point=reuse)
    dtype = jax.tree_util.tree_leaves(carry.params)[0].dtype
    n_params = sum(p.size for p in jax.tree_util.tree_leaves(carry.params))
    # Full batch: the evaluation on the training set after an epoch and the
    # next step's evaluation are at the same parameters on the same data,
    # so one forward and backward pass serves both (the "point" carried
    # from epoch to epoch), except where a line search stores the point.
    fused = regime.kind == "full_batch" and not (
        reuse and train.stored_point(carry.opt_state) is not None)
    if regime.kind == "full_batch":
      full = shard_batch((data.x_train, data.y_train))
    if fused:
      point_fn = value_grad_and_output_fn(objective, engine)

    def one_step(c: Carry, batch_data, point=None):
      """One update, applied unless it diverged; its metrics."""
      updates, new_opt, m = update_fn(c.params, c.opt_state, batch_data,
                                      point)
      steps = c.step + 1
      fun_evals = c.fun_evals + m["fun_evals"]
      grad_evals = c.grad_evals + m["grad_evals"]
      if norms:
        # A finite update of finite parameters gives finite parameters
        # (short of overflowing the float range, which the growth test
        # catches long before).
        finite = jnp.isfinite(m["update_norm"])
      else:
        finite = stopping.all_finite(updates)
      diverged, stop = stopping.check(
          criteria, c.stop, loss=m["loss"],
          grad_norm=m["grad_norm"] if norms else None,
          update_norm=m["update_norm"] if norms else None,
          new_params_finite=finite, steps=steps, grad_evals=grad_evals)
      # A diverged update is not applied; the select rides along with the
      # addition, in the same pass over the parameters.
      params = jax.tree_util.tree_map(
          lambda p, u: jnp.where(diverged, p, p + u.astype(p.dtype)),
          c.params, updates)
      opt_state = jax.tree_util.tree_map(
          lambda new, old: jnp.where(diverged, old, new), new_opt,
          c.opt_state)
      m = {k: jnp.asarray(m[k], jnp.int32 if k in ("fun_evals", "grad_evals")
                          else dtype) for k in STEP_METRICS}
      if record_params:
        m["params"] = flat(c.params)
      c = Carry(params, opt_state, stop, c.key, c.epoch, steps, fun_evals,
                grad_evals)
      return c, m

    def empty_log():
      log = {k: (jnp.zeros((steps_per_epoch,), jnp.int32)
                 if k in ("fun_evals", "grad_evals")
                 else jnp.full((steps_per_epoch,), jnp.nan, dtype))
             for k in STEP_METRICS}
      if record_params:
        log["params"] = jnp.full((steps_per_epoch, n_params), jnp.nan, dtype)
      log["active"] = jnp.zeros((steps_per_epoch,), bool)
      return log

    def run_steps(c: Carry, batch_at, point=None):
      """The epoch's steps, until the run stops: a while loop, so that the
      steps after a stop cost nothing and the carry is updated in place."""
      def cond(state):
        i, c, _ = state
        return (i < steps_per_epoch) & (c.stop.reason == stopping.RUNNING)

      def body(state):
        i, c, log = state
        c, m = one_step(c, batch_at(i), point)
        log = {k: v.at[i].set(m[k] if k != "active" else True)
               for k, v in log.items()}
        return i + 1, c, log

      if steps_per_epoch == 1:
        # Full batch: one step under a cond.  Cheaper than a while loop of
        # one iteration, above all under vmap (sweeps), where the while
        # loop's batched predicate selects the whole carry after the step.
        def only_step(c):
          return body((0, c, empty_log()))[1:]

        return jax.lax.cond(c.stop.reason == stopping.RUNNING, only_step,
                            lambda c: (c, empty_log()), c)
      _, c, log = jax.lax.while_loop(cond, body, (0, c, empty_log()))
      return c, log

    def train_metrics(params, last, point):
      """``(point, (loss, accuracy))`` on the training set after an epoch;
      the chunk's last epoch needs no gradient (no step follows)."""
      def with_grad(p):
        value, grads, y_hat = point_fn(p, *full)
        acc = objective.accuracy(y_hat, full[1])
        return (value, grads), jnp.asarray(acc, dtype)

      def without(p):
        value, acc = objective.metrics(p, *full)
        # Zeros shaped like the engine's gradient, whose dtypes can differ
        # from the params' (the manual engine promotes mixed dtypes).
        return ((value, jax.tree_util.tree_map(jnp.zeros_like, point[1])),
                jnp.asarray(acc, dtype))

      (value, grads), acc = jax.lax.cond(last, without, with_grad, params)
      return (value, grads), (value, acc)

    def one_epoch(state, last):
      c, point = state
      running_at_start = c.stop.reason == stopping.RUNNING
      key, sub = jax.random.split(c.key)
      c = c._replace(key=key)
      if regime.kind == "full_batch":
        c, m = run_steps(c, lambda i: full, point)  # point: None unless fused
        if fused:
          point, trained = train_metrics(c.params, last, point)
      else:
        idx, mask = batching.epoch_batches(sub, n_train, batch,
                                           regime.remainder)

        def batch_at(i):
          rows = idx[i]
          b = ((data.x_train[rows], data.y_train[rows],
                mask[i].astype(dtype)) if pad
               else (data.x_train[rows], data.y_train[rows]))
          return shard_batch(b)

        c, m = run_steps(c, batch_at)
      epoch = c.epoch + jnp.where(running_at_start, 1, 0)
      reason = jnp.where(
          (c.stop.reason == stopping.RUNNING) &
          (epoch >= criteria.max_epochs),
          jnp.int32(stopping.CODES["max_epochs"]), c.stop.reason)
      c = c._replace(epoch=epoch, stop=c.stop._replace(reason=reason))

      def evaluate(params):
        train_loss, train_acc = (trained if fused else objective.metrics(
            params, data.x_train, data.y_train))
        if has_test:
          test_loss, test_acc = objective.metrics(params, data.x_test,
                                                  data.y_test)
        else:
          test_loss = test_acc = jnp.full((), jnp.nan, dtype)
        return tuple(jnp.asarray(v, dtype) for v in
                     (train_loss, test_loss, train_acc, test_acc))

      if eval_every == 1:
        evaluated = evaluate(c.params)
      else:
        due = (epoch % eval_every == 0) | (reason != stopping.RUNNING)
        evaluated = jax.lax.cond(
            due, evaluate,
            lambda p: tuple(jnp.full((), jnp.nan, dtype) for _ in range(4)),
            c.params)
      train_loss, test_loss, train_acc, test_acc = evaluated
      e = {"train_loss": train_loss, "test_loss": test_loss,
           "train_accuracy": train_acc, "test_accuracy": test_acc,
           "epoch": epoch, "step": c.step, "fun_evals": c.fun_evals,
           "grad_evals": c.grad_evals, "active": running_at_start}
      e = {k: (jnp.asarray(v, dtype) if k in EPOCH_METRICS else v)
           for k, v in e.items()}
      return (c, point), (e, m)

    point = None
    if fused:  # f and its gradient where the chunk starts.
      value, grads, _ = point_fn(carry.params, *full)
      point = (value, grads)
    last = jnp.arange(chunk_epochs) == chunk_epochs - 1
    (carry, _), (epochs, steps) = jax.lax.scan(one_epoch, (carry, point),
                                               last)
    # (chunk_epochs, steps_per_epoch) -> one row per step.
    steps = jax.tree_util.tree_map(
        lambda v: v.reshape((-1,) + v.shape[2:]), steps)
    return carry, epochs, steps

  return Program(init, run_chunk, steps_per_epoch, chunk_epochs)


def default_chunk_epochs(max_epochs: int, steps_per_epoch: int,
                         target_chunks: int = 20,
                         max_steps_per_chunk: int = 50_000) -> int:
  """Epochs per chunk: about ``target_chunks`` chunks, bounded in size."""
  epochs = max(1, math.ceil(max_epochs / target_chunks))
  return max(1, min(epochs, max_steps_per_chunk // max(1, steps_per_epoch)))


class FitResult(NamedTuple):
  """What :func:`fit` returns."""
  params: Any
  opt_state: Any
  history: History
  stop_reason: str
  carry: Carry


def fit(objective: Objective, optimizer: optax.GradientTransformation,
        data: Data | tuple, *, key: Array, regime: Regime | str = "full_batch",
        criteria: stopping.Criteria | None = None, engine: str = "autodiff",
        params=None, chunk_epochs: int | None = None,
        carry: Carry | None = None, history: History | None = None,
        on_chunk: Callable[[Carry, History], None] | None = None,
        progress: bool | None = None,
        record_params: bool = False,
        mesh: Mesh | None = None,
        eval_every: int = 1,
        step_metrics: str = "all") -> FitResult:
  """Trains ``objective`` with ``optimizer``, compiled, until a criterion holds.

  Args:
    objective: model, loss, reduction and penalty.
    optimizer: any optax transformation.
    data: a ``gdlab.data.Dataset``, a :class:`Data` or
      ``(x_train, y_train[, x_test, y_test])``.
    key: the run's ``jax.random`` key; it is split into the initialisation
      key and the shuffling key, so the same key gives the same run.
    regime: a :class:`Regime` or the name of one without a batch size.
    criteria: stopping criteria (default: 100 epochs).
    engine: ``"autodiff"`` or ``"manual"``.
    params: initial parameters (default: ``objective.model.init``).
    chunk_epochs: epochs per compiled call (default: about 20 chunks).
    carry, history: a run's state and history to resume from, on the same
      data (in the full-batch regime, a line search's state may hold ``f``
      and its gradient on the training set the run was trained on).
    on_chunk: called after every chunk with the carry and the history so far.
    progress: show a progress line (default: when stderr is a terminal).
    record_params: log every step's parameters (see :func:`build`).
    mesh: a mesh with a ``"data"`` axis for data-parallel training
      (``gdlab.parallel.data_mesh``): the training and test sets and every
      batch are sharded along their records; parameters and optimizer state
      are replicated, and XLA inserts the reductions.
    eval_every, step_metrics: what to log, and how often (see :func:`build`).

  Returns:
    A :class:`FitResult`.  A run interrupted by ``KeyboardInterrupt`` between
    or during chunks returns what it had at the end of its last whole chunk,
    with the stop reason ``"interrupted"``.
  """
  regime = Regime(regime) if isinstance(regime, str) else regime
  criteria = criteria or stopping.Criteria()
  data = as_data(data)
  n_train = int(data.x_train.shape[0])
  steps_per_epoch = regime.steps_per_epoch(n_train)
  if chunk_epochs is None:
    chunk_epochs = default_chunk_epochs(criteria.max_epochs, steps_per_epoch)
  _checks.check_positive_int("chunk_epochs", chunk_epochs)
  program = build(lambda h: (objective, optimizer), regime, criteria,
                  n_train=n_train, engine=engine, chunk_epochs=chunk_epochs,
                  has_test=data.x_test is not None,
                  record_params=record_params, mesh=mesh,
                  eval_every=eval_every, step_metrics=step_metrics)
  data = shard_data(data, mesh, regime)
  if carry is None:
    k_init, k_data = jax.random.split(key)
    if params is None:
      params = objective.model.init(k_init)
    carry = program.init(k_data, params, {})
  carry = replicate(carry, mesh)
  history = history or empty_history()

  t0 = time.perf_counter()
  compiled = jax.jit(program.run_chunk).lower(carry, data, {}).compile()
  history.compile_time += time.perf_counter() - t0

  bar = Progress(criteria.max_epochs, enabled=progress)
  stop_reason = stopping.reason_name(carry.stop.reason)
  try:
    while stop_reason == "running":
      t0 = time.perf_counter()
      new_carry, epochs, steps = compiled(carry, data, {})
      epochs, steps = to_host((epochs, steps))
      t1 = time.perf_counter()
      start = history.run_time
      history.run_time += t1 - t0
      history = append_chunk(history, epochs, steps, start, history.run_time)
      carry = new_carry
      stop_reason = stopping.reason_name(to_host(carry.stop.reason))
      history.stop_reason = stop_reason
      if history.epochs["epoch"].size:
        bar.update(int(history.epochs["epoch"][-1]), history.num_steps,
                   float(history.epochs["train_loss"][-1]))
      if on_chunk is not None:
        on_chunk(carry, history)
  except KeyboardInterrupt:
    stop_reason = "interrupted"
    history.stop_reason = stop_reason
  finally:
    bar.close()
  return FitResult(carry.params, carry.opt_state, history, stop_reason, carry)
