"""The demo's two tables of stages (text and images) and the one function that runs either.

  extract -> teacher -> generate -> AligNet and UnAligNet students -> evaluate -> report

Text (`make demo`): all-MiniLM-L6-v2 is the teacher's backbone and the student; the items are the
1,854 THINGS concepts; everything is scored on the 2,171 real human triplets and the human RDM.
Images (variant `images`): a generated shapes dataset (tfds `imagenet2012` format, see
`aligned.demo.shapes`) and a tiny random ViT as base model and student; "people" are the class
labels (`aligned.demo.people`). The image variant proves the full-scale image path end to end at toy
size: tfds records by index, host decoding, sharded steps, then every student is read back from its
checkpoint by the extraction stage (head outputs of the train images for the triplet evaluations;
pooled features of train and validation for transfer), scored on the people's held-out triplets and
on a Levels-format file built from the classes (global, local, class boundary), and probed few-shot
and under BREEDS-style subpopulation shift (superclass = shape kind). A random ViT's features carry
colour but not shape kind, so its numbers say nothing about AligNet at scale.

The workdir ends with (text; the image variant has its stores under `embed/` and `features/`):
  things_embeddings.npy                      base model, sorted THINGS order
  teacher/transform.npz                      the human-aligned teacher
  alignet/                                   generated triplets (release format) + manifest.json
  student_things_embeddings.npy              AligNet student (head outputs), sorted order
  untransformed_student_things_embeddings.npy  UnAligNet student (trained on raw-model labels)
  report.md, results.csv, plots/             the evaluation report
  results.json                               the demo's table and the wall time of every stage
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import ml_collections
from etils import epath

from aligned import artifacts, paths
from aligned.demo import people, shapes
from aligned.demo.runner import Stage, StageRun, run_stages
from aligned.evaluate import evaluate
from aligned.extract import extract
from aligned.generation.generate import generate
from aligned.report import write_report
from aligned.student.train import finetune
from aligned.teacher.train import fit_teacher
from aligned.transfer import transfer

STUDENTS = {"alignet_student": "uncertainty_distillation", "unalignet_student": "untransformed"}


@dataclasses.dataclass
class Demo:
  """A demo as data: its stages, the models it evaluates (model -> display name, table order) and the
  extra keys of its results.json, from what the stages returned."""

  stages: list[Stage]
  names: dict[str, str]
  describe: Callable[[StageRun], dict]


def _sub(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """A copy of a stage's config with some fields set (dotted keys as `a__b`)."""
  copy = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    *parents, leaf = key.split("__")
    node = copy
    for p in parents:
      node = node[p]
    node[leaf] = value
  return copy


def _generate(config, folder: epath.Path) -> dict:
  generate(config, folder)
  manifest = json.loads((folder / "manifest.json").read_text())
  artifacts.write_json(folder / "results.json", manifest)  # marks the stage complete
  return manifest


def _student(config, folder: epath.Path) -> dict:
  results = finetune(config, folder)
  if results.get("status") != "completed":  # preempted (SIGTERM): its checkpoint is kept
    raise RuntimeError(
      f"{folder.name} stopped before the end ({results.get('status')}); rerun the demo to resume"
    )
  return results


def _report(config, folder: epath.Path) -> dict:
  return {"differences": write_report(config, folder)["differences"]}


def student_names(seeds) -> dict[str, tuple[str, int]]:
  """{stage name: (label set, seed)}: both students per seed; the first seed keeps the plain names."""
  names = {}
  for k, seed in enumerate(seeds):
    for name, transform in STUDENTS.items():
      names[name if k == 0 else f"{name}_seed{seed}"] = (transform, seed)
  return names


