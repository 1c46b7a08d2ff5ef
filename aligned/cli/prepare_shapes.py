"""Build the generated shapes dataset as tfds imagenet2012 (see aligned/demo/shapes.py).

aligned-prepare-shapes --data_dir=runs/shapes_tfds
aligned-extract --config=extract:imagenet --config.data_dir=runs/shapes_tfds ...

Default: 4 shape kinds (superclasses) x 3 colours = 12 classes, 40 train + 10 validation images a
class at 64 x 64; about a second on 2 CPU cores. A rerun with the same flags does nothing.
"""

import json
import sys

from absl import flags, logging

from aligned.cli.launch import USER_ERRORS, start
from aligned.demo import shapes

_DATA = flags.DEFINE_string("data_dir", None, "tfds data_dir to write imagenet2012 into", required=True)
_N = flags.DEFINE_integer("n_per_class", 40, "train images a class")
_N_VAL = flags.DEFINE_integer("n_val_per_class", 10, "validation images a class (0: none, at most 50)")
_SIZE = flags.DEFINE_integer("image_size", 64, "image side in pixels")
_KINDS = flags.DEFINE_list("kinds", list(shapes.KINDS[:4]), f"superclasses, from {','.join(shapes.KINDS)}")
_COLOURS = flags.DEFINE_list("colours", ["red", "green", "blue"], f"from {','.join(shapes.HUES)}")
_SEED = flags.DEFINE_integer("seed", 0, "rendering seed")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # tfds logs each build step at INFO
  try:
    folder = shapes.build_shapes_dataset(
      _DATA.value,
      _N.value,
      _N_VAL.value,
      _SIZE.value,
      tuple(_KINDS.value),
      tuple(_COLOURS.value),
      _SEED.value,
    )
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  record = json.loads((folder / shapes.SETTINGS_FILE).read_text())
  superclasses = sorted({c["superclass"] for c in record["classes"]})
  counts = ", ".join(f"{n} {split}" for split, n in record["counts"].items())
  print(
    f"{len(record['classes'])} classes in {len(superclasses)} superclasses ({', '.join(superclasses)}); "
    f"{counts} images at {_SIZE.value}x{_SIZE.value} (built in {record['build_seconds']} s)\n"
    f"dataset: tfds.data_source('imagenet2012', split=..., data_dir={_DATA.value!r})\n"
    f"hierarchy: {folder / shapes.HIERARCHY_FILE}; superclass mapping: {folder / shapes.SUPERCLASS_FILE}"
  )


def run():
  start(main)


if __name__ == "__main__":
  run()
