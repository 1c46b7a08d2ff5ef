"""A generated image dataset with a two-level hierarchy, stored as tfds `imagenet2012`.

Every image shows one shape on a noisy gradient background, at a random position, size and rotation,
in a jittered colour. Superclass = shape kind (disc, square, triangle, star, ...); class = kind x
colour (`red_disc`, `green_disc`, ...). Each class is given a real ImageNet synset id (evenly spaced
through the 1,000 of tfds' `imagenet2012/labels.txt`, so the choice depends only on the number of
classes), and the images are packed into ILSVRC-layout tars (a train tar of per-synset tars named
`nXXXXXXXX.tar` holding `nXXXXXXXX_i.JPEG`; a flat validation tar of `ILSVRC2012_val_NNNNNNNN.JPEG`)
and built by the no-TensorFlow builder of `aligned.data.imagenet`. So everything written for ImageNet
runs on it unchanged: `tfds.data_source("imagenet2012", split="train", data_dir=D)` by index, labels
from train file names, the `imagenet` extraction config, transfer probes on train -> validation.

Layout of `D/imagenet2012/` (the folder `build_shapes_dataset` returns):

  5.1.0/             the tfds dataset (array_record; train and, if requested, validation)
  hierarchy.tsv      `synset  class  superclass`, one header row, one class a line (label order)
  superclasses.tsv   `synset superclass` lines, the `CLASS SUPERCLASS` file of BREEDS-style transfer
  shapes.json        the settings, the classes and the counts; written last, the "complete" mark

Validation images are named by real validation file numbers whose official label (tfds'
`validation_labels.txt`, 50 a class) is the class's synset, so their names and labels agree with
that file as in a full ImageNet; hence at most 50 validation images a class.

The build happens in a hidden folder inside D and is renamed into place in one step, so a killed
build never leaves a `D/imagenet2012` that looks complete; a rerun with the same settings does nothing.
"""

from __future__ import annotations

import colorsys
import contextlib
import io
import json
import os
import pathlib
import shutil
import tarfile
import tempfile
import time

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw
from tensorflow_datasets.core.utils import tqdm_utils

from aligned import artifacts, paths
from aligned.data import imagenet
from aligned.errors import DataError

KINDS = ("disc", "square", "triangle", "star", "cross", "ring", "hexagon")
HUES = {"red": 0.0, "yellow": 60.0, "green": 120.0, "cyan": 180.0, "blue": 240.0, "magenta": 300.0}
DATASET = "imagenet2012"
SETTINGS_FILE, HIERARCHY_FILE, SUPERCLASS_FILE = "shapes.json", "hierarchy.tsv", "superclasses.tsv"
FORMAT = 1  # bump when the rendering changes, so an old build is not taken for a new one
_SUPERSAMPLE = 4  # shapes are drawn at 4x and downsampled: antialiased edges
_JPEG_QUALITY = 90
_MAX_VAL_PER_CLASS = 50  # the official validation labels hold 50 images a synset


# -- Classes ------------------------------------------------------------------------------------------


