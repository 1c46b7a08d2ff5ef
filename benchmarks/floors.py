"""What this machine can do, measured in the run that compares against it.

- `matmul_peak(dtype)`: FLOP/s of one large square matrix product (2 n^3 FLOPs), jitted, at the
  default precision (so float32 gets whatever the backend's default float32 dot uses, as the code
  under test does).
- `bandwidth()`: bytes/s of a jitted sum over a large float32 array (each byte read once).
- `seconds_per_call(fn)`: the timer both use: one call to compile and warm up, then the best of a few
  rounds of `calls` back-to-back calls (dispatch is asynchronous, so the device never idles between
  them), each round blocked on at its end.

The benchmarks use these as floors: a computation cannot take less than its FLOPs at the matmul peak,
nor less than the bytes it must read at the bandwidth.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

# NVIDIA's datasheet figure for the H200 SXM, dense bfloat16 (no sparsity): printed for reference only.
H200_DATASHEET_BF16 = 989e12


def on_accelerator() -> bool:
  return jax.default_backend() != "cpu"


def seconds_per_call(fn: Callable[[], object], calls: int = 1, rounds: int = 3) -> float:
  """Best over `rounds` of the mean seconds of `calls` back-to-back calls of `fn` (after one warm-up)."""
  jax.block_until_ready(fn())
  best = float("inf")
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn()
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / calls)
  return best


def matmul_peak(dtype, n: int | None = None) -> float:
  """FLOP/s of an [n, n] x [n, n] product in `dtype` (n: 8192 on an accelerator, 1024 on a CPU)."""
  n = n or (8192 if on_accelerator() else 1024)
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  product = jax.jit(jnp.matmul)
  seconds = seconds_per_call(lambda: product(a, b), calls=20 if on_accelerator() else 2)
  return 2 * n**3 / seconds


def bandwidth(nbytes: int | None = None) -> float:
  """Bytes/s of a sum over `nbytes` of float32 (default 4 GiB on an accelerator, 256 MiB on a CPU)."""
  nbytes = nbytes or (4 << 30 if on_accelerator() else 256 << 20)
  a = jnp.ones((nbytes // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  return a.nbytes / seconds_per_call(lambda: total(a), calls=20 if on_accelerator() else 3)
