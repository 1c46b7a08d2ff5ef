"""Benchmark: student training throughput, FLOPs and MFU, and the input pipeline alone.

  python -m benchmarks.finetune [--model vit_b16] [--batch 512] [--steps 5] [--dtype bfloat16]

1. Smoke model (tiny ViT, synthetic task): steps/s and triplets/s of `Trainer.train_step`.
2. The chosen model (random weights, the real architecture) at 224 x 224: FLOPs per training step
   from XLA's cost analysis of the compiled step, seconds per step on this machine, and model FLOPs
   utilisation = FLOPs per step / seconds per step / peak, where the peak is a large bfloat16 (or
   float32) matmul measured in the same run (on an H200 the datasheet dense bf16 peak is ~989 TFLOP/s;
   both are printed). On CPU the batch is cut to --cpu-batch triplets (FLOPs at --batch are still
   reported from the compiled cost analysis).
3. Input pipeline alone: images/s of JPEG decode + cubic resize to 224 in host threads
   (`ImageItems.load`), against what the accelerator consumes per second (3 x triplets/s): the
   ratio must stay above 1 so the device never waits.
Prints only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from aligned.backbones import build_backbone
from aligned.backbones.student import Student
from aligned.configs.common import tiny_vit
from aligned.data import items as item_sources
from aligned.distributed import make_mesh
from aligned.student.optimizer import make_optimizer, warmup_cosine
from aligned.student.trainer import Trainer
from benchmarks.extraction import make_encoder
from benchmarks.floors import H200_DATASHEET_BF16, matmul_peak


def make_trainer(encoder, dtype):
  """The release's student (1024-d head, every parameter trained) around `encoder`: (Trainer, state)."""
  student = Student(encoder, "image", 1024, "all", dtype)
  optimizer = make_optimizer(learning_rate=warmup_cosine(3e-5, 100_000, 5_000), decay_rate=1.0)
  trainer = Trainer.create(student, optimizer, make_mesh())
  return trainer, trainer.init()


def compile_step(trainer, batch: int, size: int):
  """(the training step compiled for `batch` triplets of size x size images, its FLOPs from XLA's
  cost analysis of the compiled step: forward, backward and update)."""
  spec = {
    "inputs": {"image": jax.ShapeDtypeStruct((batch, 3, size, size, 3), jnp.float32)},
    "targets": jax.ShapeDtypeStruct((batch, 3), jnp.float32),
  }
  compiled = trainer.train_step.lower(trainer.abstract_state, spec).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return compiled, float(cost.get("flops", float("nan")))


def time_steps(trainer, state, batch: int, size: int, steps: int, step=None) -> tuple[float, object]:
  """(seconds per step over `steps` steps on one device-resident random batch, after one warm-up step;
  the final state). `step`: a compiled step (`compile_step`), else `trainer.train_step`."""
  step = step or trainer.train_step
  rng = np.random.default_rng(0)
  local = {
    "inputs": {"image": rng.uniform(size=(batch, 3, size, size, 3)).astype(np.float32)},
    "targets": rng.normal(size=(batch, 3)).astype(np.float32),
  }
  device_batch = trainer.put_batch(local)
  state, metrics = step(state, device_batch)  # compile
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, device_batch)
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / steps, state


class JpegSource:
  """In-memory 500 x 375 JPEGs standing in for ImageNet records."""

  def __init__(self, n: int):
    rng = np.random.default_rng(0)
    self.blobs = []
    for _ in range(n):
      image = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
      buffer = io.BytesIO()
      Image.fromarray(image).save(buffer, format="JPEG", quality=90)
      self.blobs.append(buffer.getvalue())

  def __len__(self):
    return len(self.blobs)

  def record(self, i):
    return str(i), np.asarray(Image.open(io.BytesIO(self.blobs[i])).convert("RGB"))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="vit_b16", choices=["vit_b16", "siglip_b16"])
  parser.add_argument("--batch", type=int, default=512)
  parser.add_argument("--cpu-batch", type=int, default=4)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  parser.add_argument("--workers", type=int, default=os.cpu_count())
  args = parser.parse_args()
  on_cpu = jax.default_backend() == "cpu"
  print(f"devices: {jax.devices()}")

  # 1. smoke model
  tiny, _ = build_backbone("vit", random_config=tiny_vit())
  trainer, state = make_trainer(tiny, jnp.float32)
  seconds, _ = time_steps(trainer, state, 32, 16, 50)
  print(f"smoke model: {1 / seconds:.1f} steps/s, {32 / seconds:.0f} triplets/s (batch 32)")

  # 2. the real architecture
  dtype = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}[args.dtype]
  trainer, state = make_trainer(make_encoder(args.model), dtype)
  step, flops_full = compile_step(trainer, args.batch, 224)
  batch = min(args.batch, args.cpu_batch) if on_cpu else args.batch
  step, flops = compile_step(trainer, batch, 224) if batch != args.batch else (step, flops_full)
  seconds, state = time_steps(trainer, state, batch, 224, args.steps, step)
  peak = matmul_peak(dtype)
  print(
    f"{args.model} {args.dtype}: {flops_full / 1e12:.2f} TFLOP per step at batch {args.batch} triplets "
    f"({flops_full / args.batch / 3 / 1e9:.1f} GFLOP per image, forward + backward + update)"
  )
  print(
    f"  measured at batch {batch}: {seconds:.3f} s/step, {batch / seconds:.1f} triplets/s, "
    f"{flops / seconds / 1e12:.3f} TFLOP/s"
  )
  print(f"  measured {args.dtype} matmul peak: {peak / 1e12:.3f} TFLOP/s -> MFU {flops / seconds / peak:.1%}")
  if not on_cpu:
    print(
      f"  MFU against the H200 datasheet ({H200_DATASHEET_BF16 / 1e12:.0f} TFLOP/s dense bf16): "
      f"{flops / seconds / H200_DATASHEET_BF16:.1%}"
    )
  consumed = 3 * batch / seconds

  # 3. input pipeline alone
  source = JpegSource(64)
  items = item_sources.ImageItems(source, 224, "none", workers=args.workers)
  ids = np.arange(64)
  items.load(ids[:8])
  start = time.perf_counter()
  for _ in range(3):
    items.load(ids)
  images_per_s = 3 * 64 / (time.perf_counter() - start)
  print(
    f"input pipeline ({args.workers} threads): {images_per_s:.0f} images/s decoded + resized; the step "
    f"consumes {consumed:.0f} images/s -> headroom {images_per_s / consumed:.2f}x"
  )


if __name__ == "__main__":
  main()
