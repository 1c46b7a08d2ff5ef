"""Paths on a local disk or in a bucket: every file `aligned` reads or writes goes through here.

A workdir, a store, a data root or a results folder may be a local path or a URL that
`etils.epath` knows (`gs://bucket/runs/x` where `gcsfs` is installed, `s3://` with `s3fs`). The
rules for code in `aligned/`:

- Build paths with `as_path` (an `epath.Path`), never `pathlib.Path`; open files with
  `path.open(...)`, never the builtin `open`: `open("gs://b/x")` would write a local folder `gs:`.
- Read arrays with `load_npy` / `load_npz` (through a file object, memory-mapped only on a local
  disk); write them with `aligned.artifacts` (atomic on a disk, one upload in a bucket).
- List folders with `iterdir` / `files_under` (no recursive `**` globs: a bucket has no folders, and
  a recursive glob is thousands of requests).
- A library that opens files itself needs a local path: `require_local` refuses a URL with a message
  saying why (array_record shards of the image cache and of tfds data, read by C++), and
  `local_copy` downloads a small remote file to a temporary one (safetensors, MATLAB files).

Checkpoints go through orbax, which takes `epath` paths: its metadata through `epath`, its arrays
through tensorstore, which has its own `gs://` driver (it needs the host's Google Cloud credentials,
not `fsspec`).
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping

import fsspec
import numpy as np
from etils import epath

from aligned.errors import DataError

Path = epath.Path
PathLike = str | os.PathLike

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def as_path(path: PathLike) -> epath.Path:
  """`path` as an `epath.Path` (local paths behave as `pathlib` ones; `gs://...` goes to its bucket)."""
  return path if isinstance(path, epath.Path) else epath.Path(path)


def absolute(path: PathLike) -> epath.Path:
  """An absolute path (orbax wants one); a URL is one already (`pathlib`'s `absolute` would prefix the cwd)."""
  path = as_path(path)
  return path if not is_local(path) else epath.Path(os.path.abspath(os.fspath(path)))


def url_scheme(path: PathLike) -> str | None:
  """`"gs"` for `gs://b/x`, None for a local path."""
  match = _URL.match(os.fspath(path))
  return match.group(1) if match else None


def is_local(path: PathLike) -> bool:
  return url_scheme(path) is None


def require_local(path: PathLike, why: str) -> pathlib.Path:
  """`path` as a `pathlib.Path`, or a DataError if it is a URL (`why`: what needs a local file)."""
  if not is_local(path):
    raise DataError(
      path, f"must be on a local disk: {why}; copy it to the host's disk (or mount the bucket, e.g. gcsfuse)"
    )
  return pathlib.Path(path)


def check_scheme(path: PathLike, setting: str = "path") -> None:
  """Refuses a URL whose filesystem is not installed, naming the package (`gs://` needs gcsfs)."""
  scheme = url_scheme(path)
  if scheme is None:
    return
  needs = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "az": "adlfs", "hf": "huggingface_hub"}
  if scheme not in needs:
    raise DataError(path, f"{setting}: {scheme}:// is not a filesystem etils.epath knows (gs, s3, az, hf)")
  try:
    fsspec.get_filesystem_class("gcs" if scheme == "gs" else scheme)
  except (ImportError, ValueError) as e:
    raise DataError(
      path, f"{setting}: {scheme}:// needs {needs[scheme]} (pip install {needs[scheme]})"
    ) from e


def check_urls(config: Mapping | None, workdir: PathLike | None = None) -> None:
  """Checks the workdir and every URL-valued string setting of a config with `check_scheme`.

  A command calls it before its job starts, so `gs://...` without gcsfs fails at once, naming the
  setting, not after an hour of extraction.
  """
  if workdir is not None:
    check_scheme(workdir, "workdir")

  def walk(node, prefix):
    if isinstance(node, Mapping):
      for key, value in node.items():
        walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list | tuple):
      for value in node:
        walk(value, prefix)
    elif isinstance(node, str) and _URL.match(node):
      check_scheme(node, prefix)

  walk(config or {}, "")


def open_text(path: PathLike, encoding: str = "utf-8", newline: str | None = None) -> io.TextIOWrapper:
  """A text file for reading, local or in a bucket, with `encoding` and `newline` honoured as by `open`
  (`epath`'s own text mode ignores `newline`, and reads `utf-8-sig` as plain UTF-8 on a bucket)."""
  return io.TextIOWrapper(as_path(path).open("rb"), encoding=encoding, newline=newline)


def load_npy(path: PathLike, mmap: bool = False) -> np.ndarray:
  """A `.npy` array, never unpickled; memory-mapped when asked and the file is on a local disk."""
  path = as_path(path)
  if mmap and is_local(path):
    return np.load(os.fspath(path), mmap_mode="r", allow_pickle=False)
  with path.open("rb") as f:
    return np.load(f, allow_pickle=False)


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
  """Every array of an `.npz`, read whole and never unpickled; the file is closed on return."""
  with as_path(path).open("rb") as f:
    with np.load(f, allow_pickle=False) as npz:
      return {name: npz[name] for name in npz.files}


def files_under(root: PathLike, pattern: str = "*") -> list[epath.Path]:
  """The files below `root` (any depth) whose name matches `pattern`, sorted; no recursive glob."""
  root = as_path(root)
  found, folders = [], [root]
  while folders:
    folder = folders.pop()
    for child in folder.iterdir():
      if child.is_dir():
        folders.append(child)
      elif child.match(pattern):
        found.append(child)
  return sorted(found, key=os.fspath)


def rmtree(path: PathLike) -> None:
  """Deletes a folder and everything in it (nothing if it does not exist)."""
  path = as_path(path)
  if path.exists():
    path.rmtree()


def _umask() -> int:
  mask = os.umask(0)  # the only portable way to read it: set and restore (once, at import)
  os.umask(mask)
  return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[pathlib.Path]:
  """Yields a local temporary file; when the block succeeds its bytes appear as `path`, whole.

  On a disk the temporary file lies beside `path` and is renamed to it. It gets the mode a plain
  `open(path, "w")` would (0666 less the umask), not mkstemp's 0600, so results stay readable by a
  team sharing a workdir. In a bucket it is uploaded in one write, which an object store makes
  visible only when complete. Either way a killed run never leaves a partial file under `path`.
  """
  if not is_local(path):
    path = as_path(path)
    with tempfile.TemporaryDirectory(prefix="aligned-") as folder:
      tmp = pathlib.Path(folder) / path.name
      yield tmp
      path.parent.mkdir(parents=True, exist_ok=True)
      with open(tmp, "rb") as src, path.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 22)
    return
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.fchmod(fd, 0o666 & ~_UMASK)
  os.close(fd)
  try:
    yield pathlib.Path(tmp)
    os.replace(tmp, path)
  finally:
    pathlib.Path(tmp).unlink(missing_ok=True)


def copy_file(source: PathLike, destination: PathLike) -> None:
  """Copies a file across filesystems (disk <-> bucket), atomically at the destination."""
  with atomic_path(destination) as tmp, as_path(source).open("rb") as src, open(tmp, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 22)


@contextlib.contextmanager
def local_copy(path: PathLike) -> Iterator[pathlib.Path]:
  """A local file with `path`'s bytes: `path` itself on a disk, a temporary download otherwise."""
  if is_local(path):
    yield pathlib.Path(path)
    return
  path = as_path(path)
  with tempfile.TemporaryDirectory(prefix="aligned-") as folder:
    local = pathlib.Path(folder) / path.name
    with path.open("rb") as src, open(local, "wb") as out:
      shutil.copyfileobj(src, out, 1 << 22)
    yield local
