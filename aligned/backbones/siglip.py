"""SigLIP vision tower in Flax (transformers has none), loading HF `SiglipVisionModel` safetensors.

Architecture (as transformers' PyTorch `SiglipVisionModel`): patch embedding (a strided conv, no
[CLS] token) + learned position embeddings; pre-LayerNorm transformer blocks (attention with
biases, MLP with tanh-approximated GELU); a final LayerNorm; and the multihead-attention-pooling
("MAP") head: a learned probe attends over the tokens, then LayerNorm + MLP with a residual. The
pooled embedding is the head's output (1152-d for So400m/14, 768-d for B/16).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aligned.backbones.hf_weights import BUFFERS
from aligned.errors import DataError
from aligned.paths import as_path, local_copy


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  image_size: int = 224
  patch_size: int = 16
  layer_norm_eps: float = 1e-6

  @classmethod
  def from_json(cls, path: str | os.PathLike) -> SiglipConfig:
    raw = json.loads(as_path(path).read_text())
    raw = raw.get("vision_config", raw)  # a full SiglipModel config nests the vision part
    return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})


class Mlp(nn.Module):
  config: SiglipConfig

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.config.intermediate_size, name="fc1")(x)
    return nn.Dense(self.config.hidden_size, name="fc2")(nn.gelu(x, approximate=True))


class Attention(nn.Module):
  """Multi-head attention with separate q/k/v/out projections (all with biases)."""

  config: SiglipConfig

  @nn.compact
  def __call__(self, queries, keys_values):
    h, heads = self.config.hidden_size, self.config.num_attention_heads

    def split(x, name):
      return nn.Dense(h, name=name)(x).reshape(*x.shape[:-1], heads, h // heads)

    q, k, v = split(queries, "q_proj"), split(keys_values, "k_proj"), split(keys_values, "v_proj")
    weights = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) * (h // heads) ** -0.5, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*queries.shape[:-1], h)
    return nn.Dense(h, name="out_proj")(out)


class EncoderLayer(nn.Module):
  config: SiglipConfig

  @nn.compact
  def __call__(self, x):
    eps = self.config.layer_norm_eps
    y = nn.LayerNorm(epsilon=eps, name="layer_norm1")(x)
    x = x + Attention(self.config, name="self_attn")(y, y)
    y = nn.LayerNorm(epsilon=eps, name="layer_norm2")(x)
    return x + Mlp(self.config, name="mlp")(y)


class MapHead(nn.Module):
  """Multihead-attention pooling: a learned probe attends over all tokens."""

  config: SiglipConfig

  @nn.compact
  def __call__(self, x):
    probe = self.param("probe", nn.initializers.normal(0.02), (1, 1, self.config.hidden_size))
    y = Attention(self.config, name="attention")(jnp.broadcast_to(probe, (x.shape[0], 1, x.shape[-1])), x)
    z = nn.LayerNorm(epsilon=self.config.layer_norm_eps, name="layernorm")(y)
    return (y + Mlp(self.config, name="mlp")(z))[:, 0]


class SiglipVision(nn.Module):
  """[b, h, w, 3] images -> {"pooled": [b, hidden], "tokens": [b, n_patches, hidden] (final LayerNorm),
  "hidden_states": (embeddings, block 1, ..., block L), each [b, n_patches, hidden]}."""

  config: SiglipConfig

  @nn.compact
  def __call__(self, images):
    c = self.config
    patches = nn.Conv(
      c.hidden_size,
      (c.patch_size, c.patch_size),
      strides=c.patch_size,
      padding="VALID",
      name="patch_embedding",
    )(images)
    x = patches.reshape(images.shape[0], -1, c.hidden_size)
    n = (c.image_size // c.patch_size) ** 2
    if x.shape[1] != n:
      raise ValueError(
        f"expected {c.image_size}x{c.image_size} images ({n} patches), got {images.shape[1:3]}"
      )
    x = x + self.param("position_embedding", nn.initializers.normal(0.02), (n, c.hidden_size))
    hidden_states = [x]
    for i in range(c.num_hidden_layers):
      x = EncoderLayer(c, name=f"layer_{i}")(x)
      hidden_states.append(x)
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, name="post_layernorm")(x)
    return {"pooled": MapHead(c, name="head")(x), "tokens": x, "hidden_states": tuple(hidden_states)}


# ------------------------------------------------------------------------------------------------
# Loading HF `SiglipVisionModel` / `SiglipModel` safetensors
# ------------------------------------------------------------------------------------------------


class _Recorded(dict):
  """A dict of tensors that records which names were read."""

  def __init__(self, tensors):
    super().__init__(tensors)
    self.read: set[str] = set()

  def __getitem__(self, name):
    value = super().__getitem__(name)
    self.read.add(name)
    return value


def _linear(tensors, prefix):
  return {"kernel": tensors[f"{prefix}.weight"].T, "bias": tensors[f"{prefix}.bias"]}


def _norm(tensors, prefix):
  return {"scale": tensors[f"{prefix}.weight"], "bias": tensors[f"{prefix}.bias"]}


def _mlp(tensors, prefix):
  return {"fc1": _linear(tensors, f"{prefix}.fc1"), "fc2": _linear(tensors, f"{prefix}.fc2")}


def params_from_hf(tensors: dict[str, np.ndarray], config: SiglipConfig, path: str = "<checkpoint>") -> dict:
  """Maps HF tensor names (`vision_model.` prefixed) to this module's parameter tree; a `vision_model.`
  tensor left unused (e.g. a layer that config.json does not have) is refused, as a missing one is."""
  p = "vision_model"
  tensors = _Recorded(tensors)
  try:
    params = {
      "patch_embedding": {
        "kernel": np.transpose(tensors[f"{p}.embeddings.patch_embedding.weight"], (2, 3, 1, 0)),
        "bias": tensors[f"{p}.embeddings.patch_embedding.bias"],
      },
      "position_embedding": tensors[f"{p}.embeddings.position_embedding.weight"],
      "post_layernorm": _norm(tensors, f"{p}.post_layernorm"),
    }
    for i in range(config.num_hidden_layers):
      layer = f"{p}.encoder.layers.{i}"
      params[f"layer_{i}"] = {
        "layer_norm1": _norm(tensors, f"{layer}.layer_norm1"),
        "layer_norm2": _norm(tensors, f"{layer}.layer_norm2"),
        "self_attn": {
          name: _linear(tensors, f"{layer}.self_attn.{name}")
          for name in ("q_proj", "k_proj", "v_proj", "out_proj")
        },
        "mlp": _mlp(tensors, f"{layer}.mlp"),
      }
    # The head's attention is torch.nn.MultiheadAttention: q, k, v stacked in one in_proj.
    w_in, b_in = tensors[f"{p}.head.attention.in_proj_weight"], tensors[f"{p}.head.attention.in_proj_bias"]
    h = config.hidden_size
    attention = {
      name: {"kernel": w_in[j * h : (j + 1) * h].T, "bias": b_in[j * h : (j + 1) * h]}
      for j, name in enumerate(("q_proj", "k_proj", "v_proj"))
    }
    attention["out_proj"] = _linear(tensors, f"{p}.head.attention.out_proj")
    params["head"] = {
      "probe": tensors[f"{p}.head.probe"],
      "attention": attention,
      "layernorm": _norm(tensors, f"{p}.head.layernorm"),
      "mlp": _mlp(tensors, f"{p}.head.mlp"),
    }
  except KeyError as e:
    raise DataError(path, f"missing tensor {e.args[0]!r} (is this a SigLIP vision checkpoint?)") from None
  unused = sorted(
    k
    for k in tensors
    if k.startswith(f"{p}.") and k not in tensors.read and k.rsplit(".", 1)[-1] not in BUFFERS
  )
  if unused:  # the text tower of a full SiglipModel checkpoint is outside `vision_model.`
    more = f" (+{len(unused) - 5} more)" if len(unused) > 5 else ""
    raise DataError(
      path,
      f"{len(unused)} tensors not used by the SigLIP vision tower (a config.json that does not describe "
      f"these weights?): {', '.join(unused[:5])}{more}",
    )
  expected = jax.eval_shape(
    SiglipVision(config).init, jax.random.key(0), jnp.zeros((1, config.image_size, config.image_size, 3))
  )["params"]
  got_shapes = jax.tree.map(np.shape, params)
  want_shapes = jax.tree.map(lambda a: a.shape, expected)
  if got_shapes != want_shapes:
    raise DataError(path, "tensor shapes do not match config.json (wrong or mismatched checkpoint)")
  return jax.tree.map(jnp.asarray, params)


class SiglipEncoder:
  """A SigLIP vision tower loaded from a folder with config.json and model.safetensors (HF format)."""

  def __init__(self, checkpoint: str | os.PathLike):
    from safetensors.numpy import load_file

    self.checkpoint = as_path(checkpoint)  # a folder on a disk or in a bucket (read through epath)
    for needed in ("config.json", "model.safetensors"):
      if not (self.checkpoint / needed).exists():
        raise DataError(self.checkpoint / needed, "missing checkpoint file")
    self.config = SiglipConfig.from_json(self.checkpoint / "config.json")
    with local_copy(self.checkpoint / "model.safetensors") as local:  # safetensors opens files itself
      tensors = load_file(local)
    self.params = params_from_hf(tensors, self.config, str(self.checkpoint / "model.safetensors"))
    self.module = SiglipVision(self.config)
    self.dim, self.image_size = self.config.hidden_size, self.config.image_size

  @classmethod
  def random(cls, config: SiglipConfig, seed: int = 0) -> SiglipEncoder:
    """Random weights (benchmarks; no checkpoint needed)."""
    encoder = cls.__new__(cls)
    encoder.checkpoint, encoder.config, encoder.module = (
      as_path("<random siglip>"),
      config,
      SiglipVision(config),
    )
    shape = (1, config.image_size, config.image_size, 3)
    encoder.params = jax.jit(encoder.module.init)(jax.random.key(seed), jnp.zeros(shape))["params"]
    encoder.dim, encoder.image_size = config.hidden_size, config.image_size
    return encoder

  @functools.partial(jax.jit, static_argnums=0)
  def apply(self, params, images: jax.Array) -> jax.Array:
    """[b, h, w, 3] preprocessed images -> [b, hidden] MAP-head embeddings."""
    return self.module.apply({"params": params}, images)["pooled"]

  @functools.partial(jax.jit, static_argnums=0)
  def hidden_states(self, params, images: jax.Array) -> tuple[jax.Array, ...]:
    """Per-layer tokens: (embeddings, block 1, ..., block L), each [b, n_patches, hidden]."""
    return self.module.apply({"params": params}, images)["hidden_states"]
