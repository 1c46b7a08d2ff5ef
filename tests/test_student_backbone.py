"""A trained student as a backbone: extraction from a finetune run (head and pooled outputs), its
preprocessing, and refusals of what is not a run of this architecture."""

import json
import os
import pathlib
import shutil

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from aligned.backbones.preprocessing import preprocess
from aligned.backbones.student import StudentEncoder, restore_params
from aligned.configs import extract as extract_config
from aligned.configs import finetune as finetune_config
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError
from aligned.extract import extract
from aligned.student.train import finetune
from tests.conftest import save_tiny_vit


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A student of a pretrained checkpoint folder (the tiny ViT on 16 x 16 images, 16-d head) after 4
  steps of the smoke task; the checkpoint folder is deleted afterwards, as on a machine that only
  has the run."""
  workdir, pretrained = tmp_path_factory.mktemp("student"), tmp_path_factory.mktemp("pretrained")
  config = finetune_config.get_config("smoke")
  config.random_backbone = ml_collections.ConfigDict()
  config.checkpoint = str(save_tiny_vit(pretrained, image_size=16))
  config.steps, config.log_every, config.eval.every, config.checkpointing.every = 4, 2, 4, 4
  config.optimizer.warmup_steps, config.head_dim = 1, 16
  config.data.synthetic.update(n_train=64, n_val=32)
  assert finetune(config, workdir)["status"] == "completed"
  shutil.rmtree(pretrained)
  return workdir


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for i in range(10):
    shape = (int(rng.integers(12, 40)), int(rng.integers(12, 40)), 3)
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(root / f"image_{i:02d}.png")
  return root


def _extract(images, run, workdir, **overrides):
  config = extract_config.get_config("image_folder")
  config.update(root=str(images), student=str(run), batch_size=4, shard_size=8, **overrides)
  return extract(config, workdir)


def _reference(run, images, ids, output):
  """The student's own model on its own preprocessing (16 x 16, [0, 1]), from the raw checkpoint."""
  config = json.loads((run / "config.json").read_text())
  encoder = StudentEncoder(run, output)
  params = restore_params(run)
  batch = np.stack([preprocess(np.asarray(Image.open(images / i).convert("RGB")), 16) for i in ids])
  assert config["data"]["image_size"] == 16
  if output == "head":
    return np.asarray(encoder.student.embed(params, {"image": batch}))
  return np.asarray(encoder.student.features(params["backbone"], {"image": batch}))


@pytest.mark.parametrize("output", ["head", "pooled"])
def test_extraction_from_a_run_is_the_student_on_its_own_inputs(tmp_path, run, images, output):
  results = _extract(images, run, tmp_path, student_output=output)
  ids, embeddings = EmbeddingStore(results["store"]).read()
  assert len(ids) == 10 and embeddings.shape == (10, 16 if output == "head" else 32)
  np.testing.assert_allclose(embeddings, _reference(run, images, ids, output), atol=1e-5)
  metadata = json.loads((tmp_path / "store" / "metadata.json").read_text())
  assert metadata["student"] == {"run": str(run.absolute()), "step": 4, "output": output}
  assert metadata["backbone"] == "student:vit" and metadata["preprocessing"]["size"] == 16


def test_the_checkpoints_weights_are_used_not_the_architectures_random_ones(run):
  assert (run / "backbone.json").exists() and not pathlib.Path(
    json.loads((run / "config.json").read_text())["checkpoint"]
  ).exists()
  encoder = StudentEncoder(run)  # rebuilt from backbone.json: the pretrained folder is gone
  saved = jax.tree.leaves(restore_params(run))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(encoder.params), saved, strict=True))
  fresh = jax.tree.leaves(encoder.backbone.params)  # the random weights the architecture was built with
  assert any(
    not np.array_equal(a, b) for a, b in zip(fresh, jax.tree.leaves(encoder.params["backbone"]), strict=True)
  )


