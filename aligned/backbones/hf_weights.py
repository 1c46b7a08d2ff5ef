"""transformers' Flax `from_pretrained`, refusing what it would otherwise guess.

`from_pretrained` fills a weight that the checkpoint lacks with random values, and drops a tensor
the model has no place for (a checkpoint of another architecture, or a `config.json` with fewer
layers than the weights), and only logs either. `load_pretrained` turns both logs into a DataError
naming the folder's `model.safetensors`, how many tensors and the first few of them, in transformers'
Flax names (`kernel`, `scale` and `embedding` are PyTorch's `weight`).

Tolerated: buffers that are not weights (`position_ids`, `token_type_ids`; older BERT checkpoints
keep them) and, per backbone, the parts of a larger checkpoint the backbone does not contain
(`unused_ok`: the text tower of a full CLIP checkpoint, a classifier head).
"""

from __future__ import annotations

import ast
import contextlib
import logging
import pathlib
import re

from aligned.errors import DataError

BUFFERS = ("position_ids", "token_type_ids", "num_batches_tracked")
_MISSING = re.compile(r"are newly initialized: (\{.*?\})\n", re.S)
_UNUSED = re.compile(r"were not used when initializing \w+: (\{.*?\})\n", re.S)


@contextlib.contextmanager
def _load_warnings():
  """Collects the warnings transformers' Flax loader logs while a model loads."""
  logger = logging.getLogger("transformers.modeling_flax_utils")
  found: list[str] = []

  class Collect(logging.Handler):
    def emit(self, record):
      found.append(record.getMessage())

  handler, level = Collect(level=logging.WARNING), logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.WARNING)
  try:
    yield found
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)


def _names(message: str, pattern: re.Pattern) -> list[str] | None:
  """The sorted dotted tensor names of a transformers warning (a set of key tuples), or None."""
  match = pattern.search(message)
  if match is None:
    return None
  try:
    keys = ast.literal_eval(match.group(1))
  except (ValueError, SyntaxError):
    return None
  return sorted(".".join(map(str, k)) if isinstance(k, tuple) else str(k) for k in keys)


def _first(names: list[str], n: int = 5) -> str:
  return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def load_pretrained(model_class, checkpoint: pathlib.Path, dtype, unused_ok: tuple[str, ...] = ()):
  """`model_class.from_pretrained(checkpoint)` (local files, PyTorch safetensors), or a DataError when
  a weight is missing or a tensor unused; `unused_ok`: top-level names of checkpoint parts the model
  does not contain (e.g. `text_model` of a full CLIP checkpoint for the vision tower)."""
  name = model_class.__name__
  with _load_warnings() as messages:
    try:
      model = model_class.from_pretrained(checkpoint, from_pt=True, local_files_only=True, dtype=dtype)
    except (ValueError, KeyError, OSError) as e:
      raise DataError(checkpoint, f"cannot load as {name}: {e}") from None
  weights = checkpoint / "model.safetensors"
  for message in messages:
    if "newly initialized" in message:  # missing, or (ignore_mismatched_sizes, never set here) reshaped
      missing = _names(message, _MISSING)
      if missing is None:
        raise DataError(weights, f"weights missing or mismatched: {message[:300]}")
      raise DataError(
        weights,
        f"{len(missing)} weights of {name} missing (transformers would fill them with random values): "
        f"{_first(missing)}",
      )
    if "were not used" in message:
      unused = _names(message, _UNUSED)
      if unused is None:
        raise DataError(weights, f"tensors not used: {message[:300]}")
      unused = [n for n in unused if n.rsplit(".", 1)[-1] not in BUFFERS and n.split(".")[0] not in unused_ok]
      if unused:
        raise DataError(
          weights,
          f"{len(unused)} tensors not used by {name} (a checkpoint of another architecture, or a "
          f"config.json that does not describe these weights): {_first(unused)}",
        )
  return model
