"""THINGS per-concept embeddings from a thingsvision extraction of THINGS images.

  aligned-things-concepts --features=features.npy --file_names=file_names.txt \
    --out=runs/so400m_things/embeddings.npy

thingsvision writes one row per image (`features.npy`, row i = line i of `file_names.txt`); this
averages the rows of each concept into [1854, d] in sorted THINGS order, the embeddings the teacher and
the evaluation read. An image is of the concept whose id names its folder (the THINGS database layout,
`object_images/aardvark/aardvark_01b.jpg`) or its file stem; every image must belong to a concept and
every concept must have an image, or nothing is written. (Images embedded by this project: use
`aligned-extract` with the `things_images` variant, which writes the same file.)
"""

import sys

from absl import flags

from aligned.cli.launch import USER_ERRORS, start
from aligned.data import things
from aligned.data.embeddings import read_thingsvision, save_embeddings

_FEATURES = flags.DEFINE_string("features", None, "thingsvision features (.npy or .txt), one row per image")
_FILE_NAMES = flags.DEFINE_string("file_names", None, "thingsvision file_names.txt, one image path per line")
_OUT = flags.DEFINE_string("out", None, "where the [1854, d] .npy goes (sorted THINGS order)")


def main(argv):
  del argv
  try:
    paths, features = read_thingsvision(_FEATURES.value, _FILE_NAMES.value)
    means, counts = things.concept_means(paths, features, where=_FILE_NAMES.value)
    save_embeddings(_OUT.value, means)
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(
    f"{len(paths):,} images -> {means.shape[0]} concepts x {means.shape[1]} "
    f"({counts.min()}-{counts.max()} images per concept): {_OUT.value}"
  )


def run():
  flags.mark_flags_as_required(["features", "file_names", "out"])
  start(main)


if __name__ == "__main__":
  run()
