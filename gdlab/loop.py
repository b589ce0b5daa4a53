"""The training loop, compiled once: epochs of steps on device, in chunks.

``fit`` runs a whole training run as one compiled program, called once per
*chunk* of epochs.  Inside a chunk everything happens on device: shuffling
and batch selection from a ``jax.random`` key, the update steps
(``lax.while_loop`` over the batches of an epoch, a ``lax.cond`` for the one
step of a full-batch epoch, ``lax.scan`` over the epochs of a chunk), the
stopping criteria (``gdlab.stopping``) and the per-epoch evaluation on the
training and test sets.  Between chunks the host reads the metrics, updates
the progress display and calls ``on_chunk`` (to write logs and
checkpoints): one round trip per chunk, none per step.

Compiled once.  Everything that shapes the program is a :class:`Plan`
(objective, the optimizer's recipe, regime, criteria, engine, sizes, what
to log); the optimizer's numeric hyperparameters (``gdlab.optim.hyperparams``)
and the data are arguments.  Programs are kept by plan and argument shapes,
so a second ``fit`` of the same structure, with another learning rate or
other data of the same shape, compiles nothing.  ``gdlab.sweep`` runs the
same chunk function ``vmap``-ped over hyperparameters and seeds.

The data regimes are those of :class:`gdlab.data.batching.Regime`.  Once a
run stops, the remaining steps of its chunk are skipped (their metrics are
marked inactive and dropped from the history).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdlab import _checks
from gdlab import compilation_cache
from gdlab import interrupts
from gdlab import progress as progress_lib
from gdlab import stopping
from gdlab import tracking
from gdlab import train
from gdlab.data import batching
from gdlab.data import validation
from gdlab.data.batching import Regime
from gdlab.history import (EPOCH_METRICS, STEP_METRICS, History,
                           append_chunk, empty_history)
from gdlab.objective import (Objective, abstract_call, check_data, data_dtype,
                             engine as make_engine, uses_data)
from gdlab.optim import accounting
from gdlab.optim import hyperparams
from gdlab.parallel import (Mesh, batch_constraint, replicate, shard_data,
                            to_host)

Array = jax.Array
REGIMES = batching.REGIMES
STEP_METRIC_CHOICES = ("all", "loss")
_INT_METRICS = ("fun_evals", "grad_evals")

__all__ = ["Carry", "Data", "FitResult", "Plan", "Regime", "as_data",
           "auto_eval_every",
           "default_chunk_epochs", "fit", "initial_carry", "make_plan",
           "run_chunk", "run_keys"]


class Data(NamedTuple):
  """Arrays on device: the training set and an optional test set."""
  x_train: Array
  y_train: Array
  x_test: Array | None = None
  y_test: Array | None = None


def as_data(data, objective=None, params=None, *, check_finite: bool = True,
            stacklevel: int = 2) -> Data:
  """A :class:`Data` from a ``Data``, a ``gdlab.data.Dataset`` or a tuple.

  Checked on the host with NumPy, before anything compiles
  (``gdlab.data.validation.check_arrays``): at least one training record,
  one label per record, a test set absent or non-empty with records shaped
  like the training ones, and no NaN or inf unless ``check_finite=False``.
  With ``objective`` and ``params`` (arrays, or their shapes from
  ``jax.eval_shape``) the data also meet the objective: float arrays are
  cast to the parameters' float dtype, with a ``UserWarning`` where that
  changes their dtype (``gdlab.data.validation.cast_floats``;
  ``stacklevel`` as for ``warnings.warn``, counted from this function), and
  the labels are checked against the loss and the model's output
  (``gdlab.objective.check_data``).

  Raises:
    ValueError: naming the array that fails (``x_train``, ``y_test``, ...).
  """
  if isinstance(data, Data):
    pass
  elif hasattr(data, "x_train"):
    data = Data(data.x_train, data.y_train, getattr(data, "x_test", None),
                getattr(data, "y_test", None))
  elif isinstance(data, (tuple, list)) and len(data) in (2, 4):
    data = Data(*(a if a is None or hasattr(a, "shape") else np.asarray(a)
                  for a in data))
  else:
    raise TypeError("data: expected a gdlab.data.Dataset, a loop.Data or a "
                    "tuple (x_train, y_train[, x_test, y_test]); got "
                    f"{type(data).__name__}.")
  validation.check_arrays(*data, check_finite=check_finite)
  if objective is None or not uses_data(objective):
    return data
  dtype = data_dtype(params)
  if dtype is not None:
    data = Data(**validation.cast_floats(data._asdict(), dtype,
                                         stacklevel=stacklevel + 1))
  check_data(objective, params, data.x_train, data.y_train, part="train")
  if data.x_test is not None:
    check_data(objective, params, data.x_test, data.y_test, part="test")
  return data


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


class Point(NamedTuple):
  """``f`` and its gradient at the current parameters on the full batch."""
  value: Array
  grads: Any


class Plan(NamedTuple):
  """What shapes a run's program (hashable: the compiled programs' key).

  Attributes:
    objective: the objective (model, loss, reduction, penalty).
    optimizer: the optimizer's recipe (``gdlab.optim.hyperparams``); its
      numbers are an argument of the program.
    regime, criteria, engine: see :func:`fit`.
    n_train: the number of training records.
    chunk_epochs: epochs per call of the chunk program.
    has_test: whether the data carry a test set.
    record_params: log every step's parameters (flattened).
    mesh: the data-parallel mesh, or ``None``.
    eval_every: evaluate on the whole data sets every this many epochs.
    norms: compute the gradient and update norms of every step.
    reuse: take ``f`` and its gradient from a line search that stored them.
    strength_input: the penalty's strength is a number of the program
      (sweeps over ``loss.strength``), not the objective's.
  """
  objective: Any
  optimizer: Any
  regime: Regime
  criteria: stopping.Criteria
  engine: str
  n_train: int
  chunk_epochs: int
  has_test: bool
  record_params: bool
  mesh: Mesh | None
  eval_every: int
  norms: bool
  reuse: bool
  strength_input: bool = False


def make_plan(objective, optimizer, regime: Regime, criteria:
              stopping.Criteria, *, n_train: int, engine: str = "autodiff",
              chunk_epochs: int = 1, has_test: bool = False,
              record_params: bool = False, mesh: Mesh | None = None,
              eval_every: int | str = "auto", n_test: int = 0,
              step_metrics: str = "all",
              reuse_search_point: bool | None = None,
              strength_input: bool = False) -> tuple[Plan, dict]:
  """The plan of a run and the numbers its program takes.

  Args:
    objective, optimizer: the objective and any optax transformation.
    regime, criteria, engine, n_train, chunk_epochs, has_test,
      record_params, mesh: see :class:`Plan` and :func:`fit`.
    eval_every: evaluate the loss and accuracy on the whole training and
      test sets every this many epochs (and at the last one, and where the
      run stops); the other epochs log NaN.  ``"auto"``: as often as costs
      at most 5% of the training time (:func:`auto_eval_every`).  In the
      full-batch regime the training set's evaluation shares its forward
      and backward pass with the next step (at the cost of keeping that
      gradient from one epoch to the next), so only the test set's follows
      ``eval_every``.
    n_test: the number of test records (for ``eval_every="auto"``).
    step_metrics: ``"all"`` logs the gradient and update norms of every
      step; ``"loss"`` skips them (NaN) unless a stopping criterion needs
      them, which saves two passes over the parameters per step.
    reuse_search_point: take ``f`` and its gradient at the new parameters
      from a line search that stored them (``gdlab.train.make_update``);
      ``None`` for the full-batch regime, where every step sees the same
      batch (sweeps too: under ``vmap`` it saves no work, but it keeps
      their numbers and evaluation counts those of runs alone).
    strength_input: see :class:`Plan`.

  Returns:
    ``(plan, numbers)``.
  """
  _checks.check_choice("step_metrics", step_metrics, STEP_METRIC_CHOICES)
  if eval_every == "auto":
    eval_every = auto_eval_every(regime, n_train, n_test if has_test else 0)
  _checks.check_positive_int("eval_every", eval_every)
  _checks.check_positive_int("chunk_epochs", chunk_epochs)
  _checks.check_choice("engine", engine, ("autodiff", "manual"))
  make_engine(objective, engine)  # Fails now for a model it cannot handle.
  recipe, numbers = hyperparams.split(optimizer)
  numbers = {"optimizer": numbers}
  if strength_input:
    numbers["strength"] = objective.penalty.strength
  regime.steps_per_epoch(n_train)  # Checks the batch size against n.
  reuse = (regime.kind == "full_batch" if reuse_search_point is None
           else reuse_search_point)
  plan = Plan(objective, recipe, regime, criteria, engine, n_train,
              chunk_epochs, has_test, record_params, mesh, eval_every,
              step_metrics == "all" or criteria.needs_norms, reuse,
              strength_input)
  return plan, numbers


EVAL_BUDGET = 0.05


def auto_eval_every(regime: Regime, n_train: int, n_test: int,
                    budget: float = EVAL_BUDGET) -> int:
  """Epochs between evaluations that cost at most ``budget`` of training.

  An evaluation is a forward pass over the training set (none in the
  full-batch regime, where the step's pass gives it) and the test set; an
  epoch's training is a forward and a backward pass over the training set,
  counted as three forward passes.  The result is the smallest ``k`` with
  ``evaluated records <= budget * 3 * n_train * k``: 1 for full-batch
  training without a test set, 2 with a test set a quarter the size of the
  training set, 9 for mini-batches with such a test set.
  """
  evaluated = n_test + (0 if regime.kind == "full_batch" else n_train)
  return max(1, math.ceil(evaluated / (budget * 3 * n_train)))


def run_keys(key: Array) -> tuple[Array, Array]:
  """``(initialisation key, data key)`` of a run's key: the one split rule."""
  k_init, k_data = jax.random.split(key)
  return k_init, k_data


def initial_carry(objective, optimizer, key: Array, params=None) -> Carry:
  """A run's carry before its first step.

  ``key`` is the run's key (:func:`run_keys` splits it); ``params`` default
  to ``objective.model.init`` of the initialisation key.
  """
  k_init, k_data = run_keys(key)
  if params is None:
    params = objective.model.init(k_init)
  dtype = jax.tree_util.tree_leaves(params)[0].dtype
  zero = jnp.int32(0)
  return Carry(params, optimizer.init(params), stopping.init(dtype), k_data,
               zero, zero, zero, zero)


# ----------------------------------------------------------------------------
# The program: small pure functions over named carries.


class Pieces(NamedTuple):
  """What one trace of the program works with (built by :func:`pieces`)."""
  plan: Plan
  objective: Any
  update: Callable[..., Any]
  point_fn: Callable[..., Any] | None
  shard: Callable[[Any], Any]
  data: Data
  full: tuple[Array, Array] | None
  dtype: Any
  n_params: int
  steps_per_epoch: int
  batch: int


def assemble(plan: Plan, numbers: dict) -> tuple[Any, Any]:
  """``(objective, optimizer)`` of a plan with its numbers filled in."""
  objective = plan.objective
  if plan.strength_input:
    objective = dataclasses.replace(objective, penalty=dataclasses.replace(
        objective.penalty, strength=numbers["strength"]))
  return objective, hyperparams.assemble(plan.optimizer, numbers["optimizer"])


def pieces(plan: Plan, carry: Carry, data: Data, numbers: dict) -> Pieces:
  """The traced functions and constants of one chunk program."""
  objective, optimizer = assemble(plan, numbers)
  fns = make_engine(objective, plan.engine)
  update = train.make_update(objective, optimizer, fns, norms=plan.norms,
                             reuse_search_point=plan.reuse)
  batch = plan.regime.size(plan.n_train)
  shard = batch_constraint(plan.mesh, plan.regime, batch)
  full_batch = plan.regime.kind == "full_batch"
  # Full batch: the evaluation on the training set after an epoch and the
  # next step's evaluation are at the same parameters on the same data, so
  # one forward and backward pass serves both (the Point carried from epoch
  # to epoch), except where a line search stores the point.
  fused = full_batch and not (
      plan.reuse and accounting.stored_point(carry.opt_state) is not None)
  leaves = jax.tree_util.tree_leaves(carry.params)
  return Pieces(
      plan, objective, update,
      fns.value_grad_and_output if fused else None, shard, data,
      shard((data.x_train, data.y_train)) if full_batch else None,
      leaves[0].dtype, sum(p.size for p in leaves),
      plan.regime.steps_per_epoch(plan.n_train), batch)


def _flat(params) -> Array:
  return jnp.concatenate([jnp.ravel(p) for p in
                          jax.tree_util.tree_leaves(params)])


def _all_finite(tree) -> Array:
  """``gdlab.stopping.all_finite``'s test, one matrix-vector product a leaf.

  Each leaf, as a matrix (its last axis the columns), times a vector of
  zeros: a finite entry adds 0 and an infinite or NaN one NaN, so the
  product is finite exactly when the leaf is.  The backend's matrix-vector
  kernel makes it one vectorised pass over the leaf, where XLA's CPU
  backend runs ``sum(x * 0)`` as a slower loop on the step's critical path.
  """
  finite = jnp.asarray(True)
  for x in jax.tree_util.tree_leaves(tree):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact) or x.size == 0:
      continue  # integers are finite
    m = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    finite &= jnp.isfinite(jnp.sum(m @ jnp.zeros(m.shape[-1], m.dtype)))
  return finite


