""".npz files array by array, chunk by chunk, so memory stays bounded at any size (both directions).

Writing. `np.savez` needs every array whole in memory (10 M AligNet triplets hold 3 x 10 M file names).
`NpzStreamWriter` writes each array's `.npy` header first (its shape and dtype are known in advance),
then its rows chunk by chunk into the zip member. The result is an ordinary `.npz` that `np.load`
reads, and it appears under its real name only when complete (written to a temporary name, then
renamed).

Reading. `np.load` of an `.npz` reads a member whole (`mmap_mode` does not apply inside a zip).
`NpzReader` parses a member's `.npy` header without reading its data, so the dtype is known (an object
array is refused before any byte of it is read: it would need pickle), and then yields its rows chunk
by chunk from the member's stream, stored or deflated alike. A Fortran-ordered array cannot be cut
into rows from a stream and is read whole (`np.save` writes one only for a transposed array).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator

import numpy as np

from aligned.errors import DataError
from aligned.paths import as_path, atomic_path


class NpzStreamWriter:
  """Example:
  with NpzStreamWriter("out.npz") as npz:
    npz.add("x", shape=(n, 3), dtype=np.float32, chunks=(chunk for chunk in ...))
  """

  def __init__(self, path: str | os.PathLike, compress: bool = False):
    self._atomic = atomic_path(path)
    self._compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED

  def __enter__(self):
    self._tmp = self._atomic.__enter__()  # a local temporary file; uploaded or renamed on success
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


_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


class NpzReader:
  """The arrays of an `.npz`, header by header and row chunk by row chunk (never unpickles).

  Example:
  with NpzReader("in.npz") as npz:
    shape, dtype = npz.shape("x"), npz.dtype("x")
    for chunk in npz.chunks("x", rows=1 << 18): ...

  Every problem (not a zip, a member that is not a `.npy`, an object dtype, truncated or corrupt data)
  is a DataError naming the file and the array.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = path
    self._file = None
    try:
      self._file = as_path(path).open("rb")  # a file object: zipfile reads it on a disk or in a bucket
      self._zip = zipfile.ZipFile(self._file)
    except (zipfile.BadZipFile, OSError) as e:
      if self._file is not None:
        self._file.close()
      raise DataError(path, f"not an .npz (zip) file ({e})") from None
    self._members = {m.removesuffix(".npy"): m for m in self._zip.namelist()}
    self._headers = {}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self) -> None:
    self._zip.close()
    self._file.close()

  @property
  def names(self) -> list[str]:
    """Array names, as `np.load(path).files` lists them."""
    return list(self._members)

  def _header(self, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset in the member) of array `name`."""
    if name not in self._headers:
      if name not in self._members:
        raise DataError(self.path, f"no array {name!r}; found {self.names}")
      try:
        with self._zip.open(self._members[name]) as member:
          version = np.lib.format.read_magic(member)
          if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(member)
          elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(member)
          else:
            raise ValueError(f".npy format version {version} is not read here")
          offset = member.tell()
      except _READ_ERRORS as e:
        raise DataError(self.path, f"array {name!r} is not a readable .npy ({e})") from None
      shape, fortran, dtype = header
      if dtype.hasobject:
        raise DataError(
          self.path,
          f"array {name!r} has dtype {dtype} (Python objects): reading it would need pickle, refused",
        )
      self._headers[name] = (tuple(shape), bool(fortran), dtype, offset)
    return self._headers[name]

  def shape(self, name: str) -> tuple[int, ...]:
    return self._header(name)[0]

  def dtype(self, name: str) -> np.dtype:
    return self._header(name)[2]

  def chunks(self, name: str, rows: int) -> Iterator[np.ndarray]:
    """Yields array `name` in consecutive blocks of `rows` rows (the last may be shorter)."""
    shape, fortran, dtype, offset = self._header(name)
    if rows < 1:
      raise ValueError(f"rows must be >= 1, got {rows}")
    try:
      with self._zip.open(self._members[name]) as member:
        if fortran or not shape or dtype.itemsize == 0:
          array = np.lib.format.read_array(member, allow_pickle=False)
          if not shape:
            yield array
            return
          for start in range(0, shape[0], rows):
            yield np.ascontiguousarray(array[start : start + rows])
          return
        member.read(offset)
        row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        for start in range(0, shape[0], rows):
          n = min(rows, shape[0] - start)
          data = member.read(n * row_bytes)
          if len(data) != n * row_bytes:
            raise EOFError(f"rows {start}-{start + n - 1}: {len(data)} of {n * row_bytes} bytes")
          yield np.frombuffer(data, dtype).reshape((n, *shape[1:]))
    except _READ_ERRORS as e:
      if isinstance(e, DataError):
        raise
      raise DataError(self.path, f"array {name!r}: truncated or corrupt data ({e})") from None
