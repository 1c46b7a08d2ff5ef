"""Benchmark: image extraction throughput against a bare jitted forward pass, measured in one run.

  python -m benchmarks.extraction [--models vit_b16,siglip_so400m] [--images 64] [--batch 16]

For each backbone (random weights, the real architecture): images/s of the full pipeline (JPEG
decode + OpenCV-cubic resize on host threads, transfer, sharded forward) on a folder of synthetic
500 x 375 JPEGs, beside images/s of the bare jitted forward on one device-resident batch, calls
dispatched back to back; their ratio is what the input pipeline costs (aim: under 10 %). Also peak
host memory. Runs unchanged on a GPU or TPU. Prints only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import resource
import tempfile
import time

import jax
import ml_collections
import numpy as np
from PIL import Image

from aligned.backbones import build_backbone
from aligned.data.items import ImageFolderSource
from aligned.distributed import data_mesh
from aligned.extract import ImageEmbedder

# Benchmark architectures with random weights: (registered backbone, its random_config).
RANDOM_BACKBONES = {
  "vit_b16": ("vit", {"image_size": 224, "patch_size": 16}),  # transformers' ViTConfig defaults: ViT-B/16
  "siglip_b16": ("siglip", {"image_size": 224, "patch_size": 16}),  # SiglipConfig defaults: B/16
  "siglip_so400m": (
    "siglip",
    {
      "hidden_size": 1152,
      "intermediate_size": 4304,
      "num_hidden_layers": 27,
      "num_attention_heads": 16,
      "image_size": 384,
      "patch_size": 14,
    },
  ),
}


def make_encoder(name: str):
  """A benchmark architecture (`RANDOM_BACKBONES`) with random weights."""
  if name not in RANDOM_BACKBONES:
    raise ValueError(f"unknown model {name!r}; known: {', '.join(RANDOM_BACKBONES)}")
  backbone, random_config = RANDOM_BACKBONES[name]
  return build_backbone(backbone, random_config=random_config)[0]


def make_embedder(encoder, batch: int, dtype: str = "float32", threads: int = 4) -> ImageEmbedder:
  """The extraction stage's embedder around `encoder`, over all devices, inputs at its own size."""
  config = ml_collections.ConfigDict(
    dict(batch_size=batch, image_size=0, normalization="none", compute_dtype=dtype, decode_threads=threads)
  )
  return ImageEmbedder(config, data_mesh(), encoder=encoder)


def bare_images_per_s(embedder: ImageEmbedder, n: int) -> float:
  """Images/s of the embedder's jitted forward alone on one device-resident batch, n // batch calls
  dispatched back to back."""
  size, batch = embedder.encoder.image_size, embedder.batch_size
  images = jax.device_put(np.zeros((batch, size, size, 3), np.float32), embedder.sharding)
  calls = max(1, n // batch)
  jax.block_until_ready(embedder._apply(embedder.params, images))  # compile
  start = time.perf_counter()
  for _ in range(calls):
    out = embedder._apply(embedder.params, images)
  jax.block_until_ready(out)
  return calls * batch / (time.perf_counter() - start)


def pipeline_images_per_s(embedder: ImageEmbedder, source, n: int, threads: int) -> float:
  """Images/s of `embedder.embed` over the first n records of `source` (records read and preprocessed
  by `threads` host threads, transferred, embedded, fetched), after one warm-up batch."""
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    embedder.embed(source, 0, embedder.batch_size, pool)
    start = time.perf_counter()
    embedder.embed(source, 0, n, pool)
    return n / (time.perf_counter() - start)


def synthetic_jpegs(folder, n: int) -> None:
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:375, :500]
  for i in range(n):
    phase = rng.uniform(0, 6, size=3)
    image = np.stack([127 + 100 * np.sin(xx / (9 + i % 7) + p) * np.cos(yy / 13) for p in phase], -1)
    noisy = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(f"{folder}/img_{i:05d}.jpg", quality=90)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="vit_b16,siglip_so400m")
  parser.add_argument("--images", type=int, default=64)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--threads", type=int, default=4)
  args = parser.parse_args()
  print(f"devices: {jax.devices()}")
  with tempfile.TemporaryDirectory() as folder:
    synthetic_jpegs(folder, args.images)
    source = ImageFolderSource(folder)
    print(f"{'model':>14} {'batch':>6} {'bare img/s':>11} {'pipeline img/s':>15} {'pipeline/bare':>14}")
    for name in args.models.split(","):
      encoder = make_encoder(name)
      batch = args.batch if name != "siglip_so400m" or jax.default_backend() != "cpu" else min(args.batch, 2)
      n = min(args.images, 4 * batch) if jax.default_backend() == "cpu" else args.images
      embedder = make_embedder(encoder, batch, threads=args.threads)
      bare = bare_images_per_s(embedder, n)
      pipeline = pipeline_images_per_s(embedder, source, n, args.threads)
      print(f"{name:>14} {batch:>6} {bare:>11.2f} {pipeline:>15.2f} {pipeline / bare:>14.2f}")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"peak host memory {peak:.0f} MiB")


if __name__ == "__main__":
  main()