def _generate_and_students(
  config, w: epath.Path, store: str, store_stage: str, student: dict, outputs
) -> list[Stage]:
  """generate -> the students (both label sets, each seed of `config.student_seeds`): the middle of the
  table, the same in both variants.

  `student` holds per-variant overrides of the student config; `outputs(name)` maps a student's stage
  name to the copies of its embeddings into the workdir.
  """
  teacher = str(w / "teacher" / "transform.npz")
  generate_config = _sub(config.generate, store=store, teacher=teacher, similarity=config.teacher.similarity)
  stages = [Stage("generate", "alignet", generate_config, _generate, deps=(store_stage, "teacher"))]
  checkpoints = config.student.checkpointing.get("folder", "")  # a root: each student its own folder
  for name, (transform, seed) in student_names(config.student_seeds).items():
    if checkpoints:
      student = {**student, "checkpointing__folder": os.fspath(paths.as_path(checkpoints) / name)}
    student_config = _sub(
      config.student, data__root=str(w / "alignet"), data__transform=transform, seed=seed, **student
    )
    stages.append(Stage(name, name, student_config, _student, deps=("generate",), outputs=outputs(name)))
  return stages


def _evaluate_and_report(
  config, w: epath.Path, models: dict, names: dict, title: str, transfers: dict | None = None
) -> list[Stage]:
  """One evaluation stage per model ({name: (embeddings, transform, extra overrides, deps)}) + report
  (with the paired differences of the AligNet student against the UnAligNet student and the base, and
  the transfer results of `transfers` ({name: transfer workdir}) beside the models that have them)."""
  stages = [
    Stage(
      f"evaluate {name}",
      f"eval/{name}",
      _sub(config.evaluate, embeddings=str(e), transform=str(t), **extra),
      evaluate,
      deps,
    )
    for name, (e, t, extra, deps) in models.items()
  ]
  report = ml_collections.ConfigDict(
    {
      "runs": ",".join(str(w / "eval" / n) for n in models),
      "names": ",".join(names[n] for n in models),
      "title": title,
      "plots": True,
      "differences": "; ".join(f"{names[a]} vs {names[b]}" for a, b in DIFFERENCES),
      "transfer": ",".join(str(transfers.get(n, "")) for n in models) if transfers else "",
      "seed": 0,
    }
  )
  return [*stages, Stage("report", ".", report, _report, always=True)]


# The comparisons the demo exists for: AligNet against its control and against the model it starts from.
DIFFERENCES = (("alignet_student", "unalignet_student"), ("alignet_student", "base"))


def model_names(base_names: dict, seeds) -> dict[str, str]:
  """Display names of every evaluated model: students of later seeds get "(seed s)"."""
  names = dict(base_names)
  for name, (_, seed) in student_names(seeds).items():
    if name not in names:
      plain = name.rsplit("_seed", 1)[0]
      names[name] = f"{base_names[plain]} (seed {seed})"
  return names


TEXT_NAMES = {
  "reference": "SPoSE 49-d (fit to people)",
  "teacher": "teacher (MiniLM + transform)",
  "alignet_student": "AligNet student",
  "unalignet_student": "UnAligNet student",
}