def take_step(pc: Pieces, c: Carry, batch, point: Point | None):
  """One update, applied unless it diverged; its metrics."""
  plan = pc.plan
  updates, new_opt, m = pc.update(c.params, c.opt_state, batch, point)
  steps = c.step + 1
  fun_evals = c.fun_evals + m["fun_evals"]
  grad_evals = c.grad_evals + m["grad_evals"]
  if plan.norms:
    # A finite update of finite parameters gives finite parameters (short
    # of overflowing the float range, which the growth test catches long
    # before).
    finite = jnp.isfinite(m["update_norm"])
  else:
    finite = _all_finite(updates)
  diverged, stop = stopping.check(
      plan.criteria, c.stop, loss=m["loss"],
      grad_norm=m["grad_norm"] if plan.norms else None,
      update_norm=m["update_norm"] if plan.norms else None,
      new_params_finite=finite, steps=steps, grad_evals=grad_evals)
  # A diverged update is not applied; the select rides along with the
  # addition, in the same pass over the parameters.
  params = jax.tree_util.tree_map(
      lambda p, u: jnp.where(diverged, p, p + u.astype(p.dtype)),
      c.params, updates)
  opt_state = jax.tree_util.tree_map(
      lambda new, old: jnp.where(diverged, old, new), new_opt, c.opt_state)
  m = {k: jnp.asarray(m[k], jnp.int32 if k in _INT_METRICS else pc.dtype)
       for k in STEP_METRICS}
  if plan.record_params:
    m["params"] = _flat(c.params)
  return Carry(params, opt_state, stop, c.key, c.epoch, steps, fun_evals,
               grad_evals), m


