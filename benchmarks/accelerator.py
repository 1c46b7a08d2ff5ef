"""Benchmark: the accelerator checks in one table, each figure against a floor measured in the same run.

  python -m benchmarks.accelerator [--size full|cpu|tiny] [--out table.json] [--cache DIR]

`--size full` (the default on a GPU or TPU; sized to finish within 8 minutes on one H200) runs the
project's real sizes, given below; `cpu` (the default on a CPU) the same code at reduced sizes (ViT-B/16
on 64 px images, a tenth of the teacher's triplets, 65 k points, 1 M triplets), 1-2 minutes on 2
cores; `tiny` seconds (the test). Floors, measured first: the bfloat16 and float32 matmul peaks and
the memory bandwidth (`benchmarks.floors`). One row per check:

1. Student step MFU: `Trainer.train_step` of the release's student (ViT-B/16 at 224, random weights,
   1024-d head, every parameter trained) in bfloat16 at 512 triplets, halved while it does not fit
   (XLA's memory analysis of the compiled step above the device's memory, or an out-of-memory
   error). FLOPs per step from XLA's cost analysis of the compiled step; MFU = FLOPs / s / the
   bfloat16 matmul peak. Target >= 40 %. MFU against the H200 datasheet (989 TFLOP/s) is printed too.
2. Extraction pipeline / bare forward: `aligned.extract.ImageEmbedder.embed` over a record source of
   uint8 images already at the backbone's size (held in memory, as a cache of resized images gives
   them; or, with `--cache DIR`, read from an `aligned.data.image_cache` built at that size),
   preprocessed by host threads, against the bare jitted forward of the same backbone and batch on
   a device-resident batch. Ratio = pipeline images/s / bare images/s; target >= 90 %.
3. Teacher epoch: one full-batch Adam step of the teacher's own `Fitter` (matrix path) over 4.7 M
   random triplets of 1,854 objects at d = 1152. Floor = the larger of (a) the FLOPs of X W and
   Z Z^T and of their gradients, 4 n d^2 + 4 n^2 d, at the float32 matmul peak, and (b) the bytes
   every triplet must move (its three pair indices, three target probabilities, weight and target
   entropy read, three similarities gathered, three gradients scattered: 56 B) at the bandwidth.
   Target <= 3x.
4. k-means iteration: one sharded Lloyd step (`aligned.generation.kmeans`) on 1,281,167 x 1152
   float32 points (padded to whole chunks, as `kmeans` does) at k = 500. Floor = the larger of the
   distance product's 2 n k d FLOPs at the float32 matmul peak and one read of the points at the
   bandwidth. Target <= 2x.
5. Labelling: 10 M random triplets over the same table through `iter_pair_similarities`, chunk by
   chunk back to the host, as generation labels its files. Floor = three d-float rows read per
   triplet at the bandwidth. Target <= 2x.

Columns: the figure and its unit; the floor it is divided by (the measured peak in TFLOP/s for
row 1, the bare forward's images/s for row 2, the least seconds the work can take for rows 3-5); the
ratio (MFU or pipeline share as a percentage, else a multiple of the floor); the target; met or not.
Then each row's details and how long it took, compilation included. JAX preallocates 75 % of GPU
memory; XLA_PYTHON_CLIENT_MEM_FRACTION=.95 leaves row 1 more room. Timings are best-of-a-few on this
machine; nothing is asserted. `--out` writes the table as JSON (floors, then one object per row).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from aligned import artifacts
from aligned.backbones import build_backbone
from aligned.configs.common import tiny_vit
from aligned.data.image_cache import ImageCache
from benchmarks.extraction import RANDOM_BACKBONES, bare_images_per_s, make_embedder, pipeline_images_per_s
from benchmarks.finetune import compile_step, make_trainer, time_steps
from benchmarks.floors import H200_DATASHEET_BF16, bandwidth, matmul_peak, on_accelerator
from benchmarks.generation import kmeans_iteration_seconds, labelling_seconds
from benchmarks.teacher_epoch import random_targets, step_seconds

# -- Sizes ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Size:
  vit_name: str
  vit: dict  # the student's and the embedder's ViT: a transformers ViTConfig as a dict
  student_batch: int  # triplets per step to try first (halved while it does not fit)
  student_steps: int
  images: int  # images embedded, by the pipeline and by the bare forward
  image_batch: int
  teacher_objects: int
  teacher_dim: int
  teacher_triplets: int
  points: int  # k-means points, also the labelling table
  dim: int
  clusters: int
  kmeans_chunk: int
  label_triplets: int
  label_chunk: int
  matmul_n: int  # side of the square matmul that measures the peaks
  bandwidth_bytes: int  # array summed to measure the bandwidth


SIZES = {
  "full": Size(
    "ViT-B/16",
    RANDOM_BACKBONES["vit_b16"][1],
    student_batch=512,
    student_steps=10,
    images=8192,
    image_batch=256,
    teacher_objects=1854,
    teacher_dim=1152,
    teacher_triplets=4_700_000,
    points=1_281_167,
    dim=1152,
    clusters=500,
    kmeans_chunk=8192,
    label_triplets=10_000_000,
    label_chunk=1 << 18,
    matmul_n=8192,
    bandwidth_bytes=4 << 30,
  ),
  # ViT-B/16's blocks on 64 x 64 images (16 patches): the real depth and width at CPU cost.
  "cpu": Size(
    "ViT-B/16 at 64 px",
    {**RANDOM_BACKBONES["vit_b16"][1], "image_size": 64},
    student_batch=2,
    student_steps=2,
    images=16,
    image_batch=4,
    teacher_objects=1854,
    teacher_dim=1152,
    teacher_triplets=470_000,
    points=65_536,
    dim=1152,
    clusters=500,
    kmeans_chunk=8192,
    label_triplets=1_000_000,
    label_chunk=1 << 18,
    matmul_n=1024,
    bandwidth_bytes=256 << 20,
  ),
  "tiny": Size(
    "tiny ViT",
    tiny_vit(image_size=32, patch_size=8),
    student_batch=8,
    student_steps=2,
    images=32,
    image_batch=8,
    teacher_objects=200,
    teacher_dim=32,
    teacher_triplets=20_000,
    points=4096,
    dim=64,
    clusters=50,
    kmeans_chunk=1024,
    label_triplets=50_000,
    label_chunk=1 << 14,
    matmul_n=256,
    bandwidth_bytes=16 << 20,
  ),
}

# -- Rows -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Check:
  """One row: `figure` against `floor` (both in `unit`). Throughput rows (`at_least`) have ratio =
  figure / floor, met when >= target; time rows ratio = figure / floor, met when <= target."""

  key: str
  check: str
  figure: float
  unit: str
  floor: float
  ratio: float
  target: float
  at_least: bool
  met: bool
  detail: str
  wall_s: float = 0.0  # seconds the row took, compilation included


def _check(key, check, figure, unit, floor, target, at_least, detail) -> Check:
  ratio = figure / floor
  met = ratio >= target if at_least else ratio <= target
  return Check(key, check, figure, unit, floor, ratio, target, at_least, bool(met), detail)


def _out_of_memory(error: Exception) -> bool:
  text = str(error).lower()
  return "resource_exhausted" in text or "out of memory" in text


def _fits(compiled) -> bool:
  """Whether XLA's memory analysis of a compiled program fits the first device (True when unknown)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  analysis = compiled.memory_analysis()
  if "bytes_limit" not in stats or analysis is None:
    return True
  need = (
    analysis.argument_size_in_bytes
    + analysis.output_size_in_bytes
    + analysis.temp_size_in_bytes
    - analysis.alias_size_in_bytes
  )
  return need <= stats["bytes_limit"]