def test_preprocessing_other_than_the_students_is_refused(tmp_path, run, images):
  with pytest.raises(ValueError, match="reads 16"):
    _extract(images, run, tmp_path, image_size=32)
  with pytest.raises(ValueError, match="reads 'none'"):
    _extract(images, run, tmp_path, normalization="imagenet")
  assert not (tmp_path / "store").exists()


def test_what_is_not_a_run_of_this_architecture_is_refused(tmp_path, run):
  with pytest.raises(DataError, match="not a student run"):
    StudentEncoder(tmp_path)
  with pytest.raises(ValueError, match="expected one of"):
    StudentEncoder(run, output="logits")
  with pytest.raises(DataError, match="no checkpoint at step 3"):
    StudentEncoder(run, step=3)
  other = tmp_path / "other"
  other.mkdir()
  (other / "checkpoints").symlink_to(run / "checkpoints")
  config = json.loads((run / "config.json").read_text())
  architecture = json.loads((run / "backbone.json").read_text())
  config["head_dim"] = 48  # the checkpoint's head is 16 wide
  (other / "config.json").write_text(json.dumps(config))
  (other / "backbone.json").write_text(json.dumps(architecture))
  with pytest.raises(DataError, match=r"parameter head/bias has shape \(16,\), the architecture \(48,\)"):
    StudentEncoder(other)
  config["head_dim"], architecture["architecture"]["num_hidden_layers"] = 16, 3  # one block too many
  (other / "config.json").write_text(json.dumps(config))
  (other / "backbone.json").write_text(json.dumps(architecture))
  with pytest.raises(DataError, match="parameters of the architecture are missing"):
    StudentEncoder(other)


def test_a_text_student_embeds_texts_with_its_head(tmp_path):
  """A MiniLM student run (its config and a checkpoint of random head weights) read back as a text
  encoder: `encode` is the student's head on the texts' tokens."""
  import orbax.checkpoint as ocp

  from aligned.backbones import load_text_backbone
  from aligned.backbones.student import Student

  config = finetune_config.get_config("minilm")
  config.head_dim = 8
  (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
  student = Student(load_text_backbone("minilm"), "text", 8)
  params = student.init(jax.random.key(1))
  with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
    manager.save(7, args=ocp.args.StandardSave({"params": params, "step": np.int32(7)}))
  encoder = StudentEncoder(tmp_path)
  texts = ["aardvark", "a small boat", "the moon"]
  tokens = student.backbone.tokenize(texts)
  expected = np.asarray(student.embed(params, tokens))
  np.testing.assert_allclose(encoder.encode(texts, batch_size=2), expected, atol=1e-5)
  assert encoder.step == 7 and encoder.dim == 8
  (tmp_path / "images").mkdir()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "black.png")
  with pytest.raises(ValueError, match="text student; source image_folder holds images"):
    _extract(tmp_path / "images", tmp_path, tmp_path / "out")


def test_a_run_in_a_bucket_trains_the_same_student_and_reads_back(run, bucket, tmp_path):
  """The run fixture's settings with its workdir in a bucket (checkpoints in a local folder of their
  own, `checkpointing.folder`): the same parameters bit for bit, read back through the bucket run."""
  config = ml_collections.ConfigDict(json.loads((run / "config.json").read_text()))
  config.checkpoint = str(save_tiny_vit(tmp_path / "pretrained", image_size=16))
  config.data.root = ""  # the smoke task writes its synthetic files into the (bucket) workdir again
  config.checkpointing.folder = str(tmp_path / "checkpoints")
  workdir = bucket / "student"
  assert finetune(config, workdir)["status"] == "completed"
  for name in ("config.json", "results.json", "metrics.jsonl", "backbone.json", "plots/training.png"):
    assert (workdir / name).exists(), name
  assert (tmp_path / "checkpoints" / "4").is_dir() and not (workdir / "checkpoints").exists()
  ours, reference = restore_params(workdir), restore_params(run)
  assert jax.tree.structure(ours) == jax.tree.structure(reference)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
    np.testing.assert_array_equal(a, b)
  encoder = StudentEncoder(workdir, "pooled")
  assert os.fspath(encoder.checkpoint) == os.fspath(tmp_path / "checkpoints" / "4")
