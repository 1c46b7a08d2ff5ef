"""Models out: a trained student exported as a transformers folder loads in transformers' PyTorch and
Flax classes with every weight its own, and the loaded model + the exported head compute the student's
pooled and head outputs; what cannot be exported is refused and leaves no folder.

Tolerances: float32 throughout; transformers' Flax classes within 1e-5 of the student (the same Flax
computations), its PyTorch classes within 1e-4 (other kernels). The measured differences are printed
(`pytest -s`)."""

import json
import logging
import os
import subprocess
import sys
import types

import cv2
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import transformers
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from aligned import export
from aligned.backbones import build_backbone
from aligned.backbones.preprocessing import NORMALIZATIONS, preprocess
from aligned.backbones.siglip import SiglipConfig, params_from_hf
from aligned.backbones.student import Student, StudentEncoder
from aligned.backbones.text import minilm_checkpoint
from aligned.configs import export as export_config
from aligned.configs import finetune as finetune_config
from aligned.errors import DataError
from aligned.student.train import finetune
from tests.conftest import REPO

try:  # PyTorch is test-only (requirements-dev.txt, Python 3.11): without it only its side is skipped
  import torch
except ImportError:
  torch = None

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
IMAGE = dict(**TINY, image_size=16, patch_size=4)
HEAD_DIM = 8
TEXTS = ["aardvark", "a small wooden boat", "the moon"]


def _config(run, **overrides) -> ml_collections.ConfigDict:
  config = export_config.get_config()
  config.update(run=str(run), **overrides)
  return config


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
  """The smoke student (the tiny random ViT on 16 x 16 images) after 2 steps, as
  tests/test_student_backbone.py builds one (without its pretrained folder: the export reads the run's
  backbone.json either way)."""
  workdir = tmp_path_factory.mktemp("vit_run")
  config = finetune_config.get_config("smoke")
  config.steps, config.log_every, config.eval.every, config.checkpointing.every = 2, 2, 0, 2
  config.optimizer.warmup_steps, config.head_dim = 1, HEAD_DIM
  config.data.synthetic.update(n_train=64, n_val=32)
  assert finetune(config, workdir)["status"] == "completed"
  return workdir


@pytest.fixture(scope="module")
def vit_encoder(vit_run):
  return StudentEncoder(vit_run, "pooled")