def text_demo(config, w: epath.Path) -> Demo:
  """The teacher is fit on the THINGS concepts; AligNet triplets are generated over WordNet nouns
  outside THINGS, on which the students train; every model is scored on the THINGS human triplets and
  RDM, items no student trained on (the paper's transfer: teacher on THINGS, students on ImageNet).

  The teacher's backbone reads `config.template` texts (THINGS and WordNet), the students read
  `config.student_template` texts (the paper's teacher backbone is stronger than its students too);
  when the two differ, the students' starting model is evaluated as its own row ("base").
  """
  backbone, transform = w / "things_embeddings.npy", w / "teacher" / "transform.npz"
  split = config.student_template != config.template
  base = w / "start_things_embeddings.npy" if split else backbone
  students = student_names(config.student_seeds)

  def extract_things(name: str, folder: str, template: str, output: epath.Path) -> Stage:
    config_ = _sub(config.extract, template=template)
    return Stage(name, folder, config_, extract, outputs={f"{folder}/embeddings.npy": output.name})

  things = [extract_things("extract", "extract", config.template, backbone)]
  if split:
    things.append(extract_things("extract start", "extract_start", config.student_template, base))
  stages = [
    *things,
    Stage(
      "extract items",
      "extract_items",
      _sub(
        config.extract, source="wordnet_nouns", template=config.template, wordnet=config.wordnet.to_dict()
      ),
      extract,
    ),
    Stage(
      "teacher", "teacher", _sub(config.teacher, embeddings=str(backbone)), fit_teacher, deps=("extract",)
    ),
    *_generate_and_students(
      config,
      w,
      str(w / "extract_items" / "store"),
      "extract items",
      {
        "data__source": "wordnet_nouns",
        "data__wordnet": config.wordnet.to_dict(),
        "data__samplings": config.generate.samplings,
        "data__template": config.student_template,
        "human_eval__template": config.student_template,
      },
      lambda name: {f"{name}/things_embeddings.npy": f"{name}_things_embeddings.npy"},
    ),
  ]
  models = {
    "reference": (config.reference, "", {"embeddings_order": "sorted"}, ()),
    "base": (base, "", {}, ("extract start",) if split else ("extract",)),
    **({"backbone": (backbone, "", {}, ("extract",))} if split else {}),
    "teacher": (backbone, transform, {}, ("extract", "teacher")),
    **{name: (w / f"{name}_things_embeddings.npy", "", {}, (name,)) for name in students},
  }
  names = model_names(TEXT_NAMES, config.student_seeds)
  names["base"] = f"MiniLM {config.student_template} (students' start)"
  names["backbone"] = f"MiniLM {config.template} (teacher's backbone)"
  title = "AligNet demo: MiniLM, teacher on THINGS, students on WordNet nouns, scored on THINGS"

  def describe(done: StageRun) -> dict:
    teacher = done.results["teacher"]
    items = done.results["extract items"]
    return {
      "items": (
        f"teacher: 1,854 THINGS concepts, texts {config.template!r}; students: {items['n_items']:,} "
        f"WordNet nouns outside THINGS, texts {config.student_template!r}"
      ),
      "teacher": {
        "chosen": teacher["chosen"],
        "temperature": teacher["temperature"],
        "base_temperature": teacher["base_temperature"],
        "cv_summary": teacher["cv_summary"],
      },
      "labels": _labels(done.results["generate"]),
    }

  kept = {k: v for k, v in names.items() if k in models}
  return Demo([*stages, *_evaluate_and_report(config, w, models, kept, title)], kept, describe)


def _labels(manifest: dict) -> dict:
  """Each label set's temperature and mean label entropy (nats; uniform is log 3 = 1.0986)."""
  return {
    transform: {"temperature": manifest["temperatures"][transform], "mean_entropy": entropy}
    for transform, entropy in ((t, e["train"]) for t, e in manifest["label_entropy"].items())
  }


IMAGE_NAMES = {
  "base": "random ViT (base)",
  "teacher": "teacher (ViT + transform)",
  "alignet_student": "AligNet student",
  "unalignet_student": "UnAligNet student",
}


def _shapes(config, folder: epath.Path) -> dict:
  return {"folder": str(shapes.build_shapes_dataset(folder, **config.to_dict()))}


