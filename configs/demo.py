"""The main job: AligNet in miniature on real human data, end to end (offline, 2 CPU cores, minutes).

  python -m experiments.demo --config=configs/demo.py --workdir=runs/demo     (what `make demo` runs)

all-MiniLM-L6-v2 is both the teacher's backbone and the student; the items are the 1,854 THINGS
concepts (texts from `template`). Stages (each skipped when its results.json exists, so a killed demo
resumes): extract -> teacher (uncertainty distillation, CV lambda, SPoSE stand-in) -> generate
(cluster_border_K + random, teacher- and raw-labelled) -> fine-tune the AligNet and UnAligNet students
-> evaluate base, teacher and both students on the 2,171 human triplets and the human RDM48 -> report.

Every stage's config is a sub-config: override anything, e.g. --config.student.steps=100
--config.teacher.lambdas="(0.1,)" --config.template="{word}: {definition}".
"""

import ml_collections

from configs import evaluate as evaluate_config
from configs import extract as extract_config
from configs import finetune as finetune_config
from configs import generate as generate_config
from configs import teacher as teacher_config


def get_config(variant: str = "text") -> ml_collections.ConfigDict:
  if variant != "text":
    raise ValueError(f"unknown variant {variant!r}; expected text")
  config = ml_collections.ConfigDict()
  config.template = "{word}"  # texts of the THINGS concepts, for extraction and the students

  config.extract = extract_config.get_config("things_minilm_word")

  config.teacher = teacher_config.get_config("distill")
  config.teacher.standin.n_triplets = 100_000
  config.teacher.lambdas = (1e-2, 1e-1, 1.0)

  config.generate = generate_config.get_config("release")
  config.generate.samplings = ("cluster_border_20", "random")
  config.generate.n_train, config.generate.n_val = 20_000, 1_000
  config.generate.chunk = 1 << 14

  config.student = finetune_config.get_config("minilm")

  config.evaluate = evaluate_config.get_config("spose")
  config.evaluate.embeddings = ""  # set per model by the demo
  config.evaluate.bootstrap = 200
  config.reference = evaluate_config.get_config("spose").embeddings  # SPoSE 49-d: a model fit to people
  return config