def _random(shapes, seed=0):
  """Random float32 arrays of these shapes: no bias zero, no LayerNorm scale one (so a swapped or
  transposed tensor shows)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    value = 0.1 * rng.standard_normal(leaf.shape).astype(np.float32)
    return value + 1 if getattr(path[-1], "key", None) == "scale" else value

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _write_run(workdir, name, checkpoint="", random_config=None, normalization="none"):
  """A run folder as the student stage leaves one (config.json, backbone.json for images, an orbax
  checkpoint) with random parameters: no bias is zero, no LayerNorm scale is one."""
  config = finetune_config.get_config("smoke")
  config.backbone, config.checkpoint, config.head_dim = name, checkpoint, HEAD_DIM
  config.random_backbone = ml_collections.ConfigDict(random_config or {})
  config.data.update(preprocessing="backbone", normalization=normalization)
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps(config.to_dict()))
  if random_config:  # an image run records its architecture
    (workdir / "backbone.json").write_text(json.dumps({"backbone": name, "architecture": random_config}))

  def init():
    backbone, kind = build_backbone(name, checkpoint, random_config)
    return Student(backbone, kind, HEAD_DIM).init(jax.random.key(0))

  shapes = init() if checkpoint else jax.eval_shape(init)  # image runs: no random init compiled
  params = _random(shapes)
  with ocp.CheckpointManager(workdir / "checkpoints") as manager:
    manager.save(3, args=ocp.args.StandardSave({"params": params, "step": np.int32(3)}))
  return workdir


def _tiny_bert(folder):
  """A random 2-block BERT with MiniLM's tokenizer (a `minilm` checkpoint folder of seconds)."""
  pytest.importorskip("torch")
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=30522, max_position_embeddings=64, **TINY)
  transformers.BertModel(config).save_pretrained(folder, safe_serialization=True)
  transformers.AutoTokenizer.from_pretrained(minilm_checkpoint()).save_pretrained(folder)
  (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
  return folder


@pytest.fixture(scope="module", params=["vit", "siglip", "minilm"])
def exported(request, tmp_path_factory, vit_run, vit_encoder):
  """(backbone, run, export folder, the run read back as `StudentEncoder(run, "pooled")`) per backbone."""
  name, root = request.param, tmp_path_factory.mktemp(request.param)
  if name == "vit":
    run = vit_run
  elif name == "minilm":
    run = _write_run(root / "run", name, checkpoint=str(_tiny_bert(root / "bert")))
  else:
    run = _write_run(root / "run", name, random_config=IMAGE, normalization="siglip")
  results = export.export_student(_config(run), root / "export")
  assert results["export"] == str(root / "export") and results["backbone"] == name
  return name, run, root / "export", vit_encoder if name == "vit" else StudentEncoder(run, "pooled")


class _Warnings(logging.Handler):
  """transformers' Flax loader only logs weights it fills with random values or leaves unused."""

  def __init__(self):
    super().__init__()
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def _load_torch(name, folder):
  model, info = getattr(transformers, export.FORMATS[name].model).from_pretrained(
    folder, output_loading_info=True
  )
  assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
  return model.eval()


def _load_flax(name, folder):
  logger, handler = logging.getLogger("transformers.modeling_flax_utils"), _Warnings()
  logger.addHandler(handler)
  try:
    with pytest.MonkeyPatch.context() as patch:  # as where torch is not installed
      patch.setattr(transformers.utils.import_utils, "_torch_available", False)
      patch.setitem(sys.modules, "torch", None)  # `import torch` fails
      model = getattr(transformers, export.FORMATS[name].flax_model).from_pretrained(folder, from_pt=True)
  finally:
    logger.removeHandler(handler)
  assert not [m for m in handler.messages if "newly initialized" in m or "were not used" in m]
  return model


def _pooled(name, outputs, attention_mask=None):
  """The pooled output as aligned_student.json writes it down (numpy)."""
  if name == "minilm":
    m = np.asarray(attention_mask, np.float32)[..., None]
    p = (np.asarray(outputs.last_hidden_state) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
  if name == "vit":
    return np.asarray(outputs.last_hidden_state[:, 0])
  return np.asarray(outputs.pooler_output)


def _head(folder, pooled):
  head = load_file(folder / "triplet_head.safetensors")
  return pooled @ head["weight"].T + head["bias"]


def _images(record) -> np.ndarray:
  """The README's preprocessing: cv2 INTER_CUBIC resize, / 255, (x - mean) / std -> NHWC float32."""
  rng = np.random.default_rng(0)
  size, mean, std = record["image_size"], record["normalization"]["mean"], record["normalization"]["std"]
  raw = [rng.integers(0, 256, size=(int(rng.integers(12, 40)), 24, 3), dtype=np.uint8) for _ in range(4)]
  resized = np.stack([cv2.resize(x, (size, size), interpolation=cv2.INTER_CUBIC) for x in raw])
  images = ((resized / 255.0 - np.asarray(mean)) / np.asarray(std)).astype(np.float32)
  ours = np.stack([preprocess(x, size, record["normalization"]["name"]) for x in raw])
  assert np.abs(images - ours).max() <= 1.01 / 255 / min(std)  # within one grey level of the project's
  return ours


def test_the_export_loads_in_transformers_and_computes_the_students_outputs(exported):
  """The README's recipe: transformers' model + the pooled output aligned_student.json names + the head
  of triplet_head.safetensors; against StudentEncoder(run, "pooled") and the head the run applies."""
  name, _, folder, encoder = exported  # encoder.student.embed is what output="head" applies
  record = json.loads((folder / "aligned_student.json").read_text())
  assert record["source"]["step"] == encoder.step and record["head_dim"] == HEAD_DIM
  assert record["pooled"] == export.FORMATS[name].pooled
  if name == "minilm":
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    tokens = dict(
      tokenizer(TEXTS, truncation=True, max_length=record["max_length"], padding=True, return_tensors="np")
    )
    want_pooled = encoder.encode(TEXTS)
    want_head = np.asarray(jax.jit(encoder.student.embed)(encoder.params, encoder.tokenize(TEXTS)))
    torch_inputs = {k: torch.from_numpy(v) for k, v in tokens.items()} if torch else None
    flax_inputs = tokens
  else:
    assert record["image_size"] == 16 and record["normalization"]["name"] == encoder.normalization
    images = _images(record)
    want_pooled = np.asarray(encoder.apply(encoder.params, images))
    want_head = np.asarray(jax.jit(encoder.student.embed)(encoder.params, {"image": images}))
    nchw = images.transpose(0, 3, 1, 2)
    torch_inputs = {"pixel_values": torch.from_numpy(nchw)} if torch else None
    flax_inputs = {"pixel_values": nchw}
  errors = {}
  if torch is not None:
    with torch.no_grad():
      outputs = _load_torch(name, folder)(**torch_inputs)
    pooled = _pooled(name, outputs, tokens["attention_mask"] if name == "minilm" else None)
    errors["torch pooled"] = np.abs(pooled - want_pooled).max()
    errors["torch head"] = np.abs(_head(folder, pooled) - want_head).max()
  if export.FORMATS[name].flax_model:
    outputs = _load_flax(name, folder)(**flax_inputs)
    pooled = _pooled(name, outputs, tokens["attention_mask"] if name == "minilm" else None)
    errors["flax pooled"] = np.abs(pooled - want_pooled).max()
    errors["flax head"] = np.abs(_head(folder, pooled) - want_head).max()
  if not errors:
    pytest.skip("transformers has no Flax SigLIP, and PyTorch is not installed")
  print(name, {k: f"{v:.1e}" for k, v in errors.items()})
  for key, error in errors.items():
    assert error < (1e-4 if key.startswith("torch") else 1e-5), (key, error)


def test_the_export_is_the_run_and_says_what_it_is(exported):
  name, run, folder, encoder = exported
  head = load_file(folder / "triplet_head.safetensors")
  np.testing.assert_array_equal(head["weight"], encoder.params["head"]["kernel"].T)
  np.testing.assert_array_equal(head["bias"], encoder.params["head"]["bias"])
  for file in ("model.safetensors", "triplet_head.safetensors"):
    with safe_open(folder / file, "np") as f:
      assert f.metadata() == {"format": "pt"}
  record = json.loads((folder / "aligned_student.json").read_text())
  assert record["source"]["run"] == str(run.absolute()) and record["source"]["run_config"] == encoder.config
  assert record["source"]["checkpoint_sha256"] and all(
    len(v) == 64 for v in record["source"]["checkpoint_sha256"].values()
  )
  umask = os.umask(0)
  os.umask(umask)
  assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o666 & ~umask}  # not mkstemp's 0600
  assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
  config = json.loads((folder / "config.json").read_text())
  assert config["architectures"] == [export.FORMATS[name].model]
  if name == "siglip":  # our loader's mapping inverted exactly: params -> export -> params_from_hf
    back = params_from_hf(
      load_file(folder / "model.safetensors"), SiglipConfig.from_json(folder / "config.json")
    )
    assert jax.tree.structure(back) == jax.tree.structure(encoder.params["backbone"])
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(encoder.params["backbone"]), strict=True):
      np.testing.assert_array_equal(np.asarray(a), b)
  if encoder.kind == "image":  # transformers' image processor: the run's size and normalisation
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    assert processor.size == {"height": 16, "width": 16}
    resized = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    pixels = processor(list(resized), do_resize=False, return_tensors="np")["pixel_values"]
    expected = preprocess(resized[0], 16, encoder.normalization)
    np.testing.assert_allclose(pixels[0].transpose(1, 2, 0), expected, atol=1e-6)
    mean, std = NORMALIZATIONS[encoder.normalization]
    assert record["normalization"] == {"name": encoder.normalization, "mean": list(mean), "std": list(std)}


