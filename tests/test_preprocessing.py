"""AligNet preprocessing against OpenCV's INTER_CUBIC, the release's resize."""

import cv2  # test-only dependency: the reference implementation
import numpy as np
import pytest

from aligned.backbones.preprocessing import NORMALIZATIONS, preprocess, resize_cubic, resize_for_model


@pytest.mark.parametrize("shape", [(375, 500), (100, 80), (224, 224), (640, 427), (50, 300), (7, 9)])
def test_resize_matches_opencv_inter_cubic(shape):
  rng = np.random.default_rng(sum(shape))
  noise = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
  yy, xx = np.mgrid[: shape[0], : shape[1]]
  smooth = np.stack(
    [(127 + 120 * np.sin(xx / 7 + c) * np.cos(yy / 11)).astype(np.uint8) for c in range(3)], -1
  )
  for image in (noise, smooth):
    ours = resize_cubic(image, 224).astype(int)
    reference = cv2.resize(image, (224, 224), interpolation=cv2.INTER_CUBIC).astype(int)
    difference = np.abs(ours - reference)
    # OpenCV's 8-bit path is fixed point: at most one grey level apart, and rarely.
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


def test_preprocess_range_channels_and_normalisation():
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, size=(60, 40), dtype=np.uint8)
  x = preprocess(grey)
  assert x.shape == (224, 224, 3) and x.dtype == np.float32
  assert 0.0 <= x.min() and x.max() <= 1.0
  np.testing.assert_array_equal(x[..., 0], x[..., 2])
  rgba = rng.integers(0, 256, size=(30, 30, 4), dtype=np.uint8)
  np.testing.assert_array_equal(preprocess(rgba), preprocess(rgba[..., :3]))
  mean, std = NORMALIZATIONS["clip"]
  np.testing.assert_allclose(
    preprocess(rgba, normalization="clip"), (preprocess(rgba) - mean) / std, rtol=1e-5, atol=1e-6
  )
  with pytest.raises(ValueError, match="normalization"):
    preprocess(rgba, normalization="zca")
  with pytest.raises(ValueError, match="uint8"):
    resize_cubic(rgba.astype(np.float32), 224)


def test_resizing_to_the_size_an_image_already_has_changes_nothing():
  image = np.random.default_rng(0).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
  np.testing.assert_array_equal(resize_cubic(image, 24), image)  # the kernel's own identity
  assert resize_for_model(image, 24) is image  # so the cached path skips it