def empty_step_log(pc: Pieces) -> dict:
  """An epoch's step log before any step: NaN (zero counts), inactive."""
  n = pc.steps_per_epoch
  log = {k: (jnp.zeros((n,), jnp.int32) if k in _INT_METRICS
             else jnp.full((n,), jnp.nan, pc.dtype)) for k in STEP_METRICS}
  if pc.plan.record_params:
    log["params"] = jnp.full((n, pc.n_params), jnp.nan, pc.dtype)
  log["active"] = jnp.zeros((n,), bool)
  return log


class StepLoop(NamedTuple):
  """The carry of the loop over an epoch's steps."""
  i: Array
  carry: Carry
  log: dict


def _loop_body(pc: Pieces, batch_at, point, s: StepLoop) -> StepLoop:
  c, m = take_step(pc, s.carry, batch_at(s.i), point)
  log = {k: v.at[s.i].set(m[k] if k != "active" else True)
         for k, v in s.log.items()}
  return StepLoop(s.i + 1, c, log)


def epoch_steps(pc: Pieces, c: Carry, batch_at, point: Point | None):
  """The epoch's steps, until the run stops: ``(carry, step log)``.

  A while loop, so that the steps after a stop cost nothing and the carry is
  updated in place.  A full-batch epoch is its one step under a cond:
  cheaper than a while loop of one iteration, above all under ``vmap``
  (sweeps), where the while loop's batched predicate selects the whole
  carry after the step.
  """
  body = functools.partial(_loop_body, pc, batch_at, point)
  start = StepLoop(0, c, empty_step_log(pc))
  if pc.steps_per_epoch == 1:
    return jax.lax.cond(
        c.stop.reason == stopping.RUNNING,
        lambda c: body(start._replace(carry=c))[1:],
        lambda c: (c, empty_step_log(pc)), c)

  def running(s: StepLoop):
    return (s.i < pc.steps_per_epoch) & (
        s.carry.stop.reason == stopping.RUNNING)

  end = jax.lax.while_loop(running, body, start)
  return end.carry, end.log