def test_what_cannot_be_exported_is_refused_and_leaves_no_folder(tmp_path, vit_run, monkeypatch):
  out = tmp_path / "out"
  with pytest.raises(DataError, match="not a student run"):
    export.export_student(_config(tmp_path / "nothing"), out)
  with pytest.raises(DataError, match="config.run"):
    export.export_student(_config(""), out)
  with pytest.raises(DataError, match="holds the run"):
    export.export_student(_config(vit_run), vit_run.parent)
  # a checkpoint that fails the project's check: the run's config says head 48, the checkpoint has 8
  other = tmp_path / "other"
  other.mkdir()
  (other / "checkpoints").symlink_to(vit_run / "checkpoints")
  (other / "backbone.json").write_text((vit_run / "backbone.json").read_text())
  config = json.loads((vit_run / "config.json").read_text())
  (other / "config.json").write_text(json.dumps({**config, "head_dim": 48}))
  with pytest.raises(DataError, match=r"head/bias has shape \(8,\), the architecture \(48,\)"):
    export.export_student(_config(other), out)
  monkeypatch.delitem(export.FORMATS, "vit")  # a backbone the export does not know
  with pytest.raises(DataError, match="config.json: backbone 'vit' cannot be exported"):
    export.export_student(_config(vit_run), out)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # no export, no temporaries


def test_an_existing_folder_is_replaced_only_when_it_is_an_export_and_overwrite_is_set(
  tmp_path, vit_run, vit_encoder, monkeypatch
):
  """What happens to the folder (the run is read once: these exports differ only in their folder)."""
  monkeypatch.setattr(export, "StudentEncoder", lambda run, output, step: vit_encoder)
  out = tmp_path / "out"
  out.mkdir()  # an empty folder is used
  export.export_student(_config(vit_run), out)
  (out / "mine.txt").write_text("an earlier export's extra file")
  with pytest.raises(DataError, match="exists and is not empty; set config.overwrite"):
    export.export_student(_config(vit_run), out)

  def full_disk(tensors, path, metadata=None):  # a write that fails half way
    raise OSError(f"no space left for {path.name}")

  with monkeypatch.context() as patch:
    patch.setattr(export, "save_file", full_disk)
    with pytest.raises(OSError, match="no space left for model.safetensors"):
      export.export_student(_config(vit_run, overwrite=True), out)
  assert (out / "mine.txt").exists() and (out / "aligned_student.json").exists()  # the earlier export, whole
  results = export.export_student(_config(vit_run, overwrite=True), out)
  assert "mine.txt" not in results["files"] and not (out / "mine.txt").exists()
  assert f"to {out}" in export.format_results(results)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  (elsewhere / "notes.txt").write_text("not an export")
  with pytest.raises(DataError, match="replaces only an earlier export"):
    export.export_student(_config(vit_run, overwrite=True), elsewhere)
  assert (elsewhere / "notes.txt").exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "out"]  # no temporaries


