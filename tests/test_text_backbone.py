"""The MiniLM sentence encoder against the PyTorch transformers implementation on the real weights."""

import re
import shutil

import numpy as np
import pytest
import transformers
from safetensors.numpy import load_file, save_file

from aligned.backbones import load_text_backbone
from aligned.backbones.text import SentenceEncoder, minilm_checkpoint
from aligned.errors import DataError

# PyTorch is the reference (requirements-dev.txt; its CPU build is on disk for Python 3.11 only)
torch = pytest.importorskip("torch")

TEXTS = [
  "aardvark",
  "hot-water bottle: a stoppered vessel for hot water",
  "a much longer sentence about kitchen tools, dogs and a camera lens " * 3,
  "ice-cream cone",
]


@pytest.fixture(scope="module")
def encoder():
  return load_text_backbone("minilm")


def _torch_reference(texts):
  """The sentence-transformers recipe in PyTorch: BertModel, mean over the mask, L2 norm."""
  checkpoint = minilm_checkpoint()
  tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
  model = transformers.BertModel.from_pretrained(checkpoint).eval()
  batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**batch).last_hidden_state
  mask = batch["attention_mask"][..., None].float()
  pooled = (hidden * mask).sum(1) / mask.sum(1)
  return (pooled / pooled.norm(dim=1, keepdim=True)).numpy()


def test_minilm_matches_pytorch_on_the_real_weights(encoder):
  ours = encoder.encode(TEXTS)
  assert ours.shape == (4, 384)
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
  assert np.abs(ours - _torch_reference(TEXTS)).max() < 1e-4


def test_padding_and_batching_do_not_change_embeddings(encoder):
  together = encoder.encode(TEXTS, batch_size=4)
  alone = np.concatenate([encoder.encode([t]) for t in TEXTS])
  np.testing.assert_allclose(together, alone, atol=1e-5)
  longer = encoder.tokenize(TEXTS[:1], length=64)
  np.testing.assert_allclose(np.asarray(encoder.apply(encoder.params, **longer)), alone[:1], atol=1e-5)


def test_bad_checkpoints_and_inputs(tmp_path, encoder):
  with pytest.raises(DataError, match="missing checkpoint file"):
    SentenceEncoder(tmp_path)
  with pytest.raises(DataError, match="no texts"):
    encoder.encode([])
  with pytest.raises(ValueError, match="unknown text backbone"):
    load_text_backbone("gpt")


def _minilm_copy(folder, edit):
  """The real MiniLM folder with its weights changed by `edit(tensors)` (PyTorch names, safetensors)."""
  folder.mkdir()
  source = minilm_checkpoint()
  for name in ("config.json", "sentence_bert_config.json", *TOKENIZER_FILES):
    shutil.copy(source / name, folder / name)
  tensors = load_file(source / "model.safetensors")
  edit(tensors)
  save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
  return folder


def test_missing_or_unused_weights_are_refused_naming_the_folder_and_tensors(tmp_path):
  # transformers would fill a missing weight with random values, and drop an unused tensor, logging only.
  missing = _minilm_copy(tmp_path / "missing", lambda t: t.pop("encoder.layer.3.attention.self.query.weight"))
  with pytest.raises(
    DataError,
    match=re.escape(f"{missing}/model.safetensors: 1 weights of FlaxBertModel missing ")
    + r".*: encoder\.layer\.3\.attention\.self\.query\.kernel$",
  ):
    SentenceEncoder(missing)
  # a seventh layer that config.json (6 layers) has no place for, and a stray tensor
  extra = {"encoder.layer.6.output.dense.bias": np.zeros(384, np.float32), "stray": np.ones(2, np.float32)}
  unused = _minilm_copy(tmp_path / "unused", lambda t: t.update(extra))
  with pytest.raises(
    DataError,
    match=re.escape(f"{unused}/model.safetensors: 2 tensors not used by FlaxBertModel ")
    + r".*: encoder\.layer\.6\.output\.dense\.bias, stray",
  ):
    SentenceEncoder(unused)
  # the real folder's buffer (embeddings.position_ids, not a weight) is not an unused tensor
  assert "embeddings.position_ids" in load_file(minilm_checkpoint() / "model.safetensors")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def test_tiny_random_bert_matches_pytorch(tmp_path):
  """The same check on random weights of another shape: our loader and pooling, not one checkpoint."""
  torch.manual_seed(0)
  config = transformers.BertConfig(
    vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
  )
  model = transformers.BertModel(config).eval()  # with its pooler: FlaxBertModel has one (unused here)
  model.save_pretrained(tmp_path, safe_serialization=True)
  for name in TOKENIZER_FILES:
    shutil.copy(minilm_checkpoint() / name, tmp_path / name)
  encoder = SentenceEncoder(tmp_path, max_length=64)
  ours = encoder.encode(TEXTS)
  tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
  batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**batch).last_hidden_state
  mask = batch["attention_mask"][..., None].float()
  pooled = (hidden * mask).sum(1) / mask.sum(1)
  reference = (pooled / pooled.norm(dim=1, keepdim=True)).numpy()
  assert ours.shape == (4, 32) and np.abs(ours - reference).max() < 1e-4


def test_a_checkpoint_in_a_bucket_is_refused_naming_it(bucket):
  with pytest.raises(
    DataError, match=r"gs://bucket/minilm: must be on a local disk: transformers reads model"
  ):
    load_text_backbone("minilm", "gs://bucket/minilm")
  assert not (bucket / "minilm").exists()
