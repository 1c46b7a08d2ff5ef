"""Extraction into an embedding store: killed and rerun, it ends with exactly the uninterrupted store."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from aligned.backbones import load_text_backbone
from aligned.data.items import things_texts
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError
from tests.conftest import REPO


def _command(workdir, *flags):
  return [
    sys.executable,
    "-m",
    "experiments.extract",
    "--config=configs/extract.py:things_minilm_word",
    "--config.shard_size=128",
    f"--workdir={workdir}",
    *flags,
  ]


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_complete_store(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  process = subprocess.Popen(
    _command(tmp_path), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  store = EmbeddingStore(tmp_path / "store")
  deadline = time.time() + 240
  while time.time() < deadline and process.poll() is None:
    if (tmp_path / "store" / "metadata.json").exists() and len(
      list((tmp_path / "store").glob("shard_*.json"))
    ) >= 2:
      break
    time.sleep(0.05)
  assert process.poll() is None, "extraction finished before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  complete = 15 - len(store.missing_shards())
  assert 2 <= complete < 15  # 1,854 items in shards of 128
  assert not (tmp_path / "embeddings.npy").exists()  # no output that looks complete

  done = subprocess.run(_command(tmp_path), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["shards_written"] == 15 - complete  # resumed, not redone
  ids, embeddings = store.read()
  concept_ids, texts = things_texts("{word}")
  assert list(ids) == list(concept_ids)  # each item once, in order
  reference = load_text_backbone("minilm").encode(texts)
  np.testing.assert_allclose(embeddings, reference, atol=1e-5)
  np.testing.assert_array_equal(np.load(tmp_path / "embeddings.npy"), embeddings)
  assert not list((tmp_path / "store").glob(".*"))  # no temporaries left by the killed run

  # A corrupt shard is detected on read; a rerun with other settings is refused.
  shard = tmp_path / "store" / "shard_00003.npy"
  raw = bytearray(shard.read_bytes())
  raw[-1] ^= 0xFF
  shard.write_bytes(bytes(raw))
  with pytest.raises(DataError, match="corrupt"):
    store.read()
  other = subprocess.run(
    _command(tmp_path, "--config.template={word}!"),
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert other.returncode == 2 and 'other settings or inputs: template "{word}" -> "{word}!"' in other.stderr
  # --config.restart=True deletes the store and starts over with the new settings
  again = subprocess.run(
    _command(tmp_path, "--config.template={word}!", "--config.restart=True"),
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert again.returncode == 0, again.stderr[-2000:]
  assert json.loads((tmp_path / "provenance.json").read_text())["config"]["template"] == "{word}!"
  assert EmbeddingStore(tmp_path / "store").read()[0].tolist() == ids.tolist()


@pytest.mark.slow
def test_eight_simulated_devices_give_the_same_text_embeddings(tmp_path):
  flags = "--xla_force_host_platform_device_count=8 --xla_cpu_multi_thread_eigen=false"
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
  # 100 per batch: not a multiple of 8, so the padding path runs too.
  done = subprocess.run(
    _command(tmp_path, "--config.batch_size=100"),
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  _, texts = things_texts("{word}")
  reference = load_text_backbone("minilm").encode(texts)
  np.testing.assert_allclose(np.load(tmp_path / "embeddings.npy"), reference, atol=1e-5)