@pytest.mark.parametrize("name", ["clip", "dinov2"])
def test_clip_and_dinov2_exports_load_in_pytorch_and_compute_the_flax_models_outputs(name, tmp_path):
  """The other transformers backbones, their model files as the export writes them from random Flax
  parameters: PyTorch loads every tensor (none missing, none unexpected) and computes the same pooled
  output (the run around them is the ViT's, tested above)."""
  pytest.importorskip("torch")
  config_class = {"clip": "CLIPVisionConfig", "dinov2": "Dinov2Config"}[name]
  config = getattr(transformers, config_class)(**{k: v for k, v in IMAGE.items() if k != "intermediate_size"})
  flax_model = getattr(transformers, export.FORMATS[name].flax_model)(config, _do_init=False)
  params = _random(flax_model.params_shape_tree)
  save_file(export.torch_state_dict(params), tmp_path / "model.safetensors", metadata={"format": "pt"})
  backbone = types.SimpleNamespace(config=config)
  (tmp_path / "config.json").write_text(json.dumps(export.transformers_config(name, backbone)))
  images = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
  with torch.no_grad():
    want = _load_torch(name, tmp_path)(pixel_values=torch.from_numpy(images)).pooler_output.numpy()
  pooled = np.asarray(flax_model(images, params=params).pooler_output)
  print(name, f"torch vs flax pooled {np.abs(pooled - want).max():.1e}")
  assert np.abs(pooled - want).max() < 1e-4


@pytest.mark.slow
def test_the_command_exports_a_run_and_refuses_to_write_over_it(tmp_path, vit_run):
  command = [sys.executable, "-m", "experiments.export", "--config=export", f"--config.run={vit_run}"]
  command.append(f"--workdir={tmp_path / 'out'}")
  env = dict(os.environ, JAX_PLATFORMS="cpu")

  def export():
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)

  done = export()
  assert done.returncode == 0, done.stderr
  assert f"exported {vit_run} step 2 (vit" in done.stdout and "transformers.ViTModel" in done.stdout
  assert json.loads((tmp_path / "out" / "aligned_student.json").read_text())["source"]["step"] == 2
  again = export()
  assert again.returncode == 2 and "exists and is not empty" in again.stderr


def test_an_export_into_a_bucket_is_the_export_on_disk(tmp_path, vit_run, vit_encoder, monkeypatch, bucket):
  """A run on disk exported into `gs://` (conftest's in-memory bucket): the files of the export on disk,
  byte for byte; aligned_student.json is uploaded last under a marker, so a failed upload leaves a
  folder that is not an export, which an overwrite then replaces."""
  monkeypatch.setattr(export, "StudentEncoder", lambda run, output, step: vit_encoder)
  local = export.export_student(_config(vit_run), tmp_path / "out")
  remote = export.export_student(_config(vit_run), bucket / "out")
  assert remote == {**local, "export": "gs://bucket/out"} and export.INCOMPLETE_FILE not in remote["files"]
  for file in local["files"]:
    assert (bucket / "out" / file).read_bytes() == (tmp_path / "out" / file).read_bytes(), file
  with pytest.raises(DataError, match="exists and is not empty"):
    export.export_student(_config(vit_run), bucket / "out")

  uploaded = []

  def copy_file(source, destination):  # the upload of the third file fails
    if len(uploaded) == 2:
      raise OSError("connection reset")
    uploaded.append(destination.name)
    (bucket / "out" / destination.name).write_bytes(source.read_bytes())

  with monkeypatch.context() as patch:
    patch.setattr(export.paths, "copy_file", copy_file)
    with pytest.raises(OSError, match="connection reset"):
      export.export_student(_config(vit_run, overwrite=True), bucket / "out")
  left = sorted(p.name for p in (bucket / "out").iterdir())
  assert left == sorted([export.INCOMPLETE_FILE, *uploaded]) and export.EXPORT_FILE not in left
  assert export.export_student(_config(vit_run, overwrite=True), bucket / "out")["files"] == local["files"]
  assert (bucket / "out" / export.EXPORT_FILE).read_bytes() == (
    tmp_path / "out" / export.EXPORT_FILE
  ).read_bytes()
