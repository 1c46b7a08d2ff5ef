"""Build imagenet2012 (array_record) for tfds.data_source without TensorFlow.

aligned-prepare-imagenet --manual_dir=DIR_WITH_TARS --data_dir=~/tensorflow_datasets
"""

import os

from absl import flags

from aligned.cli.launch import start
from aligned.data.imagenet import prepare_imagenet2012

_MANUAL = flags.DEFINE_string(
  "manual_dir", None, "folder with ILSVRC2012_img_train.tar / _val.tar", required=True
)
_DATA = flags.DEFINE_string("data_dir", "~/tensorflow_datasets", "tfds data_dir to write into")


def main(argv):
  del argv
  folder = prepare_imagenet2012(_MANUAL.value, os.path.expanduser(_DATA.value))  # local: a tfds data dir
  print(
    f"prepared {folder}; read it with tfds.data_source('imagenet2012', split=..., data_dir={_DATA.value!r})"
  )


def run():
  start(main)


if __name__ == "__main__":
  run()
