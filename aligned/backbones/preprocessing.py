"""Image preprocessing on the host (numpy), before images go to the device.

AligNet's (the release): a plain bicubic resize of the uint8 image to 224 x 224, no crop, no
antialiasing, the result rounded back to uint8, then values divided by 255 into [0, 1]. The release
does this with OpenCV's INTER_CUBIC; this is the same filter written in numpy: Keys' cubic with
A = -0.75, pixel centres aligned (`src = (dst + 0.5) * scale - 0.5`), edge pixels replicated. A
test checks it against OpenCV to within one grey level.

`preprocess` is `scale_and_normalize(resize_for_model(image))`: the uint8 resize is the costly half,
and an image cache (`aligned.data.image_cache`) stores its output, so that reading a cached image and
applying `scale_and_normalize` gives arrays identical to `preprocess` of the original.

Each model's own normalisation (`mean`, `std` per channel, applied to the [0, 1] values) is an
option chosen in the config and recorded in the store's metadata.
"""

from __future__ import annotations

import functools

import numpy as np

_A = -0.75  # OpenCV's cubic coefficient (PIL and jax.image use -0.5)

# Per-channel normalisations of common checkpoints, applied after scaling to [0, 1].
NORMALIZATIONS = {
  "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # AligNet: values in [0, 1]
  "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ViT (torchvision), DINOv2
  "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
  "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1]
}


def _cubic_weights(t: np.ndarray) -> np.ndarray:
  """[n] fractional offsets -> [n, 4] weights of the taps at floor - 1 .. floor + 2."""
  t = t[:, None] + np.array([1.0, 0.0, -1.0, -2.0])  # distances to the four taps
  d = np.abs(t)
  near = ((_A + 2) * d - (_A + 3)) * d * d + 1
  far = ((_A * d - 5 * _A) * d + 8 * _A) * d - 4 * _A
  return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  """Source indices [n_out, 4] (edges replicated) and weights [n_out, 4] along one axis."""
  source = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
  base = np.floor(source)
  weights = _cubic_weights(source - base)
  index = np.clip(base[:, None].astype(np.int64) + np.arange(-1, 3), 0, n_in - 1)
  return index, weights


def resize_cubic(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
  """[h, w, c] uint8 -> [size_h, size_w, c] uint8, OpenCV INTER_CUBIC semantics."""
  if image.ndim == 2:
    image = image[..., None]
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f"expected an [h, w, c] uint8 image, got {image.dtype} {image.shape}")
  out_h, out_w = (size, size) if isinstance(size, int) else size
  rows, row_weights = _taps(image.shape[0], out_h)
  cols, col_weights = _taps(image.shape[1], out_w)
  x = image.astype(np.float32)
  x = np.einsum("hkwc,hk->hwc", x[rows], row_weights.astype(np.float32))  # along height
  x = np.einsum("hwkc,wk->hwc", x[:, cols], col_weights.astype(np.float32))  # along width
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def resize_for_model(image: np.ndarray, size: int = 224) -> np.ndarray:
  """uint8 [h, w, 3] (or grey [h, w], or RGBA) -> uint8 [size, size, 3]: the AligNet cubic resize.

  The first half of `preprocess`, and what an image cache (`aligned.data.image_cache`) stores."""
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
  if image.shape[-1] == 4:  # RGBA: drop alpha
    image = image[..., :3]
  if image.shape[:2] == (size, size) and image.dtype == np.uint8:
    return image  # the cubic kernel at scale 1 weighs only the pixel itself: the resize is the identity
  return resize_cubic(image, size)


@functools.lru_cache(maxsize=16)
def _tiled(normalization: str, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  # Per-channel constants tiled to the image's shape: broadcasting over a last axis of 3 runs numpy's
  # inner loop 3 elements at a time (5x slower); the values, and so the results, are the same.
  mean, std = (
    np.ascontiguousarray(np.broadcast_to(np.asarray(v, np.float32), (h, w, 3)))
    for v in NORMALIZATIONS[normalization]
  )
  mean.flags.writeable = std.flags.writeable = False  # shared by every call
  return mean, std


def scale_and_normalize(
  images: np.ndarray, normalization: str = "none", out: np.ndarray | None = None
) -> np.ndarray:
  """uint8 [..., h, w, 3] -> float32: values / 255 into [0, 1], then (x - mean) / std per channel.

  The second half of `preprocess` (written into `out`, float32 of the same shape, when given).

  >>> scale_and_normalize(np.full((1, 1, 3), 255, np.uint8), "siglip").tolist()
  [[[1.0, 1.0, 1.0]]]
  """
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"unknown normalization {normalization!r}; known: {', '.join(NORMALIZATIONS)}")
  if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-1] != 3:
    raise ValueError(f"expected [..., h, w, 3] uint8 images, got {images.dtype} {images.shape}")
  x = np.divide(images, np.float32(255.0), out=out, dtype=np.float32)
  if normalization != "none":  # x - 0 and x / 1 are x: skipped
    mean, std = _tiled(normalization, *images.shape[-3:-1])
    np.subtract(x, mean, out=x)
    np.divide(x, std, out=x)
  return x


def preprocess(image: np.ndarray, size: int = 224, normalization: str = "none") -> np.ndarray:
  """uint8 [h, w, 3] (or grey [h, w]) -> float32 [size, size, 3]: cubic resize, /255, normalise."""
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"unknown normalization {normalization!r}; known: {', '.join(NORMALIZATIONS)}")
  return scale_and_normalize(resize_for_model(image, size), normalization)
