"""The main job: AligNet in miniature on real human data, end to end (offline, 2 CPU cores, minutes).

  aligned-demo --config=demo --workdir=runs/demo     (what `make demo` runs)

A transfer test, like the paper's (teacher fit on THINGS, students trained on ImageNet, evaluated on
THINGS): all-MiniLM-L6-v2 is the teacher's backbone (texts `template`, default "{word}:
{definition}") and the students (texts `student_template`, default "{word}"). The teacher is fit on the
1,854 THINGS concepts; AligNet triplets are generated over `wordnet.n_items` concrete WordNet nouns
outside THINGS, on which the students train; every model is scored on the 2,171 human THINGS triplets
and the human RDM48, items no student saw. Stages (each skipped when done, so a killed demo resumes):
extract (THINGS; the students' start; the WordNet nouns) -> teacher (W, b at T = 1 then T; lambda by
3-fold CV on the SPoSE stand-in) -> generate (cluster_border_20 + random, labelled by the teacher and
by the raw backbone at its own temperature) -> the AligNet and UnAligNet students -> evaluate ->
report (with paired-bootstrap differences).

Variants: text (default), word ({word} texts everywhere), definitions (students read definitions
too: each step costs 3x), seeds (each student with seeds 0, 1, 2; the spread is reported), images.

Variant `images` (`--config=demo:images`): the same stages on a generated shapes dataset
(imagenet2012 format, read through tfds) with a tiny random-initialised ViT; "people" are triplets
whose odd one out is of another class (colour x shape kind), and a Levels-format file built from the
classes. Each student is read back from its checkpoint by extraction, evaluated on the held-out
triplets and the Levels file, and probed few-shot and under subpopulation shift. Minutes on CPU; it
proves the full-scale image path end to end.

Every stage's config is a sub-config: override anything, e.g. --config.student.steps=100
--config.teacher.lambdas="(0.1,)" --config.wordnet.n_items=10000 --config.student_template="{word}".
"""

import ml_collections

from aligned.configs import evaluate as evaluate_config
from aligned.configs import extract as extract_config
from aligned.configs import finetune as finetune_config
from aligned.configs import generate as generate_config
from aligned.configs import teacher as teacher_config
from aligned.configs import transfer as transfer_config
from aligned.configs.common import tiny_vit, wordnet_nouns

WORDNET_ITEMS = 5_000

# The image demo's base model and student: the tiny ViT, wider (64) and on 32 x 32 images, with random
# weights (same seed for both). With transformers' default initializer_range 0.02 the [CLS] output
# hardly depends on the image (the spread across images is 0.6 % of the mean); 1.0 makes it 22 %,
# enough for a teacher to work with.
TINY_VIT = tiny_vit(
  hidden_size=64,
  num_attention_heads=4,
  intermediate_size=128,
  image_size=32,
  patch_size=8,
  initializer_range=1.0,
)


def get_config(variant: str = "text") -> ml_collections.ConfigDict:
  if variant == "images":
    return image_config()
  if variant not in ("text", "word", "definitions", "seeds"):
    raise ValueError(f"unknown variant {variant!r}; expected text, word, definitions, seeds or images")
  config = ml_collections.ConfigDict()
  config.variant = "text"
  # texts of the teacher's backbone (THINGS concepts, and the WordNet nouns it labels) and of the
  # students (WordNet nouns in training, THINGS concepts in evaluation). A student step on definition
  # texts costs 3x one on words (1.95 vs 0.60 s at 32 vs 8 tokens, batch 32, 2 cores).
  config.template = "{word}" if variant == "word" else "{word}: {definition}"
  config.student_template = "{word}: {definition}" if variant == "definitions" else "{word}"
  config.wordnet = wordnet_nouns(n_items=WORDNET_ITEMS)  # the students' items: nouns outside THINGS
  config.student_seeds = (0, 1, 2) if variant == "seeds" else (0,)

  config.extract = extract_config.get_config("things_minilm_word")

  # 200 k stand-in triplets per fit (the final one and each of 3 CV folds, sampled within the fold's
  # objects). With {word}: {definition}: lambda 0.1 chosen, 59.65 % on the human triplets (60 k: 58.77 %)
  config.teacher = teacher_config.get_config("distill")
  config.teacher.standin.n_triplets = 200_000
  config.teacher.lambdas = (1e-2, 1e-1, 1.0)
  config.teacher.folds = 3

  config.generate = generate_config.get_config("release")
  config.generate.samplings = ("cluster_border_20", "random")
  config.generate.n_train, config.generate.n_val = 20_000, 1_000
  config.generate.chunk = 1 << 14
  config.generate.indices = "store_rows"  # WordNet noun texts: indices are rows of the nouns' store

  config.student = finetune_config.get_config("minilm")
  # 150 steps of 32 triplets, evaluated at the end only: the AligNet student (10 k nouns) reached
  # 51.8 % at step 100, 52.6 % at 200 and 52.5 % at 300 with evaluations every 100 steps
  config.student.steps, config.student.batch_size = 150, 32
  config.student.eval.every, config.student.eval.max_triplets = 0, 1_000

  config.evaluate = evaluate_config.get_config("spose")
  config.evaluate.embeddings = ""  # set per model by the demo
  config.evaluate.bootstrap = 200
  config.reference = evaluate_config.get_config("spose").embeddings  # SPoSE 49-d: a model fit to people
  return config


def image_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.variant = "images"
  config.seed = 0
  config.student_seeds = (0,)
  config.shapes = ml_collections.ConfigDict(
    {"n_per_class": 40, "n_val_per_class": 10, "image_size": 64, "seed": 0}
  )
  config.n_teacher_triplets = 20_000
  config.n_eval_triplets = 2_000
  config.n_levels_triplets = 300  # per level (global, local, class boundary)

  config.extract = extract_config.get_config("imagenet")
  config.extract.random_backbone = ml_collections.ConfigDict(TINY_VIT)
  config.extract.image_size = 32
  config.extract.batch_size, config.extract.shard_size = 64, 256

  config.teacher = teacher_config.get_config("distill")
  config.teacher.lambdas = (1e-2, 1e-1, 1.0)
  config.teacher.folds = 2
  config.teacher.objective = "hard"  # one "response" per triplet

  config.generate = generate_config.get_config("release")
  config.generate.samplings = ("cluster_border_8", "class_border")
  config.generate.n_train, config.generate.n_val = 8_000, 500
  config.generate.chunk = 1 << 12
  config.generate.indices = "store_rows"  # the shapes' train split, not ImageNet's

  config.student = finetune_config.get_config("vit_b16")
  config.student.random_backbone = ml_collections.ConfigDict(TINY_VIT)
  config.student.seed = config.extract.seed
  config.student.data.image_size = 32
  config.student.data.workers = 2
  config.student.human_eval.triplets = ""
  config.student.steps, config.student.batch_size = 200, 32
  config.student.optimizer.learning_rate, config.student.optimizer.warmup_steps = 3e-4, 20
  config.student.checkpointing.every, config.student.eval.every, config.student.log_every = 100, 100, 20

  config.evaluate = evaluate_config.get_config("")
  config.evaluate.categories = False
  config.evaluate.bootstrap = 200

  # few-shot (train -> validation) and BREEDS-style shift (superclass = shape kind), pooled features
  config.transfer = transfer_config.get_config("")
  config.transfer.fewshot = ("imagenet2012/train->imagenet2012/validation",)
  config.transfer.breeds = ("imagenet2012/train->imagenet2012/validation",)
  config.transfer.shots = (1, 5, 10)
  return config
