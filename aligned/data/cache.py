"""Where the human data lives, and a downloader that fills that place from public origins.

The data folder is `$ALIGNED_DATA`, or `~/.cache/aligned/data` when the variable is unset. Its layout
is the one of `manifest.tsv` (beside this file): `things/...`, `levels/...`, `glocal/...`,
`imagenet2012/...`, `wordnet/...` (the WordNet 3.0 noun database, whose origin is a package member:
copy `data.noun`, `index.noun`, `lexnames` and `LICENSE` from WordNet 3.0's `dict/` or Debian's
`wordnet-base` into `wordnet/`; `verify` checks them like every other file). `download()` fetches every file from its origin (a URL at a fixed commit, or a
file inside an installed wheel), checks its sha256 and only then moves it into place, so a folder
never holds a partial or unverified file under a real name.

The data folder may be a bucket (`ALIGNED_DATA=gs://bucket/data`): the readers (`things`, `triplets`,
`levels`, `wordnet`, ...) read through `etils.epath`, and `download` fetches each file to a local
temporary one, checks it and uploads it whole.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import pathlib
import shutil
import urllib.request

from etils import epath

from aligned.artifacts import sha256_of
from aligned.errors import DataError
from aligned.paths import as_path, atomic_path, check_scheme, is_local

MANIFEST = as_path(__file__).with_name("manifest.tsv")
DEFAULT_CACHE = as_path("~/.cache/aligned/data")
_MANIFEST_COLUMNS = ("path", "bytes", "sha256", "origin", "license")


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
  path: str  # relative to the data folder
  size: int
  sha256: str
  origin: str  # a URL, or "wheel PACKAGE==VERSION: path/inside/the/wheel"
  license: str


def data_dir() -> epath.Path:
  """The data folder: $ALIGNED_DATA (a local folder or a bucket URL), else ~/.cache/aligned/data."""
  setting = os.environ.get("ALIGNED_DATA") or DEFAULT_CACHE
  check_scheme(setting, "ALIGNED_DATA")  # before epath, which has no class for an unknown scheme
  path = as_path(setting)
  return path.expanduser() if is_local(path) else path


def data_path(relative: str) -> epath.Path:
  """Path of a file of the data folder; a clear error if it is not there."""
  path = data_dir() / relative
  if not path.exists():
    raise FileNotFoundError(
      f"{path} not found. Set ALIGNED_DATA to a folder holding the human data files "
      f"or fill the cache with `aligned-download-data`."
    )
  return path


def read_manifest(path: str | os.PathLike = MANIFEST) -> list[ManifestEntry]:
  """Reads a tab-separated manifest (header `path bytes sha256 origin license`)."""
  lines = as_path(path).read_text().splitlines()
  if not lines or tuple(lines[0].split("\t")) != _MANIFEST_COLUMNS:
    raise DataError(path, f"header must be the tab-separated columns {_MANIFEST_COLUMNS}", row=1)
  entries = []
  for row, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    fields = line.split("\t")
    if len(fields) != len(_MANIFEST_COLUMNS):
      raise DataError(path, f"expected {len(_MANIFEST_COLUMNS)} tab-separated fields", row=row)
    rel, size, sha, origin, license_ = fields
    if pathlib.PurePosixPath(rel).is_absolute() or ".." in pathlib.PurePosixPath(rel).parts:
      raise DataError(path, f"path {rel!r} must stay inside the data folder", row=row)
    if len(sha) != 64:
      raise DataError(path, f"sha256 {sha!r} is not 64 hex digits", row=row)
    entries.append(ManifestEntry(rel, int(size), sha.lower(), origin, license_))
  return entries


def verify(root: str | os.PathLike | None = None, entries: list[ManifestEntry] | None = None) -> dict:
  """Checks every manifest file under `root`. Returns {path: "ok" | "missing" | "sha256 mismatch"}."""
  root = as_path(root) if root is not None else data_dir()
  status = {}
  for entry in entries if entries is not None else read_manifest():
    path = root / entry.path
    if not path.exists():
      status[entry.path] = "missing"
    else:
      status[entry.path] = "ok" if sha256_of(path) == entry.sha256 else "sha256 mismatch"
  return status


def fetchable(origin: str) -> bool:
  """Whether the downloader can fetch an origin itself (a URL or an installed wheel's file). The
  WordNet files' origin is a package member (Princeton's WNdb-3.0 tarball, Debian's wordnet-base):
  those are placed by hand and verified like the rest."""
  return origin.startswith(("https://", "http://", "file://", "wheel "))


def _fetch(origin: str, destination: pathlib.Path) -> None:
  """Copies one origin to `destination`, a local temporary file (`atomic_path`'s)."""
  if not fetchable(origin):
    raise DataError(origin, "not a URL: copy the file from there into the data folder by hand")
  if origin.startswith("wheel "):
    # "wheel tensorflow-datasets==4.9.10: tensorflow_datasets/datasets/..": a file of an installed wheel.
    requirement, inner = origin[len("wheel ") :].split(": ", 1)
    package, version = requirement.split("==")
    installed = importlib.metadata.version(package)
    if installed != version:
      raise RuntimeError(f"{origin}: installed {package} is {installed}, not {version}")
    located = importlib.metadata.distribution(package).locate_file(inner)
    shutil.copyfile(located, destination)  # local: an installed wheel's file into atomic_path's temporary
    return
  with (
    urllib.request.urlopen(origin, timeout=60) as response,
    open(destination, "wb") as out,  # local: atomic_path's temporary file
  ):
    shutil.copyfileobj(response, out)  # local: into atomic_path's temporary file


def download(
  root: str | os.PathLike | None = None,
  entries: list[ManifestEntry] | None = None,
  log=print,
) -> list[str]:
  """Fetches missing or corrupt manifest files into `root` (default: the data folder).

  Each file is written to a local temporary file, checked against its sha256 and then renamed into
  place (uploaded whole when `root` is a bucket); a mismatch raises and leaves nothing behind. Files already present and correct are skipped, and so
  are files whose origin is not fetchable (logged; `verify` reports them). Returns the relative paths
  fetched.
  """
  root = as_path(root) if root is not None else data_dir()
  fetched = []
  for entry in entries if entries is not None else read_manifest():
    target = root / entry.path
    if target.exists() and sha256_of(target) == entry.sha256:
      continue
    if not fetchable(entry.origin):  # verify() will report it missing
      log(f"not fetched: {entry.path}; copy it into {root} by hand from {entry.origin}")
      continue
    with atomic_path(target) as tmp:  # in place only if the block succeeds: checked, whole
      log(f"fetching {entry.path} ({entry.size:,} bytes)")
      _fetch(entry.origin, tmp)
      got = sha256_of(tmp)
      if got != entry.sha256:
        raise DataError(entry.origin, f"sha256 {got} does not match the manifest's {entry.sha256}")
    fetched.append(entry.path)
  return fetched
