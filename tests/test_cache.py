"""The data folder and the downloader (offline: file:// and installed-wheel origins)."""

import hashlib

import pytest

from aligned.data import cache
from aligned.errors import DataError
from tests.conftest import SHARED_DATA


def test_manifest_matches_the_shared_one_and_the_shared_files_verify(data_dir):
  # the data's two manifests, top level and WordNet's, in one
  wordnet = (SHARED_DATA / "wordnet" / "MANIFEST.tsv").read_text().split("\n", 1)[1]
  assert cache.MANIFEST.read_text() == (SHARED_DATA / "MANIFEST.tsv").read_text() + wordnet
  entries = cache.read_manifest()
  assert len(entries) == 25
  assert [e.path for e in entries if not cache.fetchable(e.origin)] == [
    "wordnet/data.noun",
    "wordnet/index.noun",
    "wordnet/lexnames",
    "wordnet/LICENSE",
  ]
  status = cache.verify(SHARED_DATA)
  assert set(status.values()) == {"ok"}, status


def _entry(path, content: bytes, origin: str) -> cache.ManifestEntry:
  return cache.ManifestEntry(path, len(content), hashlib.sha256(content).hexdigest(), origin, "test")


def test_download_fetches_checks_and_skips(tmp_path):
  source = tmp_path / "origin.txt"
  source.write_bytes(b"1 2 3\n")
  entry = _entry("things/x.txt", b"1 2 3\n", source.as_uri())
  root = tmp_path / "cache"
  assert cache.download(root, [entry], log=lambda _: None) == ["things/x.txt"]
  assert (root / "things" / "x.txt").read_bytes() == b"1 2 3\n"
  assert cache.download(root, [entry], log=lambda _: None) == []  # present and correct: skipped
  (root / "things" / "x.txt").write_bytes(b"corrupt")
  assert cache.verify(root, [entry]) == {"things/x.txt": "sha256 mismatch"}
  assert cache.download(root, [entry], log=lambda _: None) == ["things/x.txt"]  # repaired


def test_a_wrong_checksum_leaves_nothing_behind(tmp_path):
  source = tmp_path / "origin.txt"
  source.write_bytes(b"tampered")
  entry = _entry("things/x.txt", b"original", source.as_uri())
  with pytest.raises(DataError, match="sha256"):
    cache.download(tmp_path / "cache", [entry], log=lambda _: None)
  assert list((tmp_path / "cache" / "things").iterdir()) == []


def test_wheel_origins_come_from_the_installed_package(tmp_path):
  entries = [e for e in cache.read_manifest() if e.origin.startswith("wheel ")]
  assert {e.path for e in entries} == {"imagenet2012/labels.txt", "imagenet2012/validation_labels.txt"}
  assert sorted(cache.download(tmp_path, entries, log=lambda _: None)) == sorted(e.path for e in entries)
  assert set(cache.verify(tmp_path, entries).values()) == {"ok"}


def test_data_path_explains_a_missing_file(monkeypatch, tmp_path):
  monkeypatch.setenv("ALIGNED_DATA", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="ALIGNED_DATA"):
    cache.data_path("things/unique_id.txt")
  monkeypatch.delenv("ALIGNED_DATA")
  assert cache.data_dir() == cache.DEFAULT_CACHE.expanduser()


def test_manifest_rows_are_checked(tmp_path):
  bad = tmp_path / "m.tsv"
  bad.write_text("path\tbytes\tsha256\torigin\tlicense\n../escape\t1\t" + "0" * 64 + "\tx\ty\n")
  with pytest.raises(DataError, match="inside the data folder") as e:
    cache.read_manifest(bad)
  assert e.value.row == 2


def test_a_package_member_origin_is_left_for_the_user_and_reported(tmp_path):
  entry = _entry("wordnet/data.noun", b"x", "WordNet 3.0 (Princeton WNdb-3.0, dict/data.noun)")
  logs = []
  assert cache.download(tmp_path, [entry], log=logs.append) == []
  assert "by hand" in logs[0] and "wordnet/data.noun" in logs[0]
  assert cache.verify(tmp_path, [entry]) == {"wordnet/data.noun": "missing"}


def test_the_data_folder_may_be_a_bucket(bucket, tmp_path, monkeypatch):
  source = tmp_path / "origin.txt"
  source.write_bytes(b"1 2 3\n")
  entry = _entry("things/x.txt", b"1 2 3\n", source.as_uri())
  monkeypatch.setenv("ALIGNED_DATA", "gs://bucket/data")
  assert str(cache.data_dir()) == "gs://bucket/data"
  with pytest.raises(FileNotFoundError, match="gs://bucket/data/things/x.txt not found"):
    cache.data_path("things/x.txt")
  assert cache.download(entries=[entry], log=lambda _: None) == ["things/x.txt"]
  assert (bucket / "data" / "things" / "x.txt").read_bytes() == b"1 2 3\n"
  assert cache.data_path("things/x.txt") == bucket / "data" / "things" / "x.txt"
  assert cache.verify(entries=[entry]) == {"things/x.txt": "ok"}
  assert cache.download(entries=[entry], log=lambda _: None) == []  # present and correct: skipped
  tampered = _entry("things/y.txt", b"original", source.as_uri())
  with pytest.raises(DataError, match="sha256"):
    cache.download(entries=[tampered], log=lambda _: None)
  assert not (bucket / "data" / "things" / "y.txt").exists()
  assert cache.verify(entries=[tampered]) == {"things/y.txt": "missing"}
  monkeypatch.setenv("ALIGNED_DATA", "ftp://host/data")
  with pytest.raises(DataError, match="ALIGNED_DATA: ftp:// is not a filesystem"):
    cache.data_dir()
