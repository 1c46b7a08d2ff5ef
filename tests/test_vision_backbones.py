"""Image backbones against transformers' PyTorch implementations on the same random weights."""

import numpy as np
import pytest
import transformers
from safetensors.numpy import load_file, save_file

from aligned import paths
from aligned.backbones import load_image_backbone
from aligned.errors import DataError
from tests.conftest import TINY_VISION

# PyTorch is the reference (requirements-dev.txt; its CPU build is on disk for Python 3.11 only)
torch = pytest.importorskip("torch")

TINY = TINY_VISION
MODELS = {
  "vit": (transformers.ViTModel, transformers.ViTConfig(**TINY)),
  "clip": (transformers.CLIPVisionModel, transformers.CLIPVisionConfig(**TINY)),
  "dinov2": (
    transformers.Dinov2Model,
    transformers.Dinov2Config(**{k: v for k, v in TINY.items() if k != "intermediate_size"}),
  ),
  "siglip": (transformers.SiglipVisionModel, transformers.SiglipVisionConfig(**TINY)),
}


def _reference(kind, model, images):
  with torch.no_grad():
    outputs = model(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2))
  pooled = outputs.last_hidden_state[:, 0] if kind == "vit" else outputs.pooler_output
  return pooled.numpy()


@pytest.fixture(scope="module", params=sorted(MODELS))
def tiny(request, tmp_path_factory):
  kind = request.param
  torch.manual_seed(0)
  model_class, config = MODELS[kind]
  model = model_class(config).eval()
  folder = tmp_path_factory.mktemp(kind)
  model.save_pretrained(folder, safe_serialization=True)
  return kind, model, folder


def test_pooled_embeddings_match_pytorch(tiny):
  kind, model, folder = tiny
  encoder = load_image_backbone(kind, str(folder))
  images = np.random.default_rng(0).uniform(size=(3, 32, 32, 3)).astype(np.float32)
  ours = np.asarray(encoder.apply(encoder.params, images))
  assert ours.shape == (3, 32)
  assert np.abs(ours - _reference(kind, model, images)).max() < 1e-4
  # Each image is embedded on its own: batching must not mix images.
  alone = np.asarray(encoder.apply(encoder.params, images[1:2]))
  np.testing.assert_allclose(alone[0], ours[1], atol=1e-5)


def test_per_layer_tokens_match_pytorch(tiny):
  kind, model, folder = tiny
  encoder = load_image_backbone(kind, str(folder))
  images = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  ours = encoder.hidden_states(encoder.params, images)
  with torch.no_grad():
    reference = model(
      pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2), output_hidden_states=True
    ).hidden_states
  assert len(ours) == len(reference) == 3  # embeddings + 2 blocks
  for layer, (a, b) in enumerate(zip(ours, reference, strict=True)):
    assert np.abs(np.asarray(a) - b.numpy()).max() < 1e-4, f"layer {layer}"


def test_mismatched_checkpoints_are_refused(tiny, tmp_path):
  kind, _, folder = tiny
  tensors = load_file(folder / "model.safetensors")
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "config.json").write_text((folder / "config.json").read_text())
  name = next(
    k
    for k in sorted(tensors)
    if "layer_norm1.weight" in k or "layernorm_before.weight" in k or "norm1.weight" in k
  )
  save_file(
    {k: v for k, v in tensors.items() if k != name}, broken / "model.safetensors", metadata={"format": "pt"}
  )
  with pytest.raises(DataError, match="missing"):
    load_image_backbone(kind, str(broken))
  if kind == "siglip":  # our own loader also checks every shape against config.json
    wrong = dict(tensors)
    wrong["vision_model.post_layernorm.weight"] = np.zeros(31, np.float32)
    save_file(wrong, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(DataError, match="shapes"):
      load_image_backbone(kind, str(broken))


def test_unused_tensors_are_refused_naming_them(tiny, tmp_path):
  # A third block that config.json (2 layers) has no place for: transformers would drop it, logging only.
  kind, _, folder = tiny
  tensors = load_file(folder / "model.safetensors")
  layer = {"siglip": "encoder.layers.", "clip": "encoder.layers."}.get(kind, "encoder.layer.")
  third = {k.replace(f"{layer}1.", f"{layer}2."): v for k, v in tensors.items() if f"{layer}1." in k}
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "config.json").write_text((folder / "config.json").read_text())
  save_file({**tensors, **third}, broken / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(
    DataError, match=rf"{broken}/model.safetensors: {len(third)} tensors not used by .*{layer}2\."
  ):
    load_image_backbone(kind, str(broken))


def test_a_full_clip_checkpoint_gives_its_vision_tower(tmp_path):
  # The text tower and projections of a CLIPModel folder are the parts the vision backbone leaves out.
  torch.manual_seed(0)
  text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 37}
  config = transformers.CLIPConfig(vision_config=TINY, text_config=text, projection_dim=16)
  model = transformers.CLIPModel(config).eval()
  model.save_pretrained(tmp_path, safe_serialization=True)
  encoder = load_image_backbone("clip", str(tmp_path))
  images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    reference = model.vision_model(pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2)).pooler_output
  assert np.abs(np.asarray(encoder.apply(encoder.params, images)) - reference.numpy()).max() < 1e-4


def test_registry_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown image backbone"):
    load_image_backbone("resnet", str(tmp_path))
  with pytest.raises(ValueError, match="local checkpoint"):
    load_image_backbone("vit", "")
  with pytest.raises(DataError, match="missing checkpoint file"):
    load_image_backbone("siglip", str(tmp_path))


def test_a_checkpoint_in_a_bucket(tiny, bucket):
  # SigLIP (our module) reads its folder through epath; transformers' models need a local folder.
  kind, _, folder = tiny
  for name in ("config.json", "model.safetensors"):
    paths.copy_file(folder / name, bucket / kind / name)
  if kind != "siglip":
    with pytest.raises(DataError, match=rf"gs://bucket/{kind}: must be on a local disk: transformers"):
      load_image_backbone(kind, f"gs://bucket/{kind}")
    return
  local, remote = load_image_backbone(kind, str(folder)), load_image_backbone(kind, f"gs://bucket/{kind}")
  images = np.random.default_rng(0).uniform(-1, 1, (2, TINY["image_size"], TINY["image_size"], 3))
  images = images.astype(np.float32)
  np.testing.assert_array_equal(
    np.asarray(remote.apply(remote.params, images)), np.asarray(local.apply(local.params, images))
  )
