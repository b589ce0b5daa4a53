"""Optimization methods as optax gradient transformations.

Every optimizer here is an ``optax.GradientTransformation`` (or
``GradientTransformationExtraArgs`` where it needs ``value``, ``grad`` or
``value_fn``), so it mixes with any optax transform and runs in a plain optax
loop.  Each keeps a NamedTuple state with ``count``, ``step_size``,
``num_fun_evals`` and ``num_grad_evals``; line searches add
``conditions_met``.

``gdlab.optim.gd`` and ``gdlab.optim.subgradient`` are the optimizers that
configs name (``optimizer.name: gd``), :func:`gradient_descent` and
:func:`subgradient_descent`, not the modules of the same names; reach a
module by its full name (``from gdlab.optim.gd import GradientDescentState``).
"""

from gdlab.optim.gd import GradientDescentState
from gdlab.optim.gd import HeavyBallState
from gdlab.optim.gd import gradient_descent
from gdlab.optim.gd import heavy_ball
from gdlab.optim.linesearch import LineSearchState
from gdlab.optim.linesearch import backtracking_linesearch
from gdlab.optim.linesearch import exact_linesearch
from gdlab.optim.linesearch import steepest_descent
from gdlab.optim.linesearch import wolfe_linesearch
from gdlab.optim.schedules import as_step_rule
from gdlab.optim.schedules import constant
from gdlab.optim.schedules import constant_step_length
from gdlab.optim.schedules import cosine_decay
from gdlab.optim.schedules import exponential_decay
from gdlab.optim.schedules import linear_warmup
from gdlab.optim.schedules import nonsummable_diminishing
from gdlab.optim.schedules import polyak
from gdlab.optim.schedules import polyak_estimated
from gdlab.optim.schedules import square_summable
from gdlab.optim.schedules import step_decay
from gdlab.optim.schedules import warmup_cosine_decay
from gdlab.optim.subgradient import SubgradientState
from gdlab.optim.subgradient import best_params
from gdlab.optim.subgradient import best_value
from gdlab.optim.subgradient import subgradient_descent

# The config names.  Bound after every import above: importing a submodule
# binds its name here only when it is first loaded, which has happened, so
# a later `import gdlab.optim.gd` leaves these as they are.
gd = gradient_descent
subgradient = subgradient_descent

__all__ = [
    "GradientDescentState",
    "HeavyBallState",
    "LineSearchState",
    "SubgradientState",
    "as_step_rule",
    "backtracking_linesearch",
    "best_params",
    "best_value",
    "constant",
    "constant_step_length",
    "cosine_decay",
    "exact_linesearch",
    "exponential_decay",
    "gd",
    "gradient_descent",
    "heavy_ball",
    "linear_warmup",
    "nonsummable_diminishing",
    "polyak",
    "polyak_estimated",
    "square_summable",
    "steepest_descent",
    "step_decay",
    "subgradient",
    "subgradient_descent",
    "warmup_cosine_decay",
    "wolfe_linesearch",
]