def student_mfu(size: Size, encoder, peak_bf16: float) -> Check:
  """Row 1: the student around `encoder` in bfloat16, at the largest batch from `size` down that fits."""
  pixels = encoder.image_size
  trainer, state = make_trainer(encoder, jnp.bfloat16)
  batch = size.student_batch
  while True:
    try:
      step, flops = compile_step(trainer, batch, pixels)
      if _fits(step):
        seconds, state = time_steps(trainer, state, batch, pixels, size.student_steps, step)
        break
    except jax.errors.JaxRuntimeError as error:
      if not _out_of_memory(error):
        raise
      state = None  # donated to the failed step, or at least freed before the next one
      state = trainer.init()
    if batch == 1:
      raise MemoryError("the student step does not fit this device even at one triplet")
    batch //= 2
  tflops = flops / seconds / 1e12
  detail = (
    f"batch {batch} triplets ({3 * batch} images at {pixels} px), {flops / 1e12:.3g} TFLOP/step "
    f"(XLA cost analysis), {seconds:.3g} s/step"
  )
  if on_accelerator():
    detail += f"; {flops / seconds / H200_DATASHEET_BF16:.1%} of the H200 datasheet 989 TFLOP/s"
  return _check(
    "student_mfu",
    f"student step MFU ({size.vit_name}, bf16)",
    tflops,
    "TFLOP/s",
    peak_bf16 / 1e12,
    0.40,
    True,
    detail,
  )


