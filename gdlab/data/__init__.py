"""Data for gdlab: synthetic and small real sets, 2-D test functions, batching.

The real sets are scikit-learn's small ones (:mod:`gdlab.data.real`) and
MNIST-1D, built by its own generator (:mod:`gdlab.data.mnist1d`, the
``mnist1d`` extra).

Every data set is a :class:`Dataset` (train and test arrays plus static
metadata) built from an explicit seed; see :mod:`gdlab.data.dataset` for the
label conventions, :func:`load` and :func:`names` for the registry, and
:func:`epoch_batches` for minibatch indices. Data are checked where they
enter, on the host (:mod:`gdlab.data.validation`): a ``Dataset`` when it is
constructed, and ``gdlab.fit``'s arrays when it is called.
"""

from gdlab.data.batching import epoch_batches
from gdlab.data.batching import num_batches
from gdlab.data.dataset import as_key
from gdlab.data.dataset import Dataset
from gdlab.data.dataset import one_hot
from gdlab.data.dataset import standardize
from gdlab.data.dataset import to_pm1
from gdlab.data.functions import abs_sum
from gdlab.data.functions import beale
from gdlab.data.functions import Function2D
from gdlab.data.functions import himmelblau
from gdlab.data.functions import quadratic
from gdlab.data.functions import rosenbrock
from gdlab.data.idx import load_idx
from gdlab.data.idx import load_mnist_idx
from gdlab.data.idx import write_idx
from gdlab.data.mnist1d import load_mnist1d
from gdlab.data.real import breast_cancer
from gdlab.data.real import diabetes
from gdlab.data.real import digits
from gdlab.data.real import iris
from gdlab.data.registry import function_names
from gdlab.data.registry import get_function
from gdlab.data.registry import load
from gdlab.data.registry import names
from gdlab.data.registry import SMOKE_RECORDS
from gdlab.data.synthetic import blobs
from gdlab.data.synthetic import linear
from gdlab.data.synthetic import moons
from gdlab.data.synthetic import sparse_linear
from gdlab.data.synthetic import spirals
from gdlab.data.synthetic import xor

__all__ = (
    "Dataset",
    "Function2D",
    "SMOKE_RECORDS",
    "abs_sum",
    "as_key",
    "beale",
    "blobs",
    "breast_cancer",
    "diabetes",
    "digits",
    "epoch_batches",
    "function_names",
    "get_function",
    "himmelblau",
    "iris",
    "linear",
    "load",
    "load_idx",
    "load_mnist1d",
    "load_mnist_idx",
    "moons",
    "names",
    "num_batches",
    "one_hot",
    "quadratic",
    "rosenbrock",
    "sparse_linear",
    "spirals",
    "standardize",
    "to_pm1",
    "write_idx",
    "xor",
)
