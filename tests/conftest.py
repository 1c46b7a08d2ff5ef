"""Shared test set-up: the human data folder and a small helper for DataError checks."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests read the real human data from ../shared/data unless ALIGNED_DATA points elsewhere.
if not os.environ.get("ALIGNED_DATA"):
  os.environ["ALIGNED_DATA"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
  path = pathlib.Path(os.environ["ALIGNED_DATA"])
  if not (path / "things" / "unique_id.txt").exists():
    raise RuntimeError(f"human data not found in ALIGNED_DATA={path}")
  return path
