"""Writing `.npz` files array by array, chunk by chunk, so memory stays bounded at any size.

`np.savez` needs every array whole in memory (10 M AligNet triplets hold 3 x 10 M file names).
Here each array's `.npy` header is written first (its shape and dtype are known in advance), then
its rows chunk by chunk into the zip member. The result is an ordinary `.npz` that `np.load` reads,
and it appears under its real name only when complete (written to a temporary name, then renamed).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable

import numpy as np

from aligned.artifacts import atomic_path


class NpzStreamWriter:
  """Example:
  with NpzStreamWriter("out.npz") as npz:
    npz.add("x", shape=(n, 3), dtype=np.float32, chunks=(chunk for chunk in ...))
  """

  def __init__(self, path: str | os.PathLike, compress: bool = False):
    self._atomic = atomic_path(path)
    self._compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED

  def __enter__(self):
    self._tmp = self._atomic.__enter__()
    self._zip = zipfile.ZipFile(self._tmp, "w", compression=self._compression, allowZip64=True)
    return self

  def add(self, name: str, shape: tuple[int, ...], dtype, chunks: Iterable[np.ndarray]) -> None:
    """Writes array `name` from row chunks whose concatenation has exactly `shape` and `dtype`."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
      raise TypeError(f"{name}: object arrays would need pickle")
    rows = 0
    with self._zip.open(f"{name}.npy", "w", force_zip64=True) as member:
      header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
      np.lib.format.write_array_header_2_0(member, header)
      for chunk in chunks:
        chunk = np.ascontiguousarray(chunk)
        if chunk.dtype != dtype or chunk.shape[1:] != tuple(shape[1:]):
          raise ValueError(f"{name}: chunk {chunk.dtype} {chunk.shape} does not fit {dtype} {shape}")
        member.write(chunk.tobytes())
        rows += len(chunk)
    if rows != shape[0]:
      raise ValueError(f"{name}: wrote {rows} rows, declared {shape[0]}")

  def __exit__(self, *exc):
    self._zip.close()
    return self._atomic.__exit__(*exc)
