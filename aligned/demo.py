"""The whole AligNet pipeline in one call: `run_demo(config, workdir)` (what experiments.demo runs).

  extract -> teacher -> generate -> AligNet and UnAligNet students -> evaluate -> report

Each stage writes into its own folder under `workdir` and is skipped when its results.json exists
(the stages themselves resume too), so rerunning a killed demo continues where it stopped. The
workdir ends with:
  things_embeddings.npy                      base model, sorted THINGS order
  teacher/transform.npz                      the human-aligned teacher
  alignet/                                   generated triplets (release format) + manifest.json
  student_things_embeddings.npy              AligNet student (head outputs), sorted order
  untransformed_student_things_embeddings.npy  UnAligNet student (trained on raw-model labels)
  report.md, results.csv, plots/             the evaluation report
  results.json                               the demo's table and the wall time of every stage

`run_image_demo` (variant `images`) runs the same stages on images: a generated shapes dataset (4
shape kinds x 3 colours, stored as `imagenet2012` for tfds) and a tiny random-initialised ViT as base
model and student. Its "people" are the classes: triplets whose odd one out is the image of another
class (colour x shape kind), split into a training file for the teacher and a held-out file for
evaluation. It proves the image path end to end (tfds records by index, host decoding, sharded
steps). A random ViT's features carry colour but not shape kind (odd one out by shape kind: 34 %,
chance), so shape-kind triplets would leave the teacher nothing to align; its numbers say nothing
about AligNet at scale.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

import ml_collections

from aligned import artifacts

NAMES = {
  "reference": "SPoSE 49-d (fit to people)",
  "base": "MiniLM (base)",
  "teacher": "teacher (MiniLM + transform)",
  "alignet_student": "AligNet student",
  "unalignet_student": "UnAligNet student",
}


class _Stages:
  """Runs the stages in order. A stage is skipped when it finished before (results.json) with the same
  config and none of its inputs was recomputed in this run; a stage whose config changed, or whose
  inputs were recomputed, starts again from an empty folder; an unfinished one resumes."""

  def __init__(self, log):
    self.log, self.ran, self.timings = log, set(), {}

  def run(self, name: str, folder: pathlib.Path, config, job, deps=()) -> dict:
    current = json.loads(json.dumps(config.to_dict()))
    record = folder / "stage_config.json"
    changed = record.exists() and json.loads(record.read_text()) != current
    upstream = sorted(d for d in deps if d in self.ran)
    if (folder / "results.json").exists() and not changed and not upstream:
      self.log(f"[{name}] done before: {folder}")
      self.timings[name] = None
      return json.loads((folder / "results.json").read_text())
    if folder.exists() and (changed or upstream):
      why = "its settings changed" if changed else f"{', '.join(upstream)} recomputed"
      self.log(f"[{name}] starting again ({why})")
      shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(record, current)
    self.log(f"[{name}] ...")
    start = time.perf_counter()
    results = job(config, folder)
    self.timings[name] = time.perf_counter() - start
    self.ran.add(name)
    self.log(f"[{name}] {self.timings[name]:.0f} s")
    return results


EVAL_DEPS = {
  "reference": (),
  "base": ("extract",),
  "teacher": ("extract", "teacher"),
  "alignet_student": ("alignet_student",),
  "unalignet_student": ("unalignet_student",),
}


def _generate_stage(config, workdir: pathlib.Path, stages: _Stages, store: str, similarity: str) -> None:
  """AligNet files labelled by the teacher in workdir/teacher and by the raw store (workdir/alignet)."""
  generate_config = ml_collections.ConfigDict(config.generate.to_dict())
  generate_config.store, generate_config.teacher = store, str(workdir / "teacher" / "transform.npz")
  generate_config.similarity = similarity
  stages.run("generate", workdir / "alignet", generate_config, _generate, deps=("extract", "teacher"))


def _generate(config, folder: pathlib.Path) -> dict:
  from aligned.generation.generate import generate

  generate(config, folder)
  manifest = json.loads((folder / "manifest.json").read_text())
  artifacts.write_json(folder / "results.json", manifest)  # marks the stage complete
  return manifest


def _train_student(stages: _Stages, name: str, folder: pathlib.Path, config) -> dict:
  from aligned.student.train import finetune

  results = stages.run(name, folder, config, finetune, deps=("generate",))
  if results.get("status") != "completed":  # preempted (SIGTERM): its checkpoint is kept
    raise RuntimeError(f"{name} stopped before the end ({results.get('status')}); rerun the demo to resume")
  return results


def _evaluate_and_report(config, workdir, stages, inputs, names, title, triplets="", orders=None) -> dict:
  """Evaluates every model of `inputs` ({name: (embeddings, transform)}) and writes the report."""
  from aligned.evaluate import evaluate
  from aligned.report import write_report

  evaluations = {}
  for name, (embeddings, transform) in inputs.items():
    eval_config = ml_collections.ConfigDict(config.evaluate.to_dict())
    eval_config.embeddings, eval_config.transform = str(embeddings), str(transform)
    eval_config.embeddings_order = (orders or {}).get(name, eval_config.embeddings_order)
    if triplets:
      eval_config.triplets = str(triplets)
    folder = workdir / "eval" / name
    evaluations[name] = stages.run(f"evaluate {name}", folder, eval_config, evaluate, deps=EVAL_DEPS[name])
  report_config = ml_collections.ConfigDict(
    {
      "runs": ",".join(str(workdir / "eval" / n) for n in inputs),
      "names": ",".join(names[n] for n in inputs),
      "title": title,
      "plots": True,
    }
  )
  start = time.perf_counter()
  write_report(report_config, workdir)
  stages.timings["report"] = time.perf_counter() - start
  return evaluations


def _copy(source: str | os.PathLike, target: pathlib.Path) -> None:
  with artifacts.atomic_path(target) as tmp:
    shutil.copyfile(source, tmp)


def run_demo(config: ml_collections.ConfigDict, workdir: str | os.PathLike, log=print) -> dict:
  from aligned.extract import extract
  from aligned.teacher.train import fit_teacher

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  artifacts.write_json(workdir / "config.json", config.to_dict())
  stages = _Stages(log)
  total = time.perf_counter()

  # 1. base embeddings of the THINGS concepts
  extract_config = ml_collections.ConfigDict(config.extract.to_dict())
  extract_config.template = config.template
  extracted = stages.run("extract", workdir / "extract", extract_config, extract)
  _copy(extracted["embeddings"], workdir / "things_embeddings.npy")

  # 2. the teacher
  teacher_config = ml_collections.ConfigDict(config.teacher.to_dict())
  teacher_config.embeddings = str(workdir / "things_embeddings.npy")
  teacher = stages.run("teacher", workdir / "teacher", teacher_config, fit_teacher, deps=("extract",))

  # 3. AligNet data (teacher labels) and its untransformed twin (raw-model labels)
  _generate_stage(config, workdir, stages, extracted["store"], teacher_config.similarity)

  # 4. students
  students = {}
  for name, transform, out in (
    ("alignet_student", "uncertainty_distillation", "student_things_embeddings.npy"),
    ("unalignet_student", "untransformed", "untransformed_student_things_embeddings.npy"),
  ):
    student_config = ml_collections.ConfigDict(config.student.to_dict())
    student_config.data.root, student_config.data.transform = str(workdir / "alignet"), transform
    student_config.data.samplings, student_config.data.template = config.generate.samplings, config.template
    folder = workdir / name
    students[name] = _train_student(stages, name, folder, student_config)
    _copy(folder / "things_embeddings.npy", workdir / out)

  # 5. evaluation of every model on the human triplets and the human RDM, then the report
  inputs = {
    "reference": (config.reference, ""),
    "base": (workdir / "things_embeddings.npy", ""),
    "teacher": (workdir / "things_embeddings.npy", workdir / "teacher" / "transform.npz"),
    "alignet_student": (workdir / "student_things_embeddings.npy", ""),
    "unalignet_student": (workdir / "untransformed_student_things_embeddings.npy", ""),
  }
  evaluations = _evaluate_and_report(
    config, workdir, stages, inputs, NAMES, "AligNet demo: MiniLM on THINGS", orders={"reference": "sorted"}
  )
  results = _summary(config, evaluations, students, NAMES, stages.timings, total)
  results["items"] = f"1,854 THINGS concepts, texts {config.template!r}"
  results["teacher"] = {k: teacher.get(k) for k in ("best", "temperature") if k in teacher}
  artifacts.write_json(workdir / "results.json", results)  # written last: the demo is complete
  return results


def _summary(config, evaluations: dict, students: dict, names: dict, timings: dict, total: float) -> dict:
  table = []
  for name, r in evaluations.items():
    table.append(
      {
        "model": names[name],
        "accuracy": r["accuracy"],
        "accuracy_ci95": r.get("accuracy_ci95"),
        "mean_human_choice_prob": r["mean_human_choice_prob"],
        "rsa_spearman": r.get("rsa_spearman"),
      }
    )
  first = next(iter(evaluations.values()))
  return {
    "triplets": first["triplets"],
    "n_triplets": first["n_triplets"],
    "chance": 1 / 3,
    "noise_ceiling": first.get("noise_ceiling"),
    "table": table,
    "students": {name: {"steps": s["steps"], "final": s["final"]} for name, s in students.items()},
    "timings_s": timings,
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


# ------------------------------------------------------------------------------------------------
# The image variant
# ------------------------------------------------------------------------------------------------

IMAGE_NAMES = {
  "base": "random ViT (base)",
  "teacher": "teacher (ViT + transform)",
  "alignet_student": "AligNet student",
  "unalignet_student": "UnAligNet student",
}


def label_triplets(labels, n: int, seed: int, exclude=None):
  """[n, 3] triplets, odd one out last: two items with one label and one with another."""
  import numpy as np

  from aligned.generation.sampling import sample_triplets

  labels = np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)
  triplets = sample_triplets("class_border", n, seed, len(labels), labels, exclude=exclude)
  t = labels[triplets]
  odd = np.where(t[:, 0] == t[:, 1], 2, np.where(t[:, 0] == t[:, 2], 1, 0))
  order = np.stack([np.delete(np.arange(3), k) for k in range(3)])[odd]  # the two of one superclass
  return np.concatenate([np.take_along_axis(triplets, order, 1), triplets[np.arange(n), odd][:, None]], 1)


def _write_triplets(path: pathlib.Path, triplets) -> None:
  with artifacts.atomic_path(path) as tmp:
    tmp.write_text("".join(f"{i} {j} {k}\n" for i, j, k in triplets))


def run_image_demo(config: ml_collections.ConfigDict, workdir: str | os.PathLike, log=print) -> dict:
  import numpy as np

  from aligned.data import shapes
  from aligned.embedding_store import EmbeddingStore
  from aligned.extract import extract
  from aligned.teacher.train import fit_teacher

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  artifacts.write_json(workdir / "config.json", config.to_dict())
  stages = _Stages(log)
  total = time.perf_counter()

  # 0. the dataset and its hierarchy
  data_dir = workdir / "tfds"
  start = time.perf_counter()
  folder = shapes.build_shapes_dataset(data_dir, **config.shapes.to_dict())
  stages.timings["shapes"] = time.perf_counter() - start
  superclass_of = {}
  for line in (folder / shapes.HIERARCHY_FILE).read_text().splitlines()[1:]:
    synset, _, superclass = line.split("\t")
    superclass_of[synset] = superclass

  # 1. base embeddings of every training image (random ViT)
  extract_config = ml_collections.ConfigDict(config.extract.to_dict())
  extract_config.data_dir = str(data_dir)
  extracted = stages.run("extract", workdir / "extract", extract_config, extract)
  ids, x = EmbeddingStore(extracted["store"]).read()
  artifacts.save_npy(workdir / "item_embeddings.npy", x.astype(np.float32))
  classes = [i.split("_")[0] for i in ids]  # synsets: one per (colour, shape kind)
  superclasses = [superclass_of[c] for c in classes]

  # "people": the odd one out is the image of another class (another colour or shape kind); the
  # evaluation file shares no triplet with the teacher's training file
  human = workdir / "human"
  held_out = label_triplets(classes, config.n_eval_triplets, config.seed)
  train = label_triplets(classes, config.n_teacher_triplets, config.seed + 1, exclude=held_out)
  _write_triplets(human / "eval_triplets.txt", held_out)
  _write_triplets(human / "train_triplets.txt", train)

  # 2. the teacher, fitted on the training triplets
  teacher_config = ml_collections.ConfigDict(config.teacher.to_dict())
  teacher_config.embeddings = str(workdir / "item_embeddings.npy")
  teacher_config.triplets = str(human / "train_triplets.txt")
  teacher_config.eval_triplets, teacher_config.eval_formats = (
    (str(human / "eval_triplets.txt"),),
    ("odd_last",),
  )
  stages.run("teacher", workdir / "teacher", teacher_config, fit_teacher, deps=("extract",))

  # 3. AligNet data
  _generate_stage(config, workdir, stages, extracted["store"], teacher_config.similarity)

  # 4. students start from the base model's weights (same random config and seed)
  students = {}
  for name, transform in (
    ("alignet_student", "uncertainty_distillation"),
    ("unalignet_student", "untransformed"),
  ):
    student_config = ml_collections.ConfigDict(config.student.to_dict())
    student_config.data.root, student_config.data.transform = str(workdir / "alignet"), transform
    student_config.data.samplings, student_config.data.tfds_data_dir = (
      config.generate.samplings,
      str(data_dir),
    )
    folder = workdir / name
    students[name] = _train_student(stages, name, folder, student_config)
    _copy(folder / "item_embeddings.npy", workdir / f"{name}_item_embeddings.npy")

  # 5. evaluation on the held-out hierarchy triplets, then the report
  inputs = {
    "base": (workdir / "item_embeddings.npy", ""),
    "teacher": (workdir / "item_embeddings.npy", workdir / "teacher" / "transform.npz"),
    "alignet_student": (workdir / "alignet_student_item_embeddings.npy", ""),
    "unalignet_student": (workdir / "unalignet_student_item_embeddings.npy", ""),
  }
  evaluations = _evaluate_and_report(
    config,
    workdir,
    stages,
    inputs,
    IMAGE_NAMES,
    "AligNet image demo: random ViT on generated shapes",
    triplets=human / "eval_triplets.txt",
  )
  results = _summary(config, evaluations, students, IMAGE_NAMES, stages.timings, total)
  results["items"] = f"{len(ids)} shapes images ({len(set(superclasses))} shape kinds)"
  artifacts.write_json(workdir / "results.json", results)
  return results