class ResizedImages:
  """A record source of `n` uint8 images already at `pixels` x `pixels` (what a cache of resized images
  gives), held in memory: 256 distinct random images, record i is image i mod 256."""

  def __init__(self, n: int, pixels: int, distinct: int = 256):
    rng = np.random.default_rng(0)
    self.n = n
    self.images = rng.integers(0, 256, (min(n, distinct), pixels, pixels, 3), dtype=np.uint8)

  def __len__(self) -> int:
    return self.n

  def record(self, i: int) -> tuple[str, np.ndarray]:
    return f"{i:08d}", self.images[i % len(self.images)]


def extraction_ratio(size: Size, encoder, threads: int, source=None) -> Check:
  """Row 2 over `source` (records of uint8 images at the backbone's size), default `ResizedImages`."""
  embedder = make_embedder(encoder, size.image_batch, "bfloat16", threads)
  where = "in memory" if source is None else type(source).__name__
  source = ResizedImages(size.images, encoder.image_size) if source is None else source
  pixels = source.record(0)[1].shape[:2]
  if pixels != (encoder.image_size, encoder.image_size):
    raise ValueError(f"the source's images are {pixels}, the backbone reads {encoder.image_size} px")
  n = min(size.images, len(source))
  bare = bare_images_per_s(embedder, n)
  pipeline = pipeline_images_per_s(embedder, source, n, threads)
  detail = (
    f"{n} uint8 images at {encoder.image_size} px ({where}), batch {size.image_batch}, bf16, "
    f"{threads} host threads; floor = the bare jitted forward"
  )
  return _check(
    "extraction",
    f"extraction pipeline / bare forward ({size.vit_name})",
    pipeline,
    "images/s",
    bare,
    0.90,
    True,
    detail,
  )


TEACHER_BYTES_PER_TRIPLET = 56  # 3 int32 pair indices, 3 f32 targets, f32 weight and entropy; 3 + 3 f32 sims


def teacher_epoch(size: Size, peak_f32: float, bytes_per_s: float) -> Check:
  """Row 3: one full-batch step of the teacher's `Fitter` on random embeddings and targets."""
  n, d, t = size.teacher_objects, size.teacher_dim, size.teacher_triplets
  x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
  seconds = step_seconds(x, random_targets(n, t), "auto")
  flop_floor = (4 * n * d * d + 4 * n * n * d) / peak_f32
  byte_floor = t * TEACHER_BYTES_PER_TRIPLET / bytes_per_s
  detail = (
    f"{t:,} triplets, {n:,} objects x {d}, one full-batch Adam step; floor = max(FLOPs {flop_floor:.3g} s, "
    f"bytes {byte_floor:.3g} s)"
  )
  return _check(
    "teacher_epoch",
    f"teacher epoch ({t / 1e6:.3g} M triplets, d = {d})",
    seconds,
    "s",
    max(flop_floor, byte_floor),
    3.0,
    False,
    detail,
  )