def next_point(pc: Pieces, params, last: Array, point: Point):
  """``(point, (loss, accuracy))`` on the training set after an epoch; the
  chunk's last epoch needs no gradient (no step follows in this chunk)."""
  def with_grad(p):
    value, grads, y_hat = pc.point_fn(p, *pc.full)
    acc = pc.objective.accuracy(y_hat, pc.full[1])
    return Point(value, grads), jnp.asarray(acc, pc.dtype)

  def without(p):
    value, acc = pc.objective.metrics(p, *pc.full)
    # Zeros shaped like the engine's gradient, whose dtypes can differ from
    # the params' (the manual engine promotes mixed dtypes).
    return (Point(value, jax.tree_util.tree_map(jnp.zeros_like,
                                                point.grads)),
            jnp.asarray(acc, pc.dtype))

  new, acc = jax.lax.cond(last, without, with_grad, params)
  return new, (new.value, acc)


def evaluate(pc: Pieces, params, trained, due: Array) -> tuple[Array, ...]:
  """``(train loss, test loss, train accuracy, test accuracy)``.

  ``trained``: the training set's ``(loss, accuracy)`` where the epoch's
  pass gave them (full batch), reported every epoch; the passes this
  function makes run only when ``due`` (NaN otherwise).
  """
  nan = jnp.full((), jnp.nan, pc.dtype)

  def on(x, y):
    def metrics(p):
      return tuple(jnp.asarray(v, pc.dtype)
                   for v in pc.objective.metrics(p, x, y))
    if pc.plan.eval_every == 1:
      return metrics(params)
    return jax.lax.cond(due, metrics, lambda p: (nan, nan), params)

  data = pc.data
  train_loss, train_acc = (trained if trained is not None
                           else on(data.x_train, data.y_train))
  test_loss, test_acc = (on(data.x_test, data.y_test) if pc.plan.has_test
                         else (nan, nan))
  return tuple(jnp.asarray(v, pc.dtype) for v in
               (train_loss, test_loss, train_acc, test_acc))


