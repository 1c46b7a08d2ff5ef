"""Generate AligNet triplet files from an embedding store and a teacher transform.

  aligned-generate --config=generate:VARIANT --config.store=S \\
    --config.teacher=T/transform.npz --workdir=W

Writes W/{uncertainty_distillation,untransformed}/{train,val}_{sampling}.npz (release format),
W/clusters/kmeans_K.npz and W/manifest.json. Variants: release (10 M train + 10 k val per sampling:
cluster_border_500, class_border, within_class, between_class), smoke (tiny, seconds).
"""

import ml_collections


def get_config(variant: str = "release") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.store = ""  # an embedding store (aligned-extract); ids = ImageNet file names
  config.teacher = ""  # transform.npz of aligned-teacher (with its temperature)
  # how triplets are scored: "" = the teacher file's own (recorded by aligned-teacher); dot | cosine only
  # states it (a value other than the file's is refused), or says it for a gLocal file that records none
  config.similarity = ""
  # what the files' `indices` mean: "" = records of tfds imagenet2012/train, as the release's (the
  # store must be that whole split, else refused); store_rows = rows of this store (any other store)
  config.indices = ""
  # the UnAligNet control's labels s(X) / T_u: calibrated (T_u = the base model's own temperature, from
  # the teacher) | entropy_matched (T_u matching the teacher labels' mean entropy) | raw (T_u = 1)
  config.control = "calibrated"
  config.samplings = ("cluster_border_500", "class_border", "within_class", "between_class")
  config.n_train = 10_000_000
  config.n_val = 10_000
  config.kmeans_iters = 50
  config.chunk = 1 << 18  # triplets labelled per device call (bounds memory)
  config.seed = 0
  # Several processes (hosts) each write every n-th file. 0: JAX's process count and index (after
  # jax.distributed); set both for launchers that start one process per host without it.
  config.process_count = 0
  config.process_index = 0
  # True: delete this workdir's generated files (only where provenance.json shows generate wrote
  # them) and start over; a rerun with other settings or inputs is refused without it
  config.restart = False
  if variant == "smoke":
    config.samplings = ("cluster_border_3", "random")
    config.n_train, config.n_val, config.chunk = 2000, 200, 512
    config.indices = "store_rows"  # smoke stores are small stores of anything
  elif variant != "release":
    raise ValueError(f"unknown variant {variant!r}; expected release or smoke")
  return config
