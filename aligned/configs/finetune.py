"""Fine-tune a student on AligNet triplets.

  aligned-finetune --config=finetune:VARIANT --workdir=W [--config.KEY=VALUE ...]

Variants:
  vit_b16, siglip_b16, dinov2_b14, clip_b16   the release's students: backbone from a local checkpoint
      folder (--config.checkpoint=DIR, transformers layout), AligNet files in --config.data.root,
      images by index from tfds imagenet2012/train; Adam + decay to init (1.0) + warmup-cosine to
      3e-5 over 100 k steps (5 k warmup), batch 512 triplets, JSD, tau = 100, head 1024.
  minilm           the text student of the demo: all-MiniLM-L6-v2 on texts (THINGS concepts, or WordNet
                   nouns with data.source=wordnet_nouns; texts from data.template), tau fitted.
  smoke            a tiny random ViT on a synthetic learnable task (files written into W): seconds on CPU.

Rerunning the same command resumes from the last checkpoint in W/checkpoints; SIGTERM checkpoints and
exits. Multi-process: --config.distributed.coordinator=HOST:PORT --config.distributed.num_processes=N
--config.distributed.process_id=I (or --config.distributed.auto=True on a TPU pod slice).
"""

import ml_collections
from ml_collections import config_dict

from aligned.configs.common import tiny_vit, wordnet_nouns
from aligned.data.cache import data_dir

RELEASE_STUDENTS = {  # variant: (backbone, normalization of the backbone's own preprocessing)
  "vit_b16": ("vit", "imagenet"),
  "siglip_b16": ("siglip", "siglip"),
  "dinov2_b14": ("dinov2", "imagenet"),
  "clip_b16": ("clip", "clip"),
}


