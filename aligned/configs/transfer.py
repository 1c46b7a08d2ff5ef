"""Transfer of frozen embeddings: few-shot linear probes and distribution shift.

Stores come from `aligned-extract` (one per dataset split); a store is named by its source
(tfds "dataset/split") unless given as NAME=STORE. ImageNet with its shifted test sets:
  aligned-transfer --config=transfer:imagenet \
    --config.stores="('runs/in_train/store','runs/in_val/store','runs/in_v2/store','runs/in_a/store')" \
    --workdir=runs/transfer_vit
Any tfds classification dataset:
  aligned-transfer --config=transfer \
    --config.stores="('runs/c10_train/store','runs/c10_test/store')" \
    --config.fewshot="('cifar10/train->cifar10/test',)" --workdir=W
Writes W/results.json: fewshot[DATASET][ridge|logistic][K] = {mean, std, seeds} and
shift[TRAIN_DATASET][EVAL_DATASET] = accuracy (definitions: aligned/transfer.py). Shift evaluation
stores that are not given are skipped (listed in details.skipped). BREEDS-style subpopulation shift:
--config.breeds="('imagenet2012/train->imagenet2012/validation',)" --config.superclasses=wordnet:6
(each class's WordNet ancestor 6 steps below `entity`, from the WordNet 3.0 nouns in the data folder)
or --config.superclasses=map.tsv (lines `SYNSET SUPERCLASS`).
"""

import ml_collections

from aligned.probes import LOGISTIC_L2S, RIDGE_L2S

IMAGENET_SHIFTS = (
  "imagenet2012/validation",
  "imagenet_v2/test",
  "imagenet_a/test",
  "imagenet_r/test",
  "imagenet_sketch/test",
)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """variant: "" (everything from flags) or "imagenet" (imagenet2012 few-shot + shift pairs)."""
  config = ml_collections.ConfigDict()
  config.stores = ()  # STORE or NAME=STORE (embedding stores of aligned.extract)
  config.fewshot = ()  # "TRAIN->TEST" store names: k-shot probes from TRAIN scored on all of TEST
  config.shift = ()  # "TRAIN->EVAL,EVAL,...": one probe on all of TRAIN scored on each EVAL present
  config.breeds = ()  # "TRAIN->TEST": subpopulation shift over config.superclasses
  config.superclasses = ""  # text file, `CLASS SUPERCLASS` a line; or wordnet:DEPTH (WordNet ancestors)
  config.breeds_seed = 0  # which half of each superclass's classes is the source
  config.data_dir = ""  # tfds data_dir for labels; empty: the extraction's (STORE/../config.json)
  config.label_key = "label"  # the tfds ClassLabel feature
  config.shots = (1, 5, 10, 25)
  config.seeds = (0, 1, 2)
  config.methods = ("ridge", "logistic")
  config.ridge_l2s = RIDGE_L2S  # chosen per probe by exact leave-one-out
  config.max_loo_rows = 20000  # leave-one-out scored on at most this many training rows
  config.logistic_l2s = LOGISTIC_L2S  # chosen per probe by 2-fold CV over the shots (k >= 2)
  config.logistic_l2 = 1e-3  # used at 1 shot (nothing to hold out) or when logistic_l2s is empty
  config.logistic_steps = 100  # L-BFGS steps at most (stops when the gradient norm < 1e-5)
  config.shift_probe = "ridge"  # ridge | logistic
  config.restrict_to_eval_classes = True  # argmax over the classes of the eval set (ImageNet-A/R: 200)
  if variant == "imagenet":
    config.fewshot = ("imagenet2012/train->imagenet2012/validation",)
    config.shift = ("imagenet2012/train->" + ",".join(IMAGENET_SHIFTS),)
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected imagenet or none")
  return config
