"""The student: a registered backbone plus a linear `triplet_head` on its pooled output.

Inputs come in triplets, `[b, 3, ...]` (images `[b, 3, h, w, 3]`, or token arrays `[b, 3, length]`);
they are flattened to `[3b, ...]` for the backbone and the head outputs reshaped to `[b, 3, head_dim]`.
Parameters are `{"backbone": ..., "head": {"kernel": [d, head_dim], "bias": [head_dim]}}`.

The head is initialised with LeCun-normal weights and a zero bias (a zero head would have zero
gradients: the loss depends on the head only through dot products of its outputs).

What trains (`trainable_mask`):
  "all"        every parameter (the release's default);
  "head"       the head only; the backbone runs under `stop_gradient` (a linear probe);
  "last_N"     the head, the last N transformer blocks and the parameters after the blocks (final
               norms, pooler, MAP head); embeddings and earlier blocks are frozen.
"""

from __future__ import annotations

import re
from typing import Any

import flax
import jax
import jax.numpy as jnp

# Block parameters: ".../layer/7/...", ".../layers/7/..." (transformers) or ".../layer_7/..." (SigLIP).
_BLOCK = re.compile(r"(?:^|/)(?:layers?/(\d+)|layer_(\d+))(?:/|$)")


def block_index(path: str) -> int | None:
  """The transformer block a parameter path belongs to, or None."""
  match = _BLOCK.search(path)
  if match is None:
    return None
  return int(match.group(1) or match.group(2))


class Student:
  """A backbone (image or text) with a triplet head.

  Example:
    student = Student(load_image_backbone("vit", "ckpt/vit-b16"), kind="image")
    params = student.init(jax.random.key(0))
    z = student.triplet_embed(params, {"image": images})  # [b, 3, 1024]
  """

  def __init__(self, backbone, kind: str, head_dim: int = 1024, train: str = "all", dtype=jnp.float32):
    if kind not in ("image", "text"):
      raise ValueError(f"unknown student kind {kind!r}; expected image or text")
    if train != "all" and train != "head" and not re.fullmatch(r"last_\d+", train):
      raise ValueError(f"train={train!r}: expected all, head or last_N (e.g. last_2)")
    self.backbone, self.kind, self.head_dim, self.train, self.dtype = backbone, kind, head_dim, train, dtype

  @property
  def feature_dim(self) -> int:
    return self.backbone.dim

  def init(self, rng: jax.Array) -> dict:
    """Pretrained backbone parameters and a fresh head."""
    kernel = jax.nn.initializers.lecun_normal()(rng, (self.feature_dim, self.head_dim), jnp.float32)
    head = {"kernel": kernel, "bias": jnp.zeros((self.head_dim,), jnp.float32)}
    return {"backbone": jax.tree.map(jnp.asarray, self.backbone.params), "head": head}

  def features(self, backbone_params, inputs: dict[str, jax.Array]) -> jax.Array:
    """[n, ...] inputs -> [n, d] pooled backbone features (float32)."""
    backbone_params = jax.tree.map(lambda p: p.astype(self.dtype), backbone_params)
    if self.kind == "image":
      return self.backbone.apply(backbone_params, inputs["image"].astype(self.dtype))
    return self.backbone.apply(
      backbone_params, inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]
    )

  def embed(self, params, inputs: dict[str, jax.Array]) -> jax.Array:
    """[n, ...] inputs -> [n, head_dim] head outputs (float32)."""
    features = self.features(params["backbone"], inputs).astype(jnp.float32)
    if self.train == "head":
      features = jax.lax.stop_gradient(features)
    return features @ params["head"]["kernel"] + params["head"]["bias"]

  def triplet_embed(self, params, inputs: dict[str, jax.Array]) -> jax.Array:
    """[b, 3, ...] inputs -> [b, 3, head_dim]."""
    b = next(iter(inputs.values())).shape[0]
    flat = {k: v.reshape(b * 3, *v.shape[2:]) for k, v in inputs.items()}
    return self.embed(params, flat).reshape(b, 3, self.head_dim)

  def trainable_mask(self, params) -> Any:
    """A tree of bools: which parameters the optimiser updates (see the module docstring)."""
    if self.train == "all":
      return jax.tree.map(lambda _: True, params)
    flat = flax.traverse_util.flatten_dict(params["backbone"], sep="/")
    if self.train == "head":
      backbone = {k: False for k in flat}
    else:
      n_last = int(self.train.split("_")[1])
      blocks = sorted({i for k in flat if (i := block_index(k)) is not None})
      if n_last > len(blocks):
        raise ValueError(f"train={self.train!r}, but the backbone has {len(blocks)} blocks")
      keep = set(blocks[len(blocks) - n_last :])

      def trainable(path: str) -> bool:
        i = block_index(path)
        if i is not None:
          return i in keep
        # Outside the blocks: embeddings (and CLIP's pre-block LayerNorm) come before them; the
        # rest (final norms, pooler, MAP head) after.
        return "embed" not in path and "pre_layrnorm" not in path

      backbone = {k: trainable(k) for k in flat}
    return {
      "backbone": flax.traverse_util.unflatten_dict(backbone, sep="/"),
      "head": jax.tree.map(lambda _: True, params["head"]),
    }
