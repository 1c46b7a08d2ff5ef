"""Benchmark: image extraction throughput against a bare jitted forward pass, measured in one run.

  python -m benchmarks.extraction [--models vit_b16,siglip_so400m] [--images 64] [--batch 16]

For each backbone (random weights, the real architecture): images/s of the full pipeline (JPEG
decode + OpenCV-cubic resize on host threads, transfer, sharded forward) on a folder of synthetic
500 x 375 JPEGs, beside images/s of the bare jitted forward on device-resident inputs of the same
batch; their ratio is what the input pipeline costs (aim: under 10 %). Also peak host memory.
Runs unchanged on a GPU or TPU. Prints only.
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

from aligned.backbones.siglip import SiglipConfig, SiglipEncoder
from aligned.backbones.vision import HFVisionEncoder
from aligned.data.items import ImageFolderSource
from aligned.distributed import data_mesh
from aligned.extract import ImageEmbedder


def make_encoder(name: str):
  if name == "vit_b16":
    import transformers

    config = transformers.ViTConfig(image_size=224, patch_size=16)  # ViT-B/16 defaults
    return HFVisionEncoder.random("vit", config)
  if name == "siglip_b16":
    return SiglipEncoder.random(SiglipConfig())
  if name == "siglip_so400m":
    return SiglipEncoder.random(
      SiglipConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
      )
    )
  raise ValueError(f"unknown model {name!r}")


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
  mesh = data_mesh()
  print(f"devices: {jax.devices()}")
  with tempfile.TemporaryDirectory() as folder:
    synthetic_jpegs(folder, args.images)
    source = ImageFolderSource(folder)
    print(f"{'model':>14} {'batch':>6} {'bare img/s':>11} {'pipeline img/s':>15} {'pipeline/bare':>14}")
    for name in args.models.split(","):
      encoder = make_encoder(name)
      batch = args.batch if name != "siglip_so400m" or jax.default_backend() != "cpu" else min(args.batch, 2)
      n = min(args.images, 4 * batch) if jax.default_backend() == "cpu" else args.images
      config = ml_collections.ConfigDict(
        dict(batch_size=batch, image_size=0, normalization="none", compute_dtype="float32")
      )
      embedder = ImageEmbedder(config, mesh, encoder=encoder)
      images = jax.device_put(
        np.zeros((batch, encoder.image_size, encoder.image_size, 3), np.float32), embedder.sharding
      )
      jax.block_until_ready(embedder._apply(embedder.params, images))  # compile
      start = time.perf_counter()
      for _ in range(n // batch):
        jax.block_until_ready(embedder._apply(embedder.params, images))
      bare = (n // batch) * batch / (time.perf_counter() - start)
      with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        embedder.embed(source, 0, batch, pool)  # warm up the decode path
        start = time.perf_counter()
        embedder.embed(source, 0, n, pool)
        pipeline = n / (time.perf_counter() - start)
      print(f"{name:>14} {batch:>6} {bare:>11.2f} {pipeline:>15.2f} {pipeline / bare:>14.2f}")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"peak host memory {peak:.0f} MiB")


if __name__ == "__main__":
  main()