def shape_classes(
  kinds: tuple[str, ...] = KINDS[:4], colours: tuple[str, ...] = ("red", "green", "blue")
) -> list[dict[str, str]]:
  """The classes in label order: {synset, name, superclass}, kind-major, synsets ascending.

  >>> [c["name"] for c in shape_classes(("disc", "star"), ("red", "blue"))]
  ['red_disc', 'blue_disc', 'red_star', 'blue_star']
  """
  unknown = sorted(set(kinds) - set(KINDS)) + sorted(set(colours) - set(HUES))
  if unknown:
    raise ValueError(f"unknown shape kinds or colours {unknown}; kinds: {KINDS}, colours: {tuple(HUES)}")
  if len(set(kinds)) != len(kinds) or len(set(colours)) != len(colours) or len(kinds) < 2:
    raise ValueError(f"want >= 2 distinct kinds and distinct colours, got {kinds} and {colours}")
  synsets = tfds.core.tfds_path(f"datasets/{DATASET}/labels.txt").read_text().split()
  n = len(kinds) * len(colours)
  # Evenly spaced, so the label order of the classes is the order below.
  chosen = [synsets[k * len(synsets) // n] for k in range(n)]
  names = [(f"{colour}_{kind}", kind) for kind in kinds for colour in colours]
  return [
    {"synset": s, "name": name, "superclass": kind} for s, (name, kind) in zip(chosen, names, strict=True)
  ]


# -- Rendering ----------------------------------------------------------------------------------------


def _outline(kind: str, r: float, angle: float) -> list[list[tuple[float, float]]]:
  """Polygons (outer first; a ring's inner circle second) around (0, 0) with circumradius r."""

  def regular(n, radius, phase=0.0):
    t = angle + phase + 2 * np.pi * np.arange(n) / n
    return list(zip(radius * np.cos(t), radius * np.sin(t), strict=True))

  if kind in ("disc", "ring"):
    outer = regular(96, r)
    return [outer, regular(96, 0.55 * r)] if kind == "ring" else [outer]
  if kind in ("square", "triangle", "hexagon"):
    return [regular({"square": 4, "triangle": 3, "hexagon": 6}[kind], r)]
  if kind == "star":
    t = angle + np.pi * np.arange(10) / 5
    radius = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
    return [list(zip(radius * np.cos(t), radius * np.sin(t), strict=True))]
  if kind == "cross":  # a plus sign with arms of width 0.5 r
    w = 0.25 * r
    pts = [
      (w, r),
      (w, w),
      (r, w),
      (r, -w),
      (w, -w),
      (w, -r),
      (-w, -r),
      (-w, -w),
      (-r, -w),
      (-r, w),
      (-w, w),
      (-w, r),
    ]
    c, s = np.cos(angle), np.sin(angle)
    return [[(x * c - y * s, x * s + y * c) for x, y in pts]]
  raise ValueError(f"unknown shape kind {kind!r}")


def _layout(rng: np.random.Generator) -> dict:
  """The random draws of one image that come before its shape is drawn, in a fixed order."""
  grey = rng.uniform(30, 225, size=2)[:, None] + rng.uniform(-25, 25, size=(2, 3))
  return {"grey": grey, "theta": rng.uniform(0, 2 * np.pi), "radius": rng.uniform(0.22, 0.42)}


def render_shape(kind: str, colour: str, size: int, rng: np.random.Generator) -> np.ndarray:
  """One [size, size, 3] uint8 image: a `colour` `kind` on a noisy gradient background.

  Random: position (fully inside), circumradius 22-42 % of the side, rotation, hue (+-15 degrees),
  saturation and value (0.6-1), a desaturated background gradient and pixel noise (sigma 3-12).
  """
  layout = _layout(rng)
  # Background: a linear gradient between two greyish colours at a random angle.
  grey, theta = layout["grey"], layout["theta"]
  yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
  t = (np.cos(theta) * (xx - 0.5) + np.sin(theta) * (yy - 0.5)) * np.sqrt(0.5) + 0.5
  background = grey[0] * (1 - t[..., None]) + grey[1] * t[..., None]

  # Shape: a mask drawn at _SUPERSAMPLE x and box-downsampled (coverage in [0, 1]).
  big = size * _SUPERSAMPLE
  r = layout["radius"] * big
  centre = rng.uniform(r, big - r, size=2)
  mask = Image.new("L", (big, big), 0)
  draw = ImageDraw.Draw(mask)
  for fill, polygon in zip((255, 0), _outline(kind, r, rng.uniform(0, 2 * np.pi)), strict=False):
    draw.polygon([(centre[0] + x, centre[1] + y) for x, y in polygon], fill=fill)
  alpha = np.asarray(mask.resize((size, size), Image.Resampling.BOX), np.float32)[..., None] / 255
  hue = (HUES[colour] + rng.uniform(-15, 15)) % 360 / 360
  rgb = 255 * np.asarray(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1), rng.uniform(0.6, 1)))

  image = background * (1 - alpha) + rgb * alpha + rng.normal(0, rng.uniform(3, 12), size=(size, size, 3))
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(image).save(out, format="JPEG", quality=_JPEG_QUALITY)
  return out.getvalue()


# -- ILSVRC-layout tars -------------------------------------------------------------------------------


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size, info.mtime = len(data), 0
  archive.addfile(info, io.BytesIO(data))


