"""Prepare `imagenet2012` for `tfds.data_source` without TensorFlow.

The official tensorflow-datasets builder reads `ILSVRC2012_img_{train,val}.tar` through TensorFlow's
file API and fixes 23 odd images with TensorFlow's JPEG codec. This subclass of the official builder
keeps everything else (features, keys, version 5.1.0, the label order, the example shuffling that
decides which index an image gets) and replaces only those parts: the tars are streamed with
`tarfile`, and the 22 CMYK JPEGs and the one PNG are re-encoded as RGB JPEG (quality 100) by Pillow.
So `tfds.data_source("imagenet2012", split="train")` indices, which AligNet files store, are those
of an official build; only the pixels of those 23 images can differ slightly (another JPEG encoder).
"""

from __future__ import annotations

import io
import os
import tarfile

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder as official

from aligned.errors import DataError
from aligned.paths import as_path, require_local

TRAIN_TAR, VAL_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"


def _iter_tar(path: epath.Path):
  """(normalised member path, file object) of each file of a tar, streamed (no random access)."""
  try:
    with as_path(path).open("rb") as f, tarfile.open(fileobj=f, mode="r|*") as archive:
      for member in archive:
        if member.isfile():
          handle = archive.extractfile(member)
          if handle is not None:
            yield os.path.normpath(member.path).lstrip("./"), handle  # local: a tar member's name, not a file
  except tarfile.TarError as e:
    raise DataError(path, f"not a readable tar archive ({e})") from None


def _validation_labels(val_tar: epath.Path) -> dict[str, str]:
  """File name -> synset, as the official builder: the packaged labels in sorted file-name order."""
  labels = (as_path(tfds.__file__).parent / "datasets/imagenet2012/validation_labels.txt").read_text().split()
  with as_path(val_tar).open("rb") as f, tarfile.open(fileobj=f, mode="r:") as archive:
    names = sorted(archive.getnames())
  if len(names) > len(labels):
    raise DataError(val_tar, f"{len(names)} images but only {len(labels)} validation labels")
  return dict(zip(names, labels, strict=False))


def _to_rgb_jpeg(data: bytes) -> bytes:
  from PIL import Image

  with Image.open(io.BytesIO(data)) as image:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=100)
    return out.getvalue()


class Builder(official.Builder, skip_registration=True):
  """The official imagenet2012 builder with tarfile input and Pillow image fixes."""

  name = "imagenet2012"

  def _split_generators(self, dl_manager):
    manual = as_path(dl_manager.manual_dir)
    splits = []
    if (manual / TRAIN_TAR).exists():
      splits.append(
        tfds.core.SplitGenerator(name=tfds.Split.TRAIN, gen_kwargs={"archive": _iter_tar(manual / TRAIN_TAR)})
      )
    if (manual / VAL_TAR).exists():
      splits.append(
        tfds.core.SplitGenerator(
          name=tfds.Split.VALIDATION,
          gen_kwargs={
            "archive": _iter_tar(manual / VAL_TAR),
            "validation_labels": _validation_labels(manual / VAL_TAR),
          },
        )
      )
    if not splits:
      raise DataError(manual, f"neither {TRAIN_TAR} nor {VAL_TAR} found")
    return splits

  def _fix_image(self, image_fname, image):
    if image_fname in official.CMYK_IMAGES or image_fname in official.PNG_IMAGES:
      return io.BytesIO(_to_rgb_jpeg(image.read()))
    return image


def prepare_imagenet2012(manual_dir: str | os.PathLike, data_dir: str | os.PathLike) -> epath.Path:
  """Builds the array_record dataset under `data_dir` (a local folder); returns the dataset folder.

  The tars in `manual_dir` are read through `etils.epath` (a bucket works); `data_dir` must be local:
  tfds writes the array_record shards, and `tfds.data_source` reads them, through C++."""
  data_dir = require_local(
    data_dir, "tfds writes and reads array_record shards through C++, which opens local files only"
  )
  builder = Builder(data_dir=os.fspath(data_dir), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return as_path(builder.data_dir)