def random_table(size: Size) -> tuple[jax.Array, jax.Array]:
  """[n padded to whole chunks, d] float32 normal points on the device, and weights (0 on padding)."""
  multiple = size.kmeans_chunk * jax.device_count()
  padded = -(-size.points // multiple) * multiple
  x = jax.random.normal(jax.random.key(0), (padded, size.dim), jnp.float32)
  return x, (jnp.arange(padded) < size.points).astype(jnp.float32)


def kmeans_iteration(size: Size, x, weights, peak_f32: float, bytes_per_s: float) -> Check:
  """Row 4: one Lloyd iteration over the `random_table` points."""
  n, d, k = size.points, size.dim, size.clusters
  seconds = kmeans_iteration_seconds(x, weights, k, size.kmeans_chunk)
  flop_floor = 2 * n * k * d / peak_f32
  byte_floor = 4 * n * d / bytes_per_s
  detail = f"floor = max(distance product {flop_floor:.3g} s, one read of the points {byte_floor:.3g} s)"
  return _check(
    "kmeans_iteration",
    f"k-means iteration ({n / 1e6:.3g} M x {d}, k = {k})",
    seconds,
    "s",
    max(flop_floor, byte_floor),
    2.0,
    False,
    detail,
  )


def labelling(size: Size, x, bytes_per_s: float) -> Check:
  """Row 5: pair similarities of random triplets into the `random_table`, as generation labels."""
  t, d = size.label_triplets, size.dim
  triplets = np.random.default_rng(0).integers(0, size.points, size=(t, 3))
  seconds = labelling_seconds(x, triplets, size.label_chunk)
  detail = f"chunks of {size.label_chunk:,}; floor = 3 x {d} float32 rows per triplet at the bandwidth"
  return _check(
    "labelling",
    f"labelling ({t / 1e6:.3g} M triplets, d = {d})",
    seconds,
    "s",
    t * 3 * d * 4 / bytes_per_s,
    2.0,
    False,
    detail,
  )


# -- Table ------------------------------------------------------------------------------------------


def _ratio(row: dict, value: float, digits: int) -> str:
  return f"{100 * value:.{digits}f} %" if row["at_least"] else f"{value:.{digits + 1}f}x"


def format_table(rows: list[dict]) -> str:
  """The printed table: one line per row, then each row's detail and how long it took."""
  width = max(len("check"), *(len(row["check"]) for row in rows))
  header = f"{'check':<{width}} {'figure':>10} {'unit':<9} {'floor':>10} {'ratio':>8} {'target':>9}  met"
  lines = [header, "-" * len(header)]
  for row in rows:
    target = (">= " if row["at_least"] else "<= ") + _ratio(row, row["target"], 0)
    lines.append(
      f"{row['check']:<{width}} {row['figure']:>10.4g} {row['unit']:<9} {row['floor']:>10.4g} "
      f"{_ratio(row, row['ratio'], 1):>8} {target:>9}  {'yes' if row['met'] else 'no'}"
    )
  lines.append("")
  lines += [f"{row['key']} ({row['wall_s']:.0f} s): {row['detail']}" for row in rows]
  return "\n".join(lines)


# -- Run --------------------------------------------------------------------------------------------


def format_floors(floors: dict) -> str:
  return (
    f"floors: bf16 matmul {floors['matmul_bf16_tflop_per_s']:.4g} TFLOP/s, f32 matmul "
    f"{floors['matmul_f32_tflop_per_s']:.4g} TFLOP/s, bandwidth {floors['bandwidth_gb_per_s']:.4g} GB/s "
    f"(H200 datasheet dense bf16: {floors['h200_datasheet_bf16_tflop_per_s']:.0f} TFLOP/s, for reference)"
  )


def run(size_name: str, threads: int | None = None, image_source=None) -> dict:
  """Measures the floors, then every row (printing progress); returns {size, devices, floors, rows}."""
  size = SIZES[size_name]
  threads = threads or os.cpu_count() or 1
  peak_bf16 = matmul_peak(jnp.bfloat16, size.matmul_n)
  peak_f32 = matmul_peak(jnp.float32, size.matmul_n)
  bytes_per_s = bandwidth(size.bandwidth_bytes)
  floors = {
    "matmul_bf16_tflop_per_s": peak_bf16 / 1e12,
    "matmul_f32_tflop_per_s": peak_f32 / 1e12,
    "bandwidth_gb_per_s": bytes_per_s / 1e9,
    "h200_datasheet_bf16_tflop_per_s": H200_DATASHEET_BF16 / 1e12,
  }
  print(format_floors(floors), flush=True)
  encoder, _ = build_backbone("vit", random_config=size.vit)
  table = functools.cache(lambda: random_table(size))  # rows 4 and 5 share it; made after the others
  measures = [
    lambda: student_mfu(size, encoder, peak_bf16),
    lambda: extraction_ratio(size, encoder, threads, image_source),
    lambda: teacher_epoch(size, peak_f32, bytes_per_s),
    lambda: kmeans_iteration(size, *table(), peak_f32, bytes_per_s),
    lambda: labelling(size, table()[0], bytes_per_s),
  ]
  rows = []
  for measure in measures:
    start = time.perf_counter()
    row = measure()
    rows.append(dataclasses.replace(row, wall_s=time.perf_counter() - start))
    print(f"  {row.key}: {rows[-1].wall_s:.0f} s", flush=True)
  return {
    "size": size_name,
    "devices": [str(d) for d in jax.devices()],
    "floors": floors,
    "rows": [dataclasses.asdict(row) for row in rows],
  }


def main(argv: list[str] | None = None) -> dict:
  """Parses `argv`, runs the checks, prints the table (and writes it with --out); returns the report."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--size", choices=tuple(SIZES), default=None, help="default: full on a GPU/TPU, else cpu"
  )
  parser.add_argument("--out", default="", help="also write the table here as JSON")
  parser.add_argument("--threads", type=int, default=0, help="host threads of the pipeline (0: all cores)")
  parser.add_argument("--cache", default="", help="row 2 reads its images from this image cache")
  args = parser.parse_args(argv)
  size = args.size or ("full" if on_accelerator() else "cpu")
  print(f"devices: {jax.devices()}; size {size}", flush=True)
  report = run(size, args.threads or None, ImageCache(args.cache) if args.cache else None)
  print("\n" + format_table(report["rows"]))
  if args.out:
    artifacts.write_json(args.out, report)
  return report


if __name__ == "__main__":
  main()
