"""Line searches: evaluations and wall time to reach ``||grad f|| < 1e-6``.

Problems (float64): Rosenbrock's function from ``(-1.2, 1)``, and L2-
regularised logistic regression (strength 1e-2, biases not penalised) on the
standardised breast-cancer set (455 training records, 30 features).

Each gdlab search is paired with the optax search of the same kind, with the
same constants (sufficient decrease ``c1 = 1e-4``, curvature ``c2 = 0.9``,
shrink 0.8 and growth 1.5 for backtracking, growth 2 for the Wolfe
bracketing, the previous step reused as the first trial along steepest
descent and 1 along L-BFGS; optax's backtracking starts from 1.5 times its
initial rate of 1, so gdlab's starts from 1.5 too), along two directions:

* steepest descent: gdlab's ``steepest_descent(search)`` against
  ``optax.chain(optax.sgd(1.0), search)``;
* L-BFGS (memory 10): ``optax.chain(optax.scale_by_lbfgs(),
  optax.scale(-1.0), search)`` with gdlab's search against ``optax.lbfgs``
  with optax's.

Both run in the same compiled loop (``lax.while_loop`` until
``||grad|| < 1e-6``): every search keeps the value and gradient at the
accepted point (``store_grad=True`` for the backtracking ones) and the loop
reads them back with ``optax.value_and_grad_from_state``, as
``gdlab.fit`` does in the full-batch regime.  Evaluations are counted by the
objective itself (a host callback per value and per gradient) in a separate
run; wall time comes from runs without the callbacks (median of
alternating repeats, compiled beforehand).  ``scipy.optimize.minimize``
(BFGS with the 2-norm test, L-BFGS-B with its max-norm test) is an outside
reference, timed with the same jitted value-and-gradient function.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdlab
from gdlab import optim
from benchmarks import common

TOL = 1e-6
SIZES = {
    "tiny": dict(max_iter=200, repeats=1, problems=("rosenbrock",),
                 tol=1e-3),
    "full": dict(max_iter=200_000, repeats=5,
                 problems=("rosenbrock", "logistic"), tol=TOL),
}


def problems(names) -> dict[str, tuple[Callable, Any]]:
  """``name -> (f, x0)`` in float64."""
  out = {}
  if "rosenbrock" in names:
    rosen = gdlab.data.rosenbrock()
    out["rosenbrock"] = (rosen.fn, jnp.asarray([-1.2, 1.0], jnp.float64))
  if "logistic" in names:
    ds = gdlab.data.breast_cancer()
    x = jnp.asarray(ds.x_train, jnp.float64)
    y = jnp.asarray(ds.y_train, jnp.float64)
    model = gdlab.logistic_regression(x.shape[1], 2, dtype=jnp.float64)
    objective = gdlab.Objective(model, "binary_cross_entropy", "mean",
                                gdlab.Penalty("l2", 1e-2))
    out["logistic"] = (lambda p: objective.value(p, x, y),
                       model.init(jax.random.PRNGKey(0)))
  return out


def methods() -> dict[str, Callable[[], optax.GradientTransformation]]:
  """``label -> make``."""
  lbfgs = lambda search: optax.chain(optax.scale_by_lbfgs(),
                                     optax.scale(-1.0), search)
  return {
      "SD + gdlab backtracking (Armijo)": lambda: optim.steepest_descent(
          optim.backtracking_linesearch(
              initial_step=1.5, shrink=0.8, c1=1e-4, grow=1.5,
              reuse_last_step=True, store_grad=True)),
      "SD + optax backtracking": lambda: optax.chain(
          optax.sgd(1.0), optax.scale_by_backtracking_linesearch(
              max_backtracking_steps=50, slope_rtol=1e-4,
              decrease_factor=0.8, increase_factor=1.5,
              max_learning_rate=1e10, store_grad=True)),
      "SD + gdlab Wolfe": lambda: optim.steepest_descent(
          optim.wolfe_linesearch(c1=1e-4, c2=0.9, reuse_last_step=True)),
      "SD + optax zoom": lambda: optax.chain(
          optax.sgd(1.0), optax.scale_by_zoom_linesearch(
              max_linesearch_steps=30, slope_rtol=1e-4, curv_rtol=0.9,
              initial_guess_strategy="keep")),
      "L-BFGS + gdlab backtracking (Armijo)": lambda: lbfgs(
          optim.backtracking_linesearch(initial_step=1.0, shrink=0.8,
                                        c1=1e-4, store_grad=True)),
      "L-BFGS + optax backtracking": lambda: optax.lbfgs(
          linesearch=optax.scale_by_backtracking_linesearch(
              max_backtracking_steps=50, slope_rtol=1e-4,
              decrease_factor=0.8, increase_factor=1e10,
              max_learning_rate=1.0, store_grad=True)),
      "L-BFGS + gdlab Wolfe": lambda: lbfgs(
          optim.wolfe_linesearch(c1=1e-4, c2=0.9)),
      "L-BFGS + optax zoom (optax.lbfgs)": optax.lbfgs,
  }


PAIRS = (("SD + gdlab backtracking (Armijo)", "SD + optax backtracking"),
         ("SD + gdlab Wolfe", "SD + optax zoom"),
         ("L-BFGS + gdlab backtracking (Armijo)",
          "L-BFGS + optax backtracking"),
         ("L-BFGS + gdlab Wolfe", "L-BFGS + optax zoom (optax.lbfgs)"))


def counting(f: Callable, counts: dict[str, int]) -> Callable:
  """``f`` that counts its evaluations and its gradients on the host."""
  def bump(key):
    def add(_):
      counts[key] += 1
    return add

  @jax.custom_vjp
  def tap(p):
    return p

  def tap_fwd(p):
    return p, None

  def tap_bwd(_, ct):
    jax.debug.callback(bump("grad"), jax.tree.leaves(ct)[0])
    return (ct,)
  tap.defvjp(tap_fwd, tap_bwd)

  def counted(p):
    value = f(tap(p))
    jax.debug.callback(bump("fun"), value)
    return value
  return counted


def solver(optimizer, f: Callable, tol: float, max_iter: int):
  """A jitted ``x0 -> (x, iterations, ||grad||)`` loop; see module doc."""
  value_and_grad = jax.value_and_grad(f)
  from_state = optax.value_and_grad_from_state(f)

  def solve(x0):
    v0, g0 = value_and_grad(x0)

    def cond(c):
      _, _, _, g, k = c
      return (optax.tree.norm(g) >= tol) & (k < max_iter)

    def body(c):
      x, s, v, g, k = c
      u, s = optimizer.update(g, s, x, value=v, grad=g, value_fn=f)
      x = optax.apply_updates(x, u)
      v, g = from_state(x, state=s)
      return x, s, v, g, k + 1
    x, _, _, g, k = jax.lax.while_loop(
        cond, body, (x0, optimizer.init(x0), v0, g0, jnp.int32(0)))
    return x, k, optax.tree.norm(g)
  return jax.jit(solve)


def scipy_case(scipy_opt, f, x0, method: str, tol: float):
  flat0, unravel = jax.flatten_util.ravel_pytree(x0)
  vg = jax.jit(jax.value_and_grad(lambda v: f(unravel(v))))

  def fun(v):
    value, grad = vg(jnp.asarray(v))
    return float(value), np.asarray(grad, np.float64)
  options = {"gtol": tol, "maxiter": 200_000}
  if method == "BFGS":
    options["norm"] = 2
  if method == "L-BFGS-B":
    options["maxfun"] = 10**6

  def run():
    return scipy_opt.minimize(fun, np.asarray(flat0), jac=True,
                              method=method, options=options)
  return run, vg


def run(size: str = "full") -> common.Report:
  import jax.flatten_util  # pylint: disable=g-import-not-at-top,unused-import
  jax.config.update("jax_enable_x64", True)
  cfg = common.sized(SIZES, size)
  tol = cfg["tol"]
  scipy_opt = common.optional("scipy")
  report = common.Report(
      "linesearch", f"evaluations and time to ||grad|| < {tol:g}, float64",
      ["problem", "iterations", "fun_evals", "grad_evals", "ms",
       "final_grad_norm", "converged", "spread"])
  report.setup = {"tol": tol, "max_iter": cfg["max_iter"],
                  "repeats": cfg["repeats"], "dtype": "float64"}
  if scipy_opt is None:
    report.notes.append(common.skipped_note("scipy.optimize.minimize",
                                            "scipy"))
  for pname, (f, x0) in problems(cfg["problems"]).items():
    rows, cases = {}, {}
    for label, make in methods().items():
      counts = {"fun": 0, "grad": 0}
      counted = solver(make(), counting(f, counts), tol, cfg["max_iter"])
      _, k, gnorm = jax.block_until_ready(counted(x0))
      plain = solver(make(), f, tol, cfg["max_iter"])
      first = common.first_call(lambda plain=plain: jax.block_until_ready(
          plain(x0)))
      report.compile.append({"case": f"{pname}: {label}",
                             "first_step_s": first})
      cases[label] = lambda plain=plain: jax.block_until_ready(plain(x0))
      rows[label] = {"case": label, "problem": pname,
                     "iterations": int(k), "fun_evals": counts["fun"],
                     "grad_evals": counts["grad"],
                     "final_grad_norm": float(gnorm),
                     "converged": bool(gnorm < tol)}
    if scipy_opt is not None:
      for method in ("BFGS", "L-BFGS-B"):
        label = f"scipy.optimize.minimize {method}"
        solve, vg = scipy_case(scipy_opt, f, x0, method, tol)
        jax.block_until_ready(vg(jax.flatten_util.ravel_pytree(x0)[0]))
        res = solve()
        grad = np.asarray(vg(jnp.asarray(res.x))[1])
        cases[label] = solve
        rows[label] = {"case": label, "problem": pname,
                       "iterations": int(res.nit), "fun_evals": int(res.nfev),
                       "grad_evals": int(res.njev),
                       "final_grad_norm": float(np.linalg.norm(grad)),
                       "converged": bool(np.linalg.norm(grad) < tol)}
    timings = common.alternate(cases, cfg["repeats"], warmup=1)
    for label, row in rows.items():
      row["ms"] = 1e3 * timings[label].median
      row["spread"] = timings[label].spread
      report.rows.append(row)
    for ours, theirs in PAIRS:
      a, b = rows[ours], rows[theirs]
      ok = a["converged"] and (not b["converged"] or
                               a["fun_evals"] <= b["fun_evals"])
      report.target(f"{pname}: {ours} vs {theirs.split(' + ')[1]}, "
                    f"function evaluations", f"{a['fun_evals']} vs "
                    f"{b['fun_evals']}", "<= optax's", ok)
  return report


if __name__ == "__main__":
  raise SystemExit(common.main(run))
