"""gdlab: study how gradient descent and backpropagation train models."""

# First, before the seconds of importing JAX: the gdlab command ends cleanly
# on Ctrl-C or SIGTERM from its first moment (see gdlab._startup).
from gdlab import _startup

if _startup.is_command():
  _startup.install()

from gdlab import activations
from gdlab import backprop
from gdlab import curvature
from gdlab import data
from gdlab import gradcheck
from gdlab import losses
from gdlab import models
from gdlab import optim
from gdlab import stopping
from gdlab.history import History
from gdlab.loop import Data, FitResult, Regime, fit
from gdlab.stopping import Criteria
from gdlab.train import make_step
from gdlab.gradcheck import check_gradients
from gdlab.losses import Penalty
from gdlab.models import (MLP, from_flax, from_nnx, linear_regression,
                          logistic_regression, mlp)
from gdlab.objective import ENGINES, Objective, value_and_grad_fn

__version__ = "0.1.0"

__all__ = [
    "Criteria",
    "Data",
    "ENGINES",
    "FitResult",
    "History",
    "MLP",
    "Objective",
    "Penalty",
    "Regime",
    "activations",
    "backprop",
    "check_gradients",
    "curvature",
    "data",
    "fit",
    "from_flax",
    "from_nnx",
    "gradcheck",
    "linear_regression",
    "logistic_regression",
    "losses",
    "make_step",
    "mlp",
    "models",
    "optim",
    "stopping",
    "value_and_grad_fn",
]
