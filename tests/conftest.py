"""Shared test set-up: the human data folder, a tiny ViT on disk, and an in-memory `gs://` bucket."""

import contextlib
import io
import os
import pathlib

import fsspec
import pytest
import transformers
from etils import epath
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem
from safetensors.numpy import save_file

from aligned.configs.common import tiny_vit
from aligned.export import torch_state_dict

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests read the real human data from $ALIGNED_DATA; without it, from a `shared/data` folder beside the
# checkout (how the development and CI machines hold it).
if not os.environ.get("ALIGNED_DATA"):
  os.environ["ALIGNED_DATA"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
  path = pathlib.Path(os.environ["ALIGNED_DATA"])
  if not (path / "things" / "unique_id.txt").exists():
    raise RuntimeError(f"human data not found in ALIGNED_DATA={path}")
  return path


# The tiny random ViT of the smoke config, on 32 x 32 images in 8 x 8 patches (seconds on CPU).
TINY_VISION = tiny_vit(image_size=32, patch_size=8)


def save_tiny_vit(folder: pathlib.Path, **overrides) -> pathlib.Path:
  """A random-weight ViT in the transformers layout (config.json + model.safetensors, PyTorch names).

  Written by PyTorch where it is installed (test-only, Python 3.11: requirements-dev.txt); without it
  (Python 3.12), from a Flax ViT through the export's Flax -> PyTorch renaming, whose round trip
  through transformers tests/test_export.py checks. Either way a real-layout checkpoint, other weights.
  """
  config = transformers.ViTConfig(**{**TINY_VISION, **overrides})
  try:
    import torch
  except ImportError:
    folder.mkdir(parents=True, exist_ok=True)
    model = transformers.FlaxViTModel(config, seed=0, add_pooling_layer=True)
    save_file(torch_state_dict(model.params), folder / "model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(folder)
    return folder
  torch.manual_seed(0)
  transformers.ViTModel(config).eval().save_pretrained(folder, safe_serialization=True)
  return folder


class MemoryBucket(MemoryFileSystem):
  """`gs://` served from memory: fsspec's in-memory filesystem under the gs protocol.

  Strict where a bucket is: no appending to an object; each reader has its own position. `open("gs://...")`, `pathlib` or `np.load` on a
  bucket path would write a local folder `gs:` or fail, which the `bucket` fixture checks.
  """

  protocol = ("gs", "gcs")
  root_marker = ""
  store: dict = {}
  pseudo_dirs: list = [""]

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    for prefix in ("gs://", "gcs://"):
      path = path.removeprefix(prefix)
    return path.rstrip("/")

  def _open(self, path, mode="rb", **kwargs):
    if "a" in mode:
      raise OSError(f"{path}: objects in a bucket cannot be appended to")
    if mode == "rb" and self._strip_protocol(path) in self.store:  # each reader its own position
      return io.BytesIO(self.store[self._strip_protocol(path)].getvalue())
    return super()._open(path, mode=mode, **kwargs)


@contextlib.contextmanager
def memory_bucket(name: str):
  """`gs://NAME` in memory while the block runs; afterwards its objects are gone, and no local folder
  `gs:` may have appeared in the current folder (a path that went through pathlib or `open`)."""
  for protocol in MemoryBucket.protocol:
    fsspec.register_implementation(protocol, MemoryBucket, clobber=True)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  try:
    yield epath.Path(f"gs://{name}")
  finally:
    for key in [k for k in MemoryBucket.store if k.split("/")[0] == name]:
      del MemoryBucket.store[key]
  assert not pathlib.Path("gs:").exists(), "bucket paths were written to the local disk (./gs:)"


@pytest.fixture
def bucket(tmp_path, monkeypatch) -> epath.Path:
  """An empty `gs://bucket` in memory; the test runs in an empty folder that must stay free of `gs:`."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  with memory_bucket("bucket") as root:
    yield root