def image_demo(config, w: epath.Path) -> Demo:
  """A tiny random ViT on generated shapes; "people" are the class labels.

  Every model is evaluated as a trained student would be at full scale, from files a command wrote:
  triplet accuracy on the people's held-out triplets and the Levels-format file (head outputs of the
  train images, `embed/NAME/store`), few-shot and subpopulation-shift probes (pooled features of the
  train and validation images, `features/NAME/{train,validation}/store`).
  """
  paths.require_local(w, "the image demo builds its shapes dataset in W/tfds as array_record, read by C++")
  data_dir, human = w / "tfds", w / "human"
  base, transform = w / "item_embeddings.npy", w / "teacher" / "transform.npz"
  extract_config = _sub(config.extract, data_dir=str(data_dir))
  people_config = ml_collections.ConfigDict(
    {
      "store": str(w / "extract" / "store"),
      "hierarchy": str(data_dir / shapes.DATASET / shapes.HIERARCHY_FILE),
      "n_eval_triplets": config.n_eval_triplets,
      "n_teacher_triplets": config.n_teacher_triplets,
      "n_levels_triplets": config.n_levels_triplets,
      "seed": config.seed,
    }
  )
  teacher_config = _sub(
    config.teacher,
    embeddings=str(base),
    triplets=str(human / people.TRAIN_FILE),
    eval_triplets=(str(human / people.EVAL_FILE),),
    eval_formats=("odd_last",),
    index_base=0,  # the people's files are 0-based; a sample of them may lack object 0
    eval_index_bases=(0,),
  )
  stages = [
    Stage("shapes", "tfds", config.shapes, _shapes, always=True),
    Stage("extract", "extract", extract_config, extract),
    Stage("extract validation", "extract_validation", _sub(extract_config, split="validation"), extract),
    Stage(
      "people",
      "human",
      people_config,
      people.simulate_people,
      ("extract",),
      {f"human/{people.EMBEDDINGS_FILE}": base.name},
    ),
    Stage("teacher", "teacher", teacher_config, fit_teacher, deps=("extract", "people")),
    *_generate_and_students(
      config,
      w,
      str(w / "extract" / "store"),
      "extract",
      {"data__samplings": config.generate.samplings, "data__tfds_data_dir": str(data_dir)},
      lambda name: {},
    ),
  ]
  students = student_names(config.student_seeds)
  for name in students:  # each trained student read back from its checkpoint by extraction
    student = _sub(extract_config, student=str(w / name))
    stages += [
      Stage(f"embed {name}", f"embed/{name}", _sub(student, student_output="head"), extract, deps=(name,)),
      Stage(
        f"features {name}",
        f"features/{name}/train",
        _sub(student, student_output="pooled"),
        extract,
        deps=(name,),
      ),
      Stage(
        f"features {name} validation",
        f"features/{name}/validation",
        _sub(student, student_output="pooled", split="validation"),
        extract,
        deps=(name,),
      ),
    ]

  levels = {"levels": str(human / people.LEVELS_FILE)}
  held_out = {"triplets": str(human / people.EVAL_FILE), "index_base": 0, **levels}
  base_store = str(w / "extract" / "store")
  models = {
    "base": (base, "", {**held_out, "levels_embeddings": base_store}, ("extract", "people")),
    "teacher": (
      base,
      transform,
      {**held_out, "levels_embeddings": base_store},
      ("extract", "people", "teacher"),
    ),
    **{
      name: (
        w / "embed" / name / "store",
        "",
        {**held_out, "levels_embeddings": str(w / "embed" / name / "store")},
        (f"embed {name}", "people"),
      )
      for name in students
    },
  }
  superclasses = str(data_dir / shapes.DATASET / shapes.SUPERCLASS_FILE)
  transfer_stores = {
    "base": (
      (w / "extract" / "store", w / "extract_validation" / "store"),
      ("extract", "extract validation"),
    ),
    **{
      name: (
        (w / "features" / name / "train" / "store", w / "features" / name / "validation" / "store"),
        (f"features {name}", f"features {name} validation"),
      )
      for name in students
    },
  }
  for name, (stores, deps) in transfer_stores.items():
    transfer_config = _sub(config.transfer, stores=tuple(str(s) for s in stores), superclasses=superclasses)
    stages.append(Stage(f"transfer {name}", f"transfer/{name}", transfer_config, transfer, deps=deps))
  names = model_names(IMAGE_NAMES, config.student_seeds)
  title = "AligNet image demo: random ViT on generated shapes"
  transfers = {name: w / "transfer" / name for name in transfer_stores}
  stages += _evaluate_and_report(config, w, models, names, title, transfers)
  return Demo(
    stages,
    names,
    lambda done: {
      "items": done.results["people"]["items"],
      "labels": _labels(done.results["generate"]),
      "levels_triplets": done.results["people"].get("levels"),
      "transfer": {names[n]: _transfer_summary(done.results[f"transfer {n}"]) for n in transfer_stores},
    },
  )


