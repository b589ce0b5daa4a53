"""Reader and writer for IDX files, the format MNIST and Fashion-MNIST ship in.

Contract: an IDX file starts with a 4-byte magic number ``0x00 0x00 T D``,
where ``T`` codes the element type and ``D`` is the number of dimensions,
followed by ``D`` big-endian ``uint32`` sizes and the elements in C order,
big-endian. Type codes: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64. A file may be
gzip-compressed; this is recognised from its first two bytes
(``0x1f 0x8b``), not from its name. :func:`load_idx` returns a host NumPy array
in the native byte order; a malformed file raises ``ValueError`` naming the
path. Reference: http://yann.lecun.com/exdb/mnist/ (section "File formats").
"""

from __future__ import annotations

import gzip
import os
import struct
from typing import Any

import jax
import numpy as np

from gdlab import _checks
from gdlab.data import dataset
from gdlab.data import validation
from gdlab.data.dataset import Dataset

_GZIP_MAGIC = b"\x1f\x8b"
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}


def _read_bytes(path: str | os.PathLike) -> bytes:
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == _GZIP_MAGIC:
    data = gzip.decompress(data)
  return data


def load_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file, gzip-compressed or not.

  Args:
    path: file to read.

  Returns:
    A NumPy array with the file's shape and element type (native byte order).

  Raises:
    ValueError: when the magic number, the type code or the size does not fit
      the IDX format.
  """
  data = _read_bytes(path)
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f"path: {os.fspath(path)!r} is not an IDX file; expected "
                     f"the magic number to start with 0x00 0x00, got "
                     f"{data[:4].hex(' ') or 'an empty file'}.")
  code, ndim = data[2], data[3]
  if code not in _DTYPES:
    allowed = ", ".join(f"0x{c:02X}" for c in _DTYPES)
    raise ValueError(f"path: {os.fspath(path)!r} has IDX type code "
                     f"0x{code:02X}; expected one of {allowed}.")
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"path: {os.fspath(path)!r} ends inside its IDX header "
                     f"({len(data)} bytes for {ndim} dimensions).")
  shape = struct.unpack(f">{ndim}I", data[4:header])
  dtype = _DTYPES[code]
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(data) - header != expected:
    raise ValueError(f"path: {os.fspath(path)!r} holds {len(data) - header} "
                     f"bytes of data; its header {shape} of {dtype.name} "
                     f"needs {expected}.")
  array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
  return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: Any, *,
              compress: bool = False) -> None:
  """Writes ``array`` as an IDX file (gzip-compressed when ``compress``).

  Args:
    path: file to write.
    array: array of one of the IDX element types (uint8, int8, int16, int32,
      float32, float64) with at most 255 dimensions.
    compress: gzip the file.
  """
  array = np.asarray(array)
  dtype = array.dtype.newbyteorder("=")
  if dtype not in _CODES:
    allowed = ", ".join(dt.name for dt in _CODES)
    raise TypeError(f"array: expected an element type in {allowed}; "
                    f"got {array.dtype}.")
  header = bytes([0, 0, _CODES[dtype], array.ndim])
  header += struct.pack(f">{array.ndim}I", *array.shape)
  data = header + array.astype(dtype.newbyteorder(">")).tobytes()
  with open(path, "wb") as f:
    f.write(gzip.compress(data) if compress else data)


def load_mnist_idx(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    *,
    test_images_path: str | os.PathLike | None = None,
    test_labels_path: str | os.PathLike | None = None,
    n_classes: int = 10,
    seed=0,
    test_fraction: float = 0.2,
    flatten: bool = True,
    standardize: bool = False,
    name: str = "mnist",
    check_finite: bool = True,
) -> Dataset:
  """Builds a multiclass :class:`~gdlab.data.Dataset` from MNIST IDX files.

  With ``test_images_path`` and ``test_labels_path`` the given test files form
  the test part (the official MNIST split); otherwise the records are split by
  ``seed`` with ``test_fraction`` of them in the test part, stratified. Integer
  pixels are scaled by the largest value of their type (``/ 255`` for uint8),
  so inputs lie in ``[0, 1]``; ``standardize=True`` then standardises every
  pixel with training-set statistics.

  Each file is checked as it is read, on the host: at least one image, one
  label per image in ``[0, n_classes)``, and (float IDX files) no NaN or inf
  pixels unless ``check_finite=False``; a failure raises ``ValueError``
  naming the argument and the file.

  Args:
    images_path: IDX file of images, shape ``(n, rows, cols)``.
    labels_path: IDX file of labels, shape ``(n,)``, values in
      ``[0, n_classes)``.
    test_images_path: optional IDX file of test images.
    test_labels_path: optional IDX file of test labels.
    n_classes: number of classes.
    seed: ``int`` or ``jax.random`` key for the split.
    test_fraction: share held out when no test files are given.
    flatten: reshape images to ``(n, rows * cols)``; else keep
      ``(n, rows, cols)``.
    standardize: standardise pixels with training-set statistics.
    name: name stored in the data set.
    check_finite: reject images with NaN or inf pixels.

  Returns:
    A multiclass set with ``int32`` labels of shape ``(n,)``.
  """
  _checks.check_positive_int("n_classes", n_classes, minimum=2)
  if (test_images_path is None) != (test_labels_path is None):
    raise ValueError("test_images_path, test_labels_path: give both or "
                     "neither; got only one.")
  parts = [(images_path, labels_path)]
  if test_images_path is not None:
    parts.append((test_images_path, test_labels_path))
  xs, ys = [], []
  for images_arg, arg, (images_file, labels_file) in zip(
      ("images_path", "test_images_path"),
      ("labels_path", "test_labels_path"), parts):
    x, y = load_idx(images_file), load_idx(labels_file)
    if x.ndim == 0 or x.shape[0] == 0:
      raise ValueError(f"{images_arg}: expected at least one image in "
                       f"{os.fspath(images_file)!r}; got shape {x.shape}.")
    if check_finite:
      validation.require_finite(
          images_arg, x, hint=f"Clean {os.fspath(images_file)!r}, or pass "
          f"check_finite=False.")
    if y.ndim != 1 or x.shape[0] != y.shape[0]:
      raise ValueError(
          f"{arg}: expected one label per image, shape ({x.shape[0]},) for "
          f"{os.fspath(images_file)!r}; got {y.shape} in "
          f"{os.fspath(labels_file)!r}.")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
      raise ValueError(
          f"n_classes: labels in {os.fspath(labels_file)!r} range over "
          f"[{y.min()}, {y.max()}], outside [0, {n_classes}).")
    if np.issubdtype(x.dtype, np.integer):
      x = x.astype(dataset.float_dtype()) / np.iinfo(x.dtype).max
    xs.append(x.reshape(x.shape[0], -1) if flatten else x)
    ys.append(y.astype(np.int32))
  if len(parts) == 1:
    ds = dataset.build(dataset.rng(seed), xs[0], ys[0], name=name,
                       task="multiclass", n_classes=n_classes,
                       test_fraction=test_fraction,
                       check_finite=check_finite)
  else:
    x_train, x_test = (jax.device_put(np.asarray(x, dataset.float_dtype()))
                       for x in xs)
    ds = Dataset(x_train=x_train, y_train=jax.device_put(ys[0]),
                 x_test=x_test, y_test=jax.device_put(ys[1]),
                 name=name, task="multiclass",
                 n_classes=n_classes, check_finite=check_finite)
  if standardize:
    ds = dataset.standardize(ds)
  return ds