def _minibatch_at(pc: Pieces, key: Array):
  """``i -> batch i`` of an epoch shuffled by ``key``."""
  idx, mask = batching.epoch_batches(key, pc.plan.n_train, pc.batch,
                                     pc.plan.regime.remainder)
  x, y = pc.data.x_train, pc.data.y_train

  def batch_at(i):
    rows = idx[i]
    if pc.plan.regime.padded:
      return pc.shard((x[rows], y[rows], mask[i].astype(pc.dtype)))
    return pc.shard((x[rows], y[rows]))
  return batch_at


class EpochState(NamedTuple):
  """The carry of the scan over a chunk's epochs."""
  carry: Carry
  point: Point | None


def run_epoch(pc: Pieces, state: EpochState, last: Array):
  """One epoch: its steps, the epoch budget, the evaluation; its logs."""
  c, point = state
  running_at_start = c.stop.reason == stopping.RUNNING
  key, sub = jax.random.split(c.key)
  c = c._replace(key=key)
  trained = None
  if pc.full is not None:
    c, steps = epoch_steps(pc, c, lambda i: pc.full, point)
    if pc.point_fn is not None:
      point, trained = next_point(pc, c.params, last, point)
  else:
    c, steps = epoch_steps(pc, c, _minibatch_at(pc, sub), None)
  epoch = c.epoch + jnp.where(running_at_start, 1, 0)
  reason = jnp.where(
      (c.stop.reason == stopping.RUNNING) &
      (epoch >= pc.plan.criteria.max_epochs),
      jnp.int32(stopping.CODES["max_epochs"]), c.stop.reason)
  c = c._replace(epoch=epoch, stop=c.stop._replace(reason=reason))
  due = (epoch % pc.plan.eval_every == 0) | (reason != stopping.RUNNING)
  train_loss, test_loss, train_acc, test_acc = evaluate(pc, c.params,
                                                        trained, due)
  e = {"train_loss": train_loss, "test_loss": test_loss,
       "train_accuracy": train_acc, "test_accuracy": test_acc,
       "epoch": epoch, "step": c.step, "fun_evals": c.fun_evals,
       "grad_evals": c.grad_evals, "active": running_at_start}
  e = {k: (jnp.asarray(v, pc.dtype) if k in EPOCH_METRICS else v)
       for k, v in e.items()}
  return EpochState(c, point), (e, steps)


def run_chunk(plan: Plan, carry: Carry, data: Data, numbers: dict):
  """``plan.chunk_epochs`` epochs: ``(carry, epoch logs, step logs)``.

  Pure: the compiled program (``jax.jit`` of it with ``plan`` bound).
  """
  pc = pieces(plan, carry, data, numbers)
  point = None
  if pc.point_fn is not None:  # f and its gradient where the chunk starts.
    value, grads, _ = pc.point_fn(carry.params, *pc.full)
    point = Point(value, grads)
  last = jnp.arange(plan.chunk_epochs) == plan.chunk_epochs - 1
  state, (epochs, steps) = jax.lax.scan(
      functools.partial(run_epoch, pc), EpochState(carry, point), last)
  # (chunk_epochs, steps_per_epoch) -> one row per step.
  steps = jax.tree_util.tree_map(lambda v: v.reshape((-1,) + v.shape[2:]),
                                 steps)
  return state.carry, epochs, steps


# ----------------------------------------------------------------------------
# Compiled programs, kept by plan and argument shapes.


_INIT_PROGRAMS: collections.OrderedDict = collections.OrderedDict()


def _init_program(plan: Plan, has_params: bool):
  """``(key, params, numbers) -> Carry``, jitted, kept by plan."""
  key = (plan, has_params)
  program = _INIT_PROGRAMS.pop(key, None)
  if program is None:
    def init(run_key, params, numbers):
      objective, optimizer = assemble(plan, numbers)
      return initial_carry(objective, optimizer, run_key, params)
    program = jax.jit(init)
  _INIT_PROGRAMS[key] = program
  while len(_INIT_PROGRAMS) > MAX_PROGRAMS:
    _INIT_PROGRAMS.popitem(last=False)
  return program


_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
MAX_PROGRAMS = 32


def _leaf_signature(x) -> tuple:
  if isinstance(x, jax.Array):
    return (tuple(x.shape), x.dtype, x.weak_type, x.sharding)
  if isinstance(x, (np.ndarray, np.generic)):
    return ("numpy", tuple(np.shape(x)), np.asarray(x).dtype)
  return (type(x),)