def _transfer_summary(results: dict) -> dict:
  """Few-shot accuracies (mean over seeds) per dataset, method and k, and the shift accuracies."""
  fewshot = {
    f"{dataset}/{method}/{k}-shot": v["mean"]
    for dataset, methods in results["fewshot"].items()
    for method, per_k in methods.items()
    for k, v in per_k.items()
  }
  return {"fewshot": fewshot, "shift": results["shift"]}


DEMOS = {"text": text_demo, "images": image_demo}


def run_demo(config: ml_collections.ConfigDict, workdir: str | os.PathLike, log=print) -> dict:
  """Runs the demo of `config.variant` (text or images) in `workdir`; returns its table."""
  if config.variant not in DEMOS:
    raise ValueError(f"unknown demo variant {config.variant!r}; expected one of {', '.join(DEMOS)}")
  workdir = paths.absolute(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  artifacts.write_json(workdir / "config.json", config.to_dict())
  total = time.perf_counter()
  demo = DEMOS[config.variant](config, workdir)
  done = run_stages(demo.stages, workdir, log)
  evaluations = {name: done.results[f"evaluate {name}"] for name in demo.names}
  results = {**_summary(config, evaluations, done, demo.names, total), **demo.describe(done)}
  artifacts.write_json(workdir / "results.json", results)  # written last: the demo is complete
  return results


def _student_summary(results: dict, transform: str) -> dict:
  final = results["final"]
  aligned_labels = [
    v
    for k, v in final.items()
    if k.startswith("val/")
    and k.endswith("/accuracy")
    and ("@uncertainty_distillation/" in k or ("@" not in k and transform == "uncertainty_distillation"))
  ]
  return {
    "steps": results["steps"],
    "tau": results.get("tau"),
    "decay_rate": results.get("decay_rate"),
    "final": final,
    # agreement with the teacher's most similar pair on held-out generated triplets (mean over the
    # AligNet validation files; the teacher agrees with itself on all of them)
    "teacher_agreement": _mean(aligned_labels),
  }


def _mean(values: list) -> float | None:
  return sum(values) / len(values) if values else None


def _seed_spread(config, evaluations: dict, names: dict) -> dict:
  """Per student kind, the human accuracy of its students over the seeds: mean, std, min, max."""
  out = {}
  for kind in STUDENTS:
    runs = [n for n in student_names(config.student_seeds) if n == kind or n.startswith(f"{kind}_seed")]
    accuracies = [evaluations[n]["accuracy"] for n in runs]
    mean = sum(accuracies) / len(accuracies)
    spread = sum((a - mean) ** 2 for a in accuracies) / max(len(accuracies) - 1, 1)
    out[names[kind]] = {
      "seeds": list(config.student_seeds),
      "accuracies": accuracies,
      "mean": mean,
      "std": spread**0.5,
      "min": min(accuracies),
      "max": max(accuracies),
    }
  return out


def _summary(config, evaluations: dict, done, names: dict, total: float) -> dict:
  table = [
    {
      "model": names[name],
      "accuracy": r["accuracy"],
      "accuracy_ci95": r.get("accuracy_ci95"),
      "mean_human_choice_prob": r["mean_human_choice_prob"],
      "rsa_spearman": r.get("rsa_spearman"),
      **(
        {"levels": {level: v["accuracy"] for level, v in r["levels"]["per_level"].items()}}
        if "levels" in r
        else {}
      ),
    }
    for name, r in evaluations.items()
  ]
  first = next(iter(evaluations.values()))
  return {
    "triplets": first["triplets"],
    "n_triplets": first["n_triplets"],
    "chance": 1 / 3,
    "noise_ceiling": first.get("noise_ceiling"),
    "table": table,
    "differences": done.results["report"]["differences"],
    "seeds": _seed_spread(config, evaluations, names),
    "students": {
      name: _student_summary(done.results[name], transform)
      for name, (transform, _) in student_names(config.student_seeds).items()
    },
    "timings_s": done.timings,
    "wall_s": time.perf_counter() - total,
  }


def format_results(results: dict) -> str:
  def pct(x):
    return "   n/a" if x is None else f"{100 * x:6.2f} %"

  width = max(32, *(len(row["model"]) for row in results["table"]))
  lines = [
    f"AligNet demo: {results['items']}; {results['n_triplets']} triplets of {results['triplets']}",
    f"{'model':{width}s} {'accuracy':>9s} {'RSA rho':>8s}",
  ]
  for row in results["table"]:
    rho = "n/a" if row["rsa_spearman"] is None else f"{row['rsa_spearman']:.3f}"
    lines.append(f"{row['model']:{width}s} {pct(row['accuracy'])} {rho:>8s}")
  lines.append(f"{'chance':{width}s} {pct(results['chance'])}")
  if any("levels" in row for row in results["table"]):
    lines.append(f"{'Levels-format accuracy':{width}s} {'global':>9s} {'local':>9s} {'boundary':>9s}")
    for row in results["table"]:
      if "levels" in row:
        levels = row["levels"]
        cells = " ".join(pct(levels.get(k)) for k in ("between_class", "within_class", "class_boundary"))
        lines.append(f"{row['model']:{width}s} {cells}")
  lines.append(
    f"{'noise ceiling':{width}s}    n/a (one response per triplet)"
    if results["noise_ceiling"] is None
    else f"{'noise ceiling':{width}s} {pct(results['noise_ceiling'])}"
  )
  for d in results["differences"]:
    lo, hi = d["ci95"]
    lines.append(
      f"{d['a']} - {d['b']}: {100 * d['difference']:+.2f} points [{100 * lo:+.2f}, {100 * hi:+.2f}] "
      "(95 %, paired bootstrap over triplets)"
    )
  if len(next(iter(results["seeds"].values()))["seeds"]) > 1:
    for name, spread in results["seeds"].items():
      lines.append(
        f"{name} over seeds {spread['seeds']}: {100 * spread['mean']:.2f} % +- {100 * spread['std']:.2f} "
        f"(min {100 * spread['min']:.2f}, max {100 * spread['max']:.2f})"
      )
  for transform, label in results.get("labels", {}).items():
    lines.append(
      f"{transform} labels: temperature {label['temperature']:.4g}, mean entropy {label['mean_entropy']:.4f} nats"
    )
  for name, student in results["students"].items():
    if student.get("teacher_agreement") is not None:
      lines.append(
        f"{name}: tau {student['tau']:.4g}, agrees with the teacher on "
        f"{100 * student['teacher_agreement']:.2f} % of held-out generated triplets"
      )
  for model, probes in results.get("transfer", {}).items():
    cells = [f"{k} {pct(v).strip()}" for k, v in probes["fewshot"].items()]
    cells += [
      f"{k} unseen {pct(v['target']).strip()} (seen {pct(v['source']).strip()})"
      for k, v in probes["shift"].items()
      if "target" in v  # BREEDS-style: seen and unseen subclasses
    ]
    lines.append(f"transfer, {model}: {'; '.join(cells)}")
  stages = ", ".join(f"{k} {v:.0f} s" for k, v in results["timings_s"].items() if v is not None)
  lines.append(f"wall time {results['wall_s']:.0f} s ({stages})")
  return "\n".join(lines)