def get_config(variant: str = "vit_b16") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.backbone = "vit"  # vit | clip | dinov2 | siglip | minilm
  config.checkpoint = ""  # local folder of the pretrained backbone
  config.random_backbone = ml_collections.ConfigDict()  # a transformers config (dict): random weights
  config.head_dim = 1024
  config.train = "all"  # all | head (linear probe) | last_N (the last N blocks + the head)
  config.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)

  config.data = ml_collections.ConfigDict()
  config.data.root = ""  # AligNet files: ROOT/{transform}/{split}_{sampling}.npz
  config.data.transform = "uncertainty_distillation"  # | untransformed (the UnAligNet control)
  config.data.samplings = ("cluster_border_500", "class_border", "within_class", "between_class")
  config.data.source = "tfds"  # tfds | things_words | wordnet_nouns | synthetic
  config.data.tfds_name = "imagenet2012"
  config.data.tfds_split = "train"
  config.data.tfds_data_dir = ""
  config.data.tfds_ids = "file_name"  # file_name (refused if the dataset has none) | index
  config.data.preprocessing = "alignet"  # alignet: cubic resize, [0, 1] | backbone: + its normalisation
  config.data.normalization = "none"  # used when preprocessing = backbone
  config.data.image_size = 224  # 0: the backbone's
  config.data.template = "{word}"  # texts of text sources: THINGS concepts (things_words) or wordnet_nouns
  config.data.wordnet = wordnet_nouns()  # wordnet_nouns: which nouns (as the store's extraction)
  config.data.image_cache = ""  # tfds: a cache of the split at image_size (aligned-cache-images)
  config.data.workers = 16  # host threads decoding images (in each loader process with grain)
  config.data.prefetch = 2  # batches decoded ahead of the device
  config.data.loader = "threads"  # threads (one prefetch thread) | grain (worker processes)
  config.data.grain_workers = 8  # loader = grain: worker processes, each loading whole batches
  config.data.synthetic = ml_collections.ConfigDict(
    {"n_items": 256, "image_size": 16, "n_train": 4000, "n_val": 256, "seed": 0}
  )

  config.loss = "jsd"  # jsd | kl | contrastive
  config.tau = 100.0  # predictions softmax(d / tau); 0: fit at initialisation on validation targets
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 3e-5  # peak of the warmup-cosine schedule
  config.optimizer.warmup_steps = 5_000
  config.optimizer.decay_to_init = 1.0  # update += rate * (params - params at init), before the lr
  # > 0: the rate is decay_strength / (learning_rate * steps), the same pull for any run length (the
  # release's 1.0 x 3e-5 x 100 k steps = 3); 0: decay_to_init as given
  config.optimizer.decay_strength = 0.0
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.clip_norm = 0.0  # 0: no gradient clipping
  config.steps = 100_000
  config.batch_size = 512  # triplets per step (global, over all devices and processes)
  config.seed = 0
  # True: delete this workdir's run first (its files and checkpoints; only where provenance.json shows
  # finetune wrote them) and train anew; a rerun with other settings or inputs is refused otherwise
  config.restart = False

  # fsdp > 1 shards every parameter (and its optimiser state) of >= fsdp_min_size elements
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "fsdp_min_size": 1 << 14})

  config.checkpointing = ml_collections.ConfigDict({"every": 1000, "keep": 3, "use_async": True})
  # orbax checkpoints: "" keeps them in W/checkpoints; a local or gs:// folder of its own otherwise
  config.checkpointing.folder = ""
  config.log_every = 50
  config.eval = ml_collections.ConfigDict({"every": 5000, "max_triplets": 10_000})
  # validation files of these label sets too (e.g. the UnAligNet student on the AligNet labels); each
  # sampling's val file must exist (a missing one is refused): leave out a label set that has none
  config.eval.transforms = ("uncertainty_distillation",)
  config.save_item_embeddings = False  # W/item_embeddings.npy: head outputs of every item (small sources)
  config.human_eval = ml_collections.ConfigDict()
  config.human_eval.triplets = str(data_dir() / "things" / "2171trials_humans.txt")
  config.human_eval.format = "odd_last"
  # odd_last: the file's index base; unset: 0, checked (its smallest index must be 0, else refused);
  # 0: 0-based (object 0 may be absent); 1: 1-based, converted
  config.human_eval.index_base = config_dict.placeholder(int)
  config.human_eval.template = ""  # text students: THINGS texts (default: data.template)
  config.human_eval.image_folder = ""  # image students: 1,854 THINGS images, one per concept named by its id

  config.distributed = ml_collections.ConfigDict(
    {"coordinator": "", "num_processes": 1, "process_id": 0, "auto": False}
  )

  if variant in RELEASE_STUDENTS:
    config.backbone, config.data.normalization = RELEASE_STUDENTS[variant]
  elif variant == "minilm":
    config.backbone = "minilm"
    config.data.source = "things_words"
    config.data.samplings = ("cluster_border_10", "random")
    config.tau = 0.0  # fitted at initialisation: MiniLM's output is unit-norm, tau = 100 would flatten it
    config.optimizer.decay_strength = 3.0  # the release's pull toward init, for this run's length
    config.steps, config.batch_size = 300, 64
    config.optimizer.learning_rate, config.optimizer.warmup_steps = 1e-4, 30
    config.checkpointing.every, config.eval.every, config.log_every = 100, 100, 25
  elif variant == "smoke":
    config.random_backbone = ml_collections.ConfigDict(tiny_vit())
    config.data.source = "synthetic"
    config.data.image_size = 16
    config.data.workers = 1
    config.steps, config.batch_size = 100, 32
    config.optimizer.learning_rate, config.optimizer.warmup_steps = 1.5e-4, 5
    config.optimizer.decay_to_init = 0.0
    config.checkpointing.every, config.checkpointing.use_async = 20, False
    config.log_every, config.eval.every = 10, 50
    config.human_eval.triplets = ""
  else:
    raise ValueError(
      f"unknown variant {variant!r}; expected one of {', '.join([*RELEASE_STUDENTS, 'minilm', 'smoke'])}"
    )
  return config
