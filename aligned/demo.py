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
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

import ml_collections

from aligned import artifacts

MODELS = ("base", "teacher", "alignet_student", "unalignet_student")
NAMES = {
  "reference": "SPoSE 49-d (fit to people)",
  "base": "MiniLM (base)",
  "teacher": "teacher (MiniLM + transform)",
  "alignet_student": "AligNet student",
  "unalignet_student": "UnAligNet student",
}


def _stage(name: str, folder: pathlib.Path, job, timings: dict, log) -> dict:
  """Runs `job()` unless folder/results.json exists; records the wall time."""
  done = folder / "results.json"
  if done.exists():
    log(f"[{name}] done before: {folder}")
    timings[name] = None
    return json.loads(done.read_text())
  log(f"[{name}] ...")
  start = time.perf_counter()
  results = job()
  timings[name] = time.perf_counter() - start
  log(f"[{name}] {timings[name]:.0f} s")
  return results


def _copy(source: str | os.PathLike, target: pathlib.Path) -> None:
  with artifacts.atomic_path(target) as tmp:
    shutil.copyfile(source, tmp)


def run_demo(config: ml_collections.ConfigDict, workdir: str | os.PathLike, log=print) -> dict:
  from aligned.evaluate import evaluate
  from aligned.extract import extract
  from aligned.generation.generate import generate
  from aligned.report import write_report
  from aligned.student.train import finetune
  from aligned.teacher.train import fit_teacher

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  artifacts.write_json(workdir / "config.json", config.to_dict())
  timings: dict[str, float | None] = {}
  total = time.perf_counter()

  # 1. base embeddings of the THINGS concepts
  extract_config = ml_collections.ConfigDict(config.extract.to_dict())
  extract_config.template = config.template
  extracted = _stage(
    "extract", workdir / "extract", lambda: extract(extract_config, workdir / "extract"), timings, log
  )
  _copy(extracted["embeddings"], workdir / "things_embeddings.npy")

  # 2. the teacher
  teacher_config = ml_collections.ConfigDict(config.teacher.to_dict())
  teacher_config.embeddings = str(workdir / "things_embeddings.npy")
  teacher = _stage(
    "teacher", workdir / "teacher", lambda: fit_teacher(teacher_config, workdir / "teacher"), timings, log
  )

  # 3. AligNet data (teacher labels) and its untransformed twin (raw-model labels)
  generate_config = ml_collections.ConfigDict(config.generate.to_dict())
  generate_config.store, generate_config.teacher = (
    extracted["store"],
    str(workdir / "teacher" / "transform.npz"),
  )
  generate_config.similarity = teacher_config.similarity
  _stage(
    "generate", workdir / "alignet", lambda: generate(generate_config, workdir / "alignet"), timings, log
  )
  (workdir / "alignet" / "results.json").exists() or artifacts.write_json(
    workdir / "alignet" / "results.json", json.loads((workdir / "alignet" / "manifest.json").read_text())
  )

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
    students[name] = _stage(name, folder, lambda c=student_config, f=folder: finetune(c, f), timings, log)
    if students[name].get("status") != "completed":
      raise RuntimeError(f"{name} stopped before the end ({students[name].get('status')}); rerun the demo")
    _copy(folder / "things_embeddings.npy", workdir / out)

  # 5. evaluation of every model on the human triplets and the human RDM, then the report
  inputs = {
    "reference": (config.reference, ""),
    "base": (workdir / "things_embeddings.npy", ""),
    "teacher": (workdir / "things_embeddings.npy", workdir / "teacher" / "transform.npz"),
    "alignet_student": (workdir / "student_things_embeddings.npy", ""),
    "unalignet_student": (workdir / "untransformed_student_things_embeddings.npy", ""),
  }
  evaluations = {}
  for name, (embeddings, transform) in inputs.items():
    eval_config = ml_collections.ConfigDict(config.evaluate.to_dict())
    eval_config.embeddings, eval_config.transform = str(embeddings), str(transform)
    if name == "reference":
      eval_config.embeddings_order = "sorted"
    folder = workdir / "eval" / name
    evaluations[name] = _stage(
      f"evaluate {name}", folder, lambda c=eval_config, f=folder: evaluate(c, f), timings, log
    )

  report_config = ml_collections.ConfigDict(
    {
      "runs": ",".join(str(workdir / "eval" / n) for n in inputs),
      "names": ",".join(NAMES[n] for n in inputs),
      "title": "AligNet demo: MiniLM on THINGS",
      "plots": True,
    }
  )
  start = time.perf_counter()
  write_report(report_config, workdir)
  timings["report"] = time.perf_counter() - start

  table = []
  for name in inputs:
    r = evaluations[name]
    table.append(
      {
        "model": NAMES[name],
        "accuracy": r["accuracy"],
        "accuracy_ci95": r.get("accuracy_ci95"),
        "mean_human_choice_prob": r["mean_human_choice_prob"],
        "rsa_spearman": r.get("rsa_spearman"),
        "noise_ceiling": r.get("noise_ceiling"),
      }
    )
  results = {
    "template": config.template,
    "n_triplets": evaluations["base"]["n_triplets"],
    "chance": 1 / 3,
    "noise_ceiling": evaluations["base"].get("noise_ceiling"),
    "table": table,
    "teacher": {k: teacher.get(k) for k in ("best", "temperature") if k in teacher},
    "students": {name: {"steps": s["steps"], "final": s["final"]} for name, s in students.items()},
    "timings_s": timings,
    "wall_s": time.perf_counter() - total,
  }
  artifacts.write_json(workdir / "results.json", results)  # written last: the demo is complete
  return results


def format_results(results: dict) -> str:
  def pct(x):
    return "   n/a" if x is None else f"{100 * x:6.2f} %"

  lines = [
    f"AligNet demo on {results['n_triplets']} human THINGS triplets (template {results['template']!r})",
    f"{'model':32s} {'accuracy':>9s} {'RSA rho':>8s}",
  ]
  for row in results["table"]:
    rho = "n/a" if row["rsa_spearman"] is None else f"{row['rsa_spearman']:.3f}"
    lines.append(f"{row['model']:32s} {pct(row['accuracy'])} {rho:>8s}")
  lines.append(f"{'chance':32s} {pct(results['chance'])}")
  lines.append(
    f"{'noise ceiling':32s} {pct(results['noise_ceiling'])}  (one response per triplet: none)"
    if results["noise_ceiling"] is None
    else f"{'noise ceiling':32s} {pct(results['noise_ceiling'])}"
  )
  stages = ", ".join(f"{k} {v:.0f} s" for k, v in results["timings_s"].items() if v is not None)
  lines.append(f"wall time {results['wall_s']:.0f} s ({stages})")
  return "\n".join(lines)
