"""The student's optimiser, as in the release: Adam, then decay toward the initial parameters, then the
learning rate (warmup-cosine).

  update = -lr(step) * (adam(g) + rate * (params - params_at_init))

`params_at_init` are the parameters after pretrained loading, including the freshly initialised
triplet head: decay pulls the student back to where fine-tuning started, not to zero. It is decoupled
from the gradient statistics (like AdamW's weight decay) because it is added after Adam's scaling.
Frozen parameters (linear probe, "all but the last N blocks") get exactly zero updates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class DecayToInitState(NamedTuple):
  init_params: Any  # the parameters at initialisation (same tree and sharding as the parameters)


def decay_to_init(rate: float, mask=None) -> optax.GradientTransformation:
  """Adds `rate * (params - params_at_init)` to the updates (where `mask` is True, if given).

  `params_at_init` are the parameters given to `init` (keep them in the optimiser state, so a
  restored checkpoint decays toward the same point). `mask` is a tree of bools (or a function of the
  parameters returning one) with the parameters' structure.
  """

  def init_fn(params):
    return DecayToInitState(init_params=jax.tree.map(jnp.asarray, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("decay_to_init needs the current parameters: call update(g, state, params)")
    updates = jax.tree.map(
      lambda u, p, p0: u + rate * (p - p0).astype(u.dtype), updates, params, state.init_params
    )
    return updates, state

  transform = optax.GradientTransformation(init_fn, update_fn)
  return optax.masked(transform, mask) if mask is not None else transform


def warmup_cosine(
  peak: float, total_steps: int, warmup_steps: int, end_fraction: float = 0.0
) -> optax.Schedule:
  """Linear warmup from 0 to `peak` over `warmup_steps`, then cosine decay to `end_fraction * peak`."""
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) < total_steps ({total_steps})")
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=peak,
    warmup_steps=warmup_steps,
    decay_steps=total_steps,
    end_value=end_fraction * peak,
  )


def make_optimizer(
  *,
  learning_rate: optax.ScalarOrSchedule,
  decay_rate: float = 1.0,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  clip_norm: float = 0.0,
  decay_mask: Callable | Any | None = None,
  trainable: Callable | Any | None = None,
) -> optax.GradientTransformation:
  """clip (optional) -> Adam -> decay toward init (optional mask) -> learning rate; frozen -> 0.

  `trainable`: tree of bools (or a function of the parameters) selecting the parameters to train;
  the others get zero updates and no optimiser state worth speaking of.
  """
  parts = []
  if clip_norm > 0:
    parts.append(optax.clip_by_global_norm(clip_norm))
  parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
  if decay_rate:
    parts.append(decay_to_init(decay_rate, decay_mask))
  parts.append(optax.scale_by_learning_rate(learning_rate))
  chain = optax.chain(*parts)
  if trainable is None:
    return chain

  def labels(params):
    mask = trainable(params) if callable(trainable) else trainable
    return jax.tree.map(lambda t: "train" if t else "freeze", mask)

  return optax.multi_transform({"train": chain, "freeze": optax.set_to_zero()}, labels)