def _rng(settings: dict, split: int, k: int, i: int) -> np.random.Generator:
  # One generator per image: image i of a class is the same whatever the counts (a prefix property).
  return np.random.default_rng((settings["seed"], split, k, i))


def _image(settings: dict, split: int, k: int, i: int, superclass: str, name: str) -> bytes:
  return _jpeg(
    render_shape(superclass, name.split("_")[0], settings["image_size"], _rng(settings, split, k, i))
  )


def shape_radius(settings: dict, split: int, k: int, i: int) -> float:
  """The circumradius (fraction of the side) of image i of class k in a split (0 train, 1 validation):
  the shape's size, what tells images of one class apart beside position, rotation and colour jitter."""
  return float(_layout(_rng(settings, split, k, i))["radius"])


def _validation_numbers(classes: list[dict], n: int) -> dict[str, list[int]]:
  """Synset -> the first n (1-based) validation file numbers whose official label is the synset."""
  official = tfds.core.tfds_path(f"datasets/{DATASET}/validation_labels.txt").read_text().split()
  wanted = {c["synset"]: [] for c in classes}
  for number, synset in enumerate(official, start=1):
    if synset in wanted and len(wanted[synset]) < n:
      wanted[synset].append(number)
  return wanted


def _write_tars(manual: pathlib.Path, settings: dict, classes: list[dict]) -> dict[str, int]:
  with tarfile.open(manual / imagenet.TRAIN_TAR, "w") as train:
    for k, c in enumerate(classes):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as class_tar:
        for i in range(settings["n_per_class"]):
          _add(class_tar, f"{c['synset']}_{i}.JPEG", _image(settings, 0, k, i, c["superclass"], c["name"]))
      _add(train, f"{c['synset']}.tar", inner.getvalue())
  counts = {"train": len(classes) * settings["n_per_class"]}
  if settings["n_val_per_class"]:
    numbers = _validation_numbers(classes, settings["n_val_per_class"])
    with tarfile.open(manual / imagenet.VAL_TAR, "w") as val:
      for k, c in enumerate(classes):
        for i, number in enumerate(numbers[c["synset"]]):
          image = _image(settings, 1, k, i, c["superclass"], c["name"])
          _add(val, f"ILSVRC2012_val_{number:08d}.JPEG", image)
    counts["validation"] = len(classes) * settings["n_val_per_class"]
  return counts


class _Builder(imagenet.Builder, skip_registration=True):
  """`aligned.data.imagenet.Builder` with validation labels looked up by file number.

  The official builder pairs the sorted file names with the label list by position, which is right
  only for all 50,000 images; the tar here holds a subset, so `..._00000042.JPEG` gets line 42 of the label file.
  """

  name = DATASET  # tfds names a builder after its class otherwise

  def _split_generators(self, dl_manager):
    splits = super()._split_generators(dl_manager)
    official = tfds.core.tfds_path(f"datasets/{DATASET}/validation_labels.txt").read_text().split()
    for split in splits:
      if "validation_labels" in split.gen_kwargs:
        manual = pathlib.Path(dl_manager.manual_dir)  # local: the build's own staging folder
        with tarfile.open(manual / imagenet.VAL_TAR) as archive:
          names = archive.getnames()
        split.gen_kwargs["validation_labels"] = {n: official[int(n[-13:-5]) - 1] for n in names}
    return splits


# -- Build --------------------------------------------------------------------------------------------


def _remove_stale_builds(data_dir: pathlib.Path) -> None:
  """Deletes hidden build folders of killed builds (their process no longer runs)."""
  for folder in data_dir.glob(".shapes-build-*"):
    pid = folder.name.split("-")[2]
    try:
      os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
      shutil.rmtree(folder, ignore_errors=True)  # local: data_dir is (build_shapes)
    except PermissionError:  # alive, another user's
      pass


def _existing(folder: pathlib.Path, settings: dict) -> bool:
  """True if `folder` is a complete build with these settings; an error for anything else there."""
  marker = folder / SETTINGS_FILE
  if marker.exists():
    built = json.loads(marker.read_text())["settings"]
    if built == settings:
      return True
    differ = {k: f"{built.get(k)} (want {v})" for k, v in settings.items() if built.get(k) != v}
    raise DataError(marker, f"built with other settings: {differ}; use another data_dir")
  if folder.exists():
    raise DataError(
      folder, f"an {DATASET} not built by aligned.demo.shapes (no {SETTINGS_FILE}): use another data_dir"
    )
  return False