def _signature(tree) -> tuple:
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return treedef, tuple(_leaf_signature(x) for x in leaves)


def own_buffers(tree, *, copy: bool = False):
  """``tree`` with one device buffer per array leaf, to donate.

  A donated argument may not hold the same buffer twice (an eagerly built
  state can share one constant between two fields); such repeats are
  copied, and with ``copy`` every array is (the caller keeps its own).
  """
  seen = set()

  def buffers(a) -> tuple:
    # Two arrays may share a buffer without being one Python object.
    try:
      return tuple(s.data.unsafe_buffer_pointer()
                   for s in a.addressable_shards)
    except Exception:  # pylint: disable=broad-except
      return (id(a),)

  def own(a):
    if not isinstance(a, jax.Array):
      return a
    if copy or not seen.isdisjoint(buffers(a)):
      a = a.copy()
    seen.update(buffers(a))
    return a
  return jax.tree_util.tree_map(own, tree)


def compiled_chunk(plan: Plan, carry, data, numbers, *,
                   vmapped: tuple | None = None):
  """``(compiled chunk program, seconds spent compiling it)``.

  A program compiled before for the same plan and argument shapes is
  reused (0 seconds).  The program takes its carry's buffers (donated): a
  carry passed to it is not valid afterwards, only the one it returns, and
  it must not hold one buffer twice (:func:`own_buffers`).  ``vmapped``: ``(mesh, runs sharding, data
  sharding)`` for the program of a sweep, ``vmap``-ped over the carry and
  the numbers and sharded over the mesh's ``"runs"`` axis.
  """
  key = (plan, vmapped, jax.config.jax_enable_x64,
         _signature((carry, data, numbers)))
  try:
    program = _PROGRAMS.pop(key)
    _PROGRAMS[key] = program
    return program, 0.0
  except KeyError:
    pass
  t0 = time.perf_counter()
  fn = functools.partial(run_chunk, plan)
  # The carry is donated: its buffers become the next carry's, so a device
  # holds one copy of the parameters and optimizer state, not two.
  if vmapped is None:
    jitted = jax.jit(fn, donate_argnums=0)
  else:
    _, runs, data_sharding = vmapped
    jitted = jax.jit(jax.vmap(fn, in_axes=(0, None, 0),
                              spmd_axis_name="runs"),
                     in_shardings=(runs, data_sharding, runs),
                     out_shardings=runs, donate_argnums=0)
  program = jitted.lower(carry, data, numbers).compile()
  seconds = time.perf_counter() - t0
  _PROGRAMS[key] = program
  while len(_PROGRAMS) > MAX_PROGRAMS:
    _PROGRAMS.popitem(last=False)
  return program, seconds


def clear_programs() -> None:
  """Forgets the compiled programs kept in this process."""
  _PROGRAMS.clear()
  _INIT_PROGRAMS.clear()


# ----------------------------------------------------------------------------
# The host driver: chunks until every run has stopped.


def drive(program, carry: Carry, data: Data, numbers: dict,
          histories: list[History], *, batched: bool = False,
          on_chunk: Callable[[Carry, list[History]], None] | None = None,
          bar: progress_lib.Progress | None = None,
          measure: Callable[[Carry, dict], dict] | None = None
          ) -> tuple[Carry, bool]:
  """Calls the chunk program until every run has stopped.

  Args:
    program: the compiled chunk program.
    carry: the runs' carry (batched along a leading axis when ``batched``).
    data, numbers: the program's other arguments.
    histories: one history per run (the first ``len(histories)`` rows of a
      batched carry; rows past them pad the batch and are ignored).
    batched: whether the carry holds a batch of runs (a sweep).
    on_chunk: called after every chunk with the carry and the histories.
    bar: a progress display, updated after every chunk, on the host, with
      the runs' last epoch and what ``gdlab.progress.describe`` says of
      them.
    measure: ``(carry, epoch rows) -> epoch rows``, called on the host
      after every chunk of a single run, before its rows join the history:
      adds the tracked columns (``gdlab.tracking.record``).

  Returns:
    ``(carry, interrupted)``; ``histories`` is updated in place.  After a
    ``KeyboardInterrupt``, or a signal deferred by
    :func:`gdlab.interrupts.deferred` (polled before every chunk), the carry
    and the histories are those of the last whole chunk, and
    ``interrupted`` is true.
  """
  n = len(histories)
  if measure is not None and batched:
    raise ValueError("measure: tracks a single run; got a batched carry "
                     "(a sweep).")

  def reasons(c):
    r = np.asarray(to_host(c.stop.reason))
    return r[:n] if batched else r.reshape(1)

  try:
    while np.any(reasons(carry) == stopping.RUNNING):
      interrupts.check()
      carry = _one_chunk(program, carry, data, numbers, histories, batched,
                         reasons, measure)
      if bar is not None:
        bar.update(*progress_lib.describe(histories))
      if on_chunk is not None:
        on_chunk(carry, histories)
  except KeyboardInterrupt:
    if any(a.is_deleted() for a in jax.tree_util.tree_leaves(carry)
           if isinstance(a, jax.Array)):
      raise  # stopped inside a chunk, whose carry was donated: no state
    interrupts.consume()  # acted on: the runs stop here
    return carry, True
  return carry, False


