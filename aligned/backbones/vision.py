"""Image backbones from transformers' Flax models (ViT, CLIP vision tower, DINOv2), local files only.

Each returns one pooled embedding per image, the representation a triplet head or a probe reads:
- `vit`: the [CLS] token of the last hidden state (after the final LayerNorm), as the supervised
  ViT classifier reads it (not the optional tanh pooler);
- `clip`: `pooler_output`, the post-LayerNorm [CLS] token (before the projection to the text space);
- `dinov2`: `pooler_output`, the LayerNorm-ed [CLS] token.
Inputs are [b, h, w, 3] float images already preprocessed (see `aligned.backbones.preprocessing`).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from aligned.backbones.hf_weights import load_pretrained
from aligned.errors import DataError
from aligned.paths import as_path, require_local

_MODELS = {"vit": "FlaxViTModel", "clip": "FlaxCLIPVisionModel", "dinov2": "FlaxDinov2Model"}
# Parts of a larger checkpoint the pooled vision model does not contain: a classifier head, or the text
# tower and projections of a full CLIP checkpoint. Any other unused tensor is refused.
_UNUSED_OK = {
  "vit": ("classifier",),
  "clip": ("text_model", "text_projection", "visual_projection", "logit_scale"),
  "dinov2": ("classifier",),
}


class HFVisionEncoder:
  """A transformers Flax vision model loaded from a folder with config.json and model.safetensors.

  Example:
    encoder = HFVisionEncoder("vit", "checkpoints/vit-b16")
    pooled = encoder.apply(encoder.params, images)  # [b, hidden_size]
  """

  def __init__(self, kind: str, checkpoint: str | os.PathLike, dtype=jnp.float32):
    import transformers

    if kind not in _MODELS:
      raise ValueError(f"unknown vision backbone kind {kind!r}; known: {', '.join(_MODELS)}")
    self.kind = kind
    self.checkpoint = require_local(checkpoint, "transformers reads model folders from a local disk")
    for needed in ("config.json", "model.safetensors"):
      if not (self.checkpoint / needed).exists():
        raise DataError(self.checkpoint / needed, "missing checkpoint file")
    # every weight from the checkpoint, and every tensor used but those of another part (_UNUSED_OK)
    model = load_pretrained(getattr(transformers, _MODELS[kind]), self.checkpoint, dtype, _UNUSED_OK[kind])
    self.module, self.params, self.config = model.module, model.params, model.config
    self.dim = model.config.hidden_size
    self.image_size = model.config.image_size

  @classmethod
  def random(cls, kind: str, hf_config, seed: int = 0) -> HFVisionEncoder:
    """Random weights for a transformers config (benchmarks; no checkpoint needed)."""
    import transformers

    # One jitted init of the whole module: transformers' own init compiles module by module (2x slower).
    model = getattr(transformers, _MODELS[kind])(hf_config, seed=seed, _do_init=False)
    images = jnp.zeros((1, hf_config.image_size, hf_config.image_size, hf_config.num_channels), jnp.float32)
    init = jax.jit(lambda rng: model.module.init(rng, images, deterministic=True)["params"])
    encoder = cls.__new__(cls)
    encoder.kind, encoder.checkpoint = kind, as_path(f"<random {kind}>")
    encoder.module, encoder.params, encoder.config = model.module, init(jax.random.key(seed)), model.config
    encoder.dim, encoder.image_size = hf_config.hidden_size, hf_config.image_size
    return encoder

  @functools.partial(jax.jit, static_argnums=0)
  def apply(self, params, images: jax.Array) -> jax.Array:
    """[b, h, w, 3] preprocessed images -> [b, hidden_size] pooled embeddings (float32)."""
    # The Flax modules take NHWC; only transformers' wrapper classes accept (and transpose) NCHW.
    outputs = self.module.apply({"params": params}, images, deterministic=True)
    if self.kind == "vit":
      pooled = outputs.last_hidden_state[:, 0]
    else:
      pooled = outputs.pooler_output
    return pooled.astype(jnp.float32)

  @functools.partial(jax.jit, static_argnums=0)
  def hidden_states(self, params, images: jax.Array) -> tuple[jax.Array, ...]:
    """Per-layer tokens: (embeddings, block 1, ..., block L), each [b, tokens, hidden]."""
    outputs = self.module.apply({"params": params}, images, deterministic=True, output_hidden_states=True)
    return tuple(h.astype(jnp.float32) for h in outputs.hidden_states)