@contextlib.contextmanager
def _quiet_tfds():
  # tfds' progress bars are one global switch; a sub-second build should not print six of them.
  before = getattr(tqdm_utils, "_active", True)
  tfds.disable_progress_bar()
  try:
    yield
  finally:
    tfds.display_progress_bar(before)


def build_shapes_dataset(
  data_dir: str | os.PathLike,
  n_per_class: int = 40,
  n_val_per_class: int = 10,
  image_size: int = 64,
  kinds: tuple[str, ...] = KINDS[:4],
  colours: tuple[str, ...] = ("red", "green", "blue"),
  seed: int = 0,
) -> pathlib.Path:
  """Builds the shapes dataset as tfds `imagenet2012` under `data_dir`, unless already built.

  Args:
    data_dir: the tfds data_dir (read with `tfds.data_source("imagenet2012", ..., data_dir=data_dir)`).
    n_per_class: train images a class (`nXXXXXXXX_0.JPEG` ...).
    n_val_per_class: validation images a class (0: no validation split; at most 50).
    image_size: side of the square images in pixels.
    kinds: shape kinds, the superclasses (see KINDS).
    colours: colours (see HUES); the classes are kinds x colours.
    seed: of the rendering; the synsets depend only on the number of classes.

  Returns:
    `data_dir/imagenet2012`, holding the tfds dataset (5.1.0/), hierarchy.tsv, superclasses.tsv and
    shapes.json (settings, classes, counts, build seconds).

  Example (tests/test_shapes.py runs it; the doctest runner imports this file as a top-level
  module, where tfds cannot find the builder's package):

    build_shapes_dataset("/tmp/shapes", n_per_class=3, kinds=("disc", "star"), colours=("red",))
    tfds.data_source("imagenet2012", split="train", data_dir="/tmp/shapes")  # 6 records
  """
  if n_per_class < 1 or image_size < 8 or not 0 <= n_val_per_class <= _MAX_VAL_PER_CLASS:
    raise ValueError(
      f"want n_per_class >= 1, image_size >= 8 and 0 <= n_val_per_class <= {_MAX_VAL_PER_CLASS}; got "
      f"{n_per_class}, {image_size}, {n_val_per_class}"
    )
  settings = {
    "format": FORMAT,
    "n_per_class": int(n_per_class),
    "n_val_per_class": int(n_val_per_class),
    "image_size": int(image_size),
    "kinds": list(kinds),
    "colours": list(colours),
    "seed": int(seed),
  }
  classes = shape_classes(tuple(kinds), tuple(colours))
  data_dir = paths.require_local(data_dir, "tfds writes the shapes dataset as array_record, read by C++")
  folder = data_dir / DATASET
  if _existing(folder, settings):
    return folder
  data_dir.mkdir(parents=True, exist_ok=True)
  _remove_stale_builds(data_dir)
  start = time.perf_counter()
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".shapes-build-{os.getpid()}-", dir=data_dir))  # local: ^
  try:
    manual, built = staging / "manual", staging / "tfds"
    manual.mkdir()
    counts = _write_tars(manual, settings, classes)
    with _quiet_tfds():
      _Builder(data_dir=os.fspath(built), file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual))
      )
    out = built / DATASET
    rows = [f"{c['synset']}\t{c['name']}\t{c['superclass']}" for c in classes]
    (out / HIERARCHY_FILE).write_text("synset\tclass\tsuperclass\n" + "\n".join(rows) + "\n")
    pairs = [f"{c['synset']}\t{c['superclass']}" for c in classes]
    (out / SUPERCLASS_FILE).write_text(
      "# synset superclass (aligned.demo.shapes)\n" + "\n".join(pairs) + "\n"
    )
    record = {"settings": settings, "classes": classes, "counts": counts}
    artifacts.write_json(
      out / SETTINGS_FILE, record | {"build_seconds": round(time.perf_counter() - start, 2)}
    )
    try:
      os.rename(out, folder)  # local: the one step that makes the build visible
    except OSError:
      if not _existing(folder, settings):  # another build finished first with the same settings: fine
        raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)  # local: the staging folder
  return folder