def _one_chunk(program, carry, data, numbers, histories, batched, reasons,
               measure=None):
  """Runs one chunk and appends its rows to the histories."""
  t0 = time.perf_counter()
  new_carry, epochs, steps = program(carry, data, numbers)
  epochs, steps = to_host((epochs, steps))
  seconds = time.perf_counter() - t0
  if measure is not None:  # not training time: outside run_time
    epochs = measure(new_carry, epochs)
  codes = reasons(new_carry)
  for i, h in enumerate(histories):
    pick = ((lambda d, i=i: {k: v[i] for k, v in d.items()}) if batched
            else (lambda d: d))
    h = append_chunk(h, pick(epochs), pick(steps), h.run_time,
                     h.run_time + seconds)
    h.run_time += seconds
    h.stop_reason = stopping.reason_name(codes[i])
    histories[i] = h
  return new_carry


def default_chunk_epochs(max_epochs: int, steps_per_epoch: int,
                         target_chunks: int = 20,
                         max_steps_per_chunk: int = 50_000) -> int:
  """Epochs per chunk: about ``target_chunks`` chunks, bounded in size."""
  epochs = max(1, math.ceil(max_epochs / target_chunks))
  return max(1, min(epochs, max_steps_per_chunk // max(1, steps_per_epoch)))


class FitResult(NamedTuple):
  """What :func:`fit` returns.

  Shown (``repr``, and as HTML in a notebook) as its history's headline,
  :attr:`gdlab.history.History.headline`, never its arrays.
  """
  params: Any
  opt_state: Any
  history: History
  stop_reason: str
  carry: Carry

  def __repr__(self) -> str:
    return self.history.summary_line("FitResult",
                                     stop_reason=self.stop_reason)

  def _repr_html_(self) -> str:
    return self.history.summary_html("FitResult",
                                     stop_reason=self.stop_reason)


def fit(objective: Objective, optimizer: optax.GradientTransformation,
        data: Data | tuple, *, key: Array, regime: Regime | str = "full_batch",
        criteria: stopping.Criteria | None = None, engine: str = "autodiff",
        params=None, chunk_epochs: int | None = None,
        carry: Carry | None = None, history: History | None = None,
        on_chunk: Callable[[Carry, History], None] | None = None,
        progress: bool | None | progress_lib.Options = None,
        record_params: bool = False,
        mesh: Mesh | None = None,
        eval_every: int | str = "auto",
        step_metrics: str = "all",
        check_finite: bool = True,
        track: tracking.Track | str | list[str] | None = None) -> FitResult:
  """Trains ``objective`` with ``optimizer``, compiled, until a criterion holds.

  The compiled program is kept: a later ``fit`` with the same structure
  (model, loss, optimizer kind, regime, criteria, engine, logging, shapes,
  dtypes, devices) compiles nothing, whatever its data or the numeric
  hyperparameters of a gdlab optimizer (``gdlab.optim.hyperparams``).
  Compiled programs also go to JAX's persistent compilation cache
  (``gdlab.compilation_cache``), so a new process reuses them.

  Args:
    objective: model, loss, reduction and penalty.
    optimizer: any optax transformation.
    data: a ``gdlab.data.Dataset``, a :class:`Data` or
      ``(x_train, y_train[, x_test, y_test])``, checked on the host before
      anything compiles (:func:`as_data`): a ``ValueError`` names the array
      that is empty, holds NaN or inf, or has labels the loss or the
      model's output cannot take.  Float arrays are cast to the dtype of the
      model's parameters, with a ``UserWarning`` when that changes them.
    key: the run's ``jax.random`` key; it is split into the initialisation
      key and the shuffling key (:func:`run_keys`), so the same key gives the
      same run.
    regime: a ``Regime`` or the name of one without a batch size.
    criteria: stopping criteria (default: 100 epochs).
    engine: ``"autodiff"`` or ``"manual"``.
    params: initial parameters (default: ``objective.model.init``).
    chunk_epochs: epochs per compiled call (default: about 20 chunks).
    carry, history: a run's state and history to resume from, on the same
      data (in the full-batch regime, a line search's state may hold ``f``
      and its gradient on the training set the run was trained on).
    on_chunk: called after every chunk with the carry and the history so far.
    progress: ``None`` (default): a progress bar on a terminal or in a
      notebook (``tqdm.auto``), nothing otherwise; ``True``: a bar there, and
      elsewhere (a log file) a plain line every
      ``gdlab.progress.LINE_SECONDS`` seconds; ``False``: nothing; or a
      ``gdlab.progress.Options`` (the run's label, the stream, the period).
      Shown on standard error, between chunks; a run that stops for any
      reason but ``max_epochs`` says why in one line.
    record_params: log every step's parameters (flattened) under the step
      metric ``"params"``: for small problems such as the 2-D test
      functions, whose trajectories are plotted.
    mesh: a mesh with a ``"data"`` axis for data-parallel training
      (``gdlab.parallel.data_mesh``): the training and test sets and every
      batch are sharded along their records; parameters and optimizer state
      are replicated, and XLA inserts the reductions.
    eval_every, step_metrics: what to log, and how often (see
      :func:`make_plan`).
    check_finite: reject data holding NaN or inf; ``False`` trains on them.
    track: quantities to compute every few epochs between chunks, on device
      (``gdlab.tracking``): a ``gdlab.tracking.Track``, or names of
      ``gdlab.tracking.METRICS`` (``"sharpness"``, ``"hessian_trace"``,
      ``"noise_scale"``) tracked every epoch.  They are
      logged as epoch columns of the history, NaN on the epochs not
      tracked; the chunk size is cut to a divisor of ``track.every``
      (``gdlab.tracking.chunk_epochs``).  ``None``: nothing.

  Returns:
    A :class:`FitResult`.  A run interrupted by Ctrl-C (SIGINT) or SIGTERM,
    during the compilation or a chunk, stops at the end of that chunk
    (:mod:`gdlab.interrupts`) and returns what it had then, with the stop
    reason ``"interrupted"``; a second signal ends the process at once.
  """
  compilation_cache.enable()
  regime = Regime(regime) if isinstance(regime, str) else regime
  criteria = criteria or stopping.Criteria()
  if carry is not None:
    params_like = carry.params
  elif params is not None:
    params_like = params
  else:
    params_like = abstract_call(objective.model, "init", key)
  data = as_data(data, objective, params_like, check_finite=check_finite,
                 stacklevel=3)
  n_train = int(data.x_train.shape[0])
  if chunk_epochs is None:
    chunk_epochs = default_chunk_epochs(criteria.max_epochs,
                                        regime.steps_per_epoch(n_train))
  track = tracking.as_track(track)
  if track is not None:
    chunk_epochs = tracking.chunk_epochs(chunk_epochs, track.every)
  plan, numbers = make_plan(
      objective, optimizer, regime, criteria, n_train=n_train, engine=engine,
      chunk_epochs=chunk_epochs, has_test=data.x_test is not None,
      record_params=record_params, mesh=mesh, eval_every=eval_every,
      n_test=0 if data.x_test is None else int(data.x_test.shape[0]),
      step_metrics=step_metrics)
  data = shard_data(data, mesh, regime)
  if carry is None:
    carry = own_buffers(_init_program(plan, params is not None)(
        key, params, numbers))
  else:
    # The chunk program takes its carry's buffers (donated): work on a copy
    # of the caller's, which stays valid.
    carry = own_buffers(carry, copy=True)
  carry = replicate(carry, mesh)
  history = history or empty_history()
  measure = None
  if track is not None:
    tracking.pad_history(history, track)
    measure = functools.partial(tracking.record, tracking.tracker(
        track, objective, data.x_train, data.y_train, engine))
  # Ctrl-C during the compilation or a chunk stops at the chunk's end.
  with interrupts.deferred():
    program, seconds = compiled_chunk(plan, carry, data, numbers)
    history.compile_time += seconds

    bar = progress_lib.Progress.of(
        progress, progress_lib.epoch_budget(
            criteria, regime.steps_per_epoch(n_train)),
        initial=progress_lib.last_epoch(history))
    histories = [history]
    wrapped = None if on_chunk is None else (lambda c, hs: on_chunk(c,
                                                                    hs[0]))
    try:
      carry, interrupted = drive(program, carry, data, numbers, histories,
                                 on_chunk=wrapped, bar=bar, measure=measure)
    except BaseException:
      bar.close()
      raise
  stop_reason = ("interrupted" if interrupted else
                 stopping.reason_name(to_host(carry.stop.reason)))
  histories[0].stop_reason = stop_reason
  bar.close(progress_lib.stop_message(histories[0], criteria))
  return FitResult(carry.params, carry.opt_state, histories[0], stop_reason,
                   carry)
