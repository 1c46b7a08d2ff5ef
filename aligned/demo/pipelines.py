"""The demo's two tables of stages (text and images) and the one function that runs either.

  extract -> teacher -> generate -> AligNet and UnAligNet students -> evaluate -> report

Text (`make demo`): all-MiniLM-L6-v2 is the teacher's backbone and the student; the items are the
1,854 THINGS concepts; everything is scored on the 2,171 real human triplets and the human RDM.
Images (variant `images`): a generated shapes dataset (tfds `imagenet2012` format, see
`aligned.demo.shapes`) and a tiny random ViT as base model and student; "people" are the class
labels (`aligned.demo.people`). The image variant proves the image path end to end (tfds records by
index, host decoding, sharded steps); a random ViT's features carry colour but not shape kind, so
its numbers say nothing about AligNet at scale.

The workdir ends with (text; the image variant has `*_item_embeddings.npy` instead):
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
import pathlib
import time
from collections.abc import Callable

import ml_collections

from aligned import artifacts
from aligned.demo import people, shapes
from aligned.demo.runner import Stage, StageRun, run_stages
from aligned.evaluate import evaluate
from aligned.extract import extract
from aligned.generation.generate import generate
from aligned.report import write_report
from aligned.student.train import finetune
from aligned.teacher.train import fit_teacher

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


def _generate(config, folder: pathlib.Path) -> dict:
  generate(config, folder)
  manifest = json.loads((folder / "manifest.json").read_text())
  artifacts.write_json(folder / "results.json", manifest)  # marks the stage complete
  return manifest


def _student(config, folder: pathlib.Path) -> dict:
  results = finetune(config, folder)
  if results.get("status") != "completed":  # preempted (SIGTERM): its checkpoint is kept
    raise RuntimeError(
      f"{folder.name} stopped before the end ({results.get('status')}); rerun the demo to resume"
    )
  return results


def _report(config, folder: pathlib.Path) -> dict:
  write_report(config, folder)
  return {}


def _generate_and_students(config, w: pathlib.Path, store: str, student: dict, outputs: dict) -> list[Stage]:
  """generate -> both students: the middle of the table, the same in both variants.

  `student` holds per-variant overrides of the student config; `outputs` maps a student's stage name
  to the copies of its embeddings into the workdir.
  """
  teacher = str(w / "teacher" / "transform.npz")
  generate_config = _sub(config.generate, store=store, teacher=teacher, similarity=config.teacher.similarity)
  stages = [Stage("generate", "alignet", generate_config, _generate, deps=("extract", "teacher"))]
  for name, transform in STUDENTS.items():
    student_config = _sub(config.student, data__root=str(w / "alignet"), data__transform=transform, **student)
    stages.append(Stage(name, name, student_config, _student, deps=("generate",), outputs=outputs[name]))
  return stages


def _evaluate_and_report(config, w: pathlib.Path, models: dict, names: dict, title: str) -> list[Stage]:
  """One evaluation stage per model ({name: (embeddings, transform, extra overrides, deps)}) + report."""
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
    }
  )
  return [*stages, Stage("report", ".", report, _report, always=True)]


TEXT_NAMES = {
  "reference": "SPoSE 49-d (fit to people)",
  "base": "MiniLM (base)",
  "teacher": "teacher (MiniLM + transform)",
  "alignet_student": "AligNet student",
  "unalignet_student": "UnAligNet student",
}


def text_demo(config, w: pathlib.Path) -> Demo:
  """MiniLM on the THINGS concepts, scored on the real human triplets and RDM."""
  base, transform = w / "things_embeddings.npy", w / "teacher" / "transform.npz"
  stages = [
    Stage(
      "extract",
      "extract",
      _sub(config.extract, template=config.template),
      extract,
      outputs={"extract/embeddings.npy": base.name},
    ),
    Stage("teacher", "teacher", _sub(config.teacher, embeddings=str(base)), fit_teacher, deps=("extract",)),
    *_generate_and_students(
      config,
      w,
      str(w / "extract" / "store"),
      {"data__samplings": config.generate.samplings, "data__template": config.template},
      {
        "alignet_student": {"alignet_student/things_embeddings.npy": "student_things_embeddings.npy"},
        "unalignet_student": {
          "unalignet_student/things_embeddings.npy": "untransformed_student_things_embeddings.npy"
        },
      },
    ),
  ]
  models = {
    "reference": (config.reference, "", {"embeddings_order": "sorted"}, ()),
    "base": (base, "", {}, ("extract",)),
    "teacher": (base, transform, {}, ("extract", "teacher")),
    "alignet_student": (w / "student_things_embeddings.npy", "", {}, ("alignet_student",)),
    "unalignet_student": (w / "untransformed_student_things_embeddings.npy", "", {}, ("unalignet_student",)),
  }
  title = "AligNet demo: MiniLM on THINGS"

  def describe(done: StageRun) -> dict:
    teacher = done.results["teacher"]
    return {
      "items": f"1,854 THINGS concepts, texts {config.template!r}",
      "teacher": {k: teacher.get(k) for k in ("best", "temperature") if k in teacher},
    }

  return Demo([*stages, *_evaluate_and_report(config, w, models, TEXT_NAMES, title)], TEXT_NAMES, describe)


IMAGE_NAMES = {
  "base": "random ViT (base)",
  "teacher": "teacher (ViT + transform)",
  "alignet_student": "AligNet student",
  "unalignet_student": "UnAligNet student",
}


def _shapes(config, folder: pathlib.Path) -> dict:
  return {"folder": str(shapes.build_shapes_dataset(folder, **config.to_dict()))}


def image_demo(config, w: pathlib.Path) -> Demo:
  """A tiny random ViT on generated shapes; "people" are the class labels."""
  data_dir, human = w / "tfds", w / "human"
  base, transform = w / "item_embeddings.npy", w / "teacher" / "transform.npz"
  people_config = ml_collections.ConfigDict(
    {
      "store": str(w / "extract" / "store"),
      "hierarchy": str(data_dir / shapes.DATASET / shapes.HIERARCHY_FILE),
      "n_eval_triplets": config.n_eval_triplets,
      "n_teacher_triplets": config.n_teacher_triplets,
      "seed": config.seed,
    }
  )
  teacher_config = _sub(
    config.teacher,
    embeddings=str(base),
    triplets=str(human / people.TRAIN_FILE),
    eval_triplets=(str(human / people.EVAL_FILE),),
    eval_formats=("odd_last",),
  )
  stages = [
    Stage("shapes", "tfds", config.shapes, _shapes, always=True),
    Stage("extract", "extract", _sub(config.extract, data_dir=str(data_dir)), extract),
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
      {"data__samplings": config.generate.samplings, "data__tfds_data_dir": str(data_dir)},
      {name: {f"{name}/item_embeddings.npy": f"{name}_item_embeddings.npy"} for name in STUDENTS},
    ),
  ]
  held_out = {"triplets": str(human / people.EVAL_FILE)}
  models = {
    "base": (base, "", held_out, ("extract",)),
    "teacher": (base, transform, held_out, ("extract", "teacher")),
    **{name: (w / f"{name}_item_embeddings.npy", "", held_out, (name,)) for name in STUDENTS},
  }
  title = "AligNet image demo: random ViT on generated shapes"
  stages += _evaluate_and_report(config, w, models, IMAGE_NAMES, title)
  return Demo(stages, IMAGE_NAMES, lambda done: {"items": done.results["people"]["items"]})


DEMOS = {"text": text_demo, "images": image_demo}


def run_demo(config: ml_collections.ConfigDict, workdir: str | os.PathLike, log=print) -> dict:
  """Runs the demo of `config.variant` (text or images) in `workdir`; returns its table."""
  if config.variant not in DEMOS:
    raise ValueError(f"unknown demo variant {config.variant!r}; expected one of {', '.join(DEMOS)}")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  artifacts.write_json(workdir / "config.json", config.to_dict())
  total = time.perf_counter()
  demo = DEMOS[config.variant](config, workdir)
  done = run_stages(demo.stages, workdir, log)
  evaluations = {name: done.results[f"evaluate {name}"] for name in demo.names}
  results = {**_summary(evaluations, done, demo.names, total), **demo.describe(done)}
  artifacts.write_json(workdir / "results.json", results)  # written last: the demo is complete
  return results


def _summary(evaluations: dict, done, names: dict, total: float) -> dict:
  table = [
    {
      "model": names[name],
      "accuracy": r["accuracy"],
      "accuracy_ci95": r.get("accuracy_ci95"),
      "mean_human_choice_prob": r["mean_human_choice_prob"],
      "rsa_spearman": r.get("rsa_spearman"),
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
    "students": {
      name: {"steps": done.results[name]["steps"], "final": done.results[name]["final"]} for name in STUDENTS
    },
    "timings_s": done.timings,
    "wall_s": time.perf_counter() - total,
  }


def format_results(results: dict) -> str:
  def pct(x):
    return "   n/a" if x is None else f"{100 * x:6.2f} %"

  lines = [
    f"AligNet demo: {results['items']}; {results['n_triplets']} triplets of {results['triplets']}",
    f"{'model':32s} {'accuracy':>9s} {'RSA rho':>8s}",
  ]
  for row in results["table"]:
    rho = "n/a" if row["rsa_spearman"] is None else f"{row['rsa_spearman']:.3f}"
    lines.append(f"{row['model']:32s} {pct(row['accuracy'])} {rho:>8s}")
  lines.append(f"{'chance':32s} {pct(results['chance'])}")
  lines.append(
    f"{'noise ceiling':32s}    n/a (one response per triplet)"
    if results["noise_ceiling"] is None
    else f"{'noise ceiling':32s} {pct(results['noise_ceiling'])}"
  )
  stages = ", ".join(f"{k} {v:.0f} s" for k, v in results["timings_s"].items() if v is not None)
  lines.append(f"wall time {results['wall_s']:.0f} s ({stages})")
  return "\n".join(lines)
