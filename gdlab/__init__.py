"""gdlab: study how gradient descent and backpropagation train models."""

from gdlab import activations
from gdlab import backprop
from gdlab import gradcheck
from gdlab import losses
from gdlab import models
from gdlab.gradcheck import check_gradients
from gdlab.losses import Penalty
from gdlab.models import (MLP, from_flax, from_nnx, linear_regression,
                          logistic_regression, mlp)
from gdlab.objective import ENGINES, Objective, value_and_grad_fn

__version__ = "0.1.0"

__all__ = [
    "ENGINES",
    "MLP",
    "Objective",
    "Penalty",
    "activations",
    "backprop",
    "check_gradients",
    "from_flax",
    "from_nnx",
    "gradcheck",
    "linear_regression",
    "logistic_regression",
    "losses",
    "mlp",
    "models",
    "value_and_grad_fn",
]
