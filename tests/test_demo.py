"""The demo pipeline end to end on images (the `images` variant, shrunk): every stage runs, trained
students are read back from their checkpoints by extraction and evaluated on held-out triplets, a
Levels-format file and transfer, a rerun skips finished stages, and a changed stage reruns with what
depends on it and nothing else. The text variant (`make demo`) is tested end to end, shrunk, in
`tests/test_method.py`, which also checks that AligNet works."""

import json

import numpy as np
import pytest

from aligned.backbones.preprocessing import preprocess
from aligned.backbones.student import StudentEncoder
from aligned.configs import demo as demo_config
from aligned.data.items import TfdsSource
from aligned.data.levels import LEVELS
from aligned.demo import run_demo
from aligned.demo.pipelines import format_results
from aligned.embedding_store import EmbeddingStore

pytestmark = pytest.mark.slow  # subprocesses / whole pipelines: `make test-fast` skips them


def _tiny():
  config = demo_config.get_config("images")
  config.shapes.n_per_class, config.shapes.n_val_per_class, config.shapes.image_size = 8, 1, 32
  config.n_teacher_triplets, config.n_eval_triplets, config.n_levels_triplets = 3000, 300, 40
  config.teacher.steps, config.teacher.lambdas = 100, (1e-2,)
  config.generate.n_train, config.generate.n_val = 600, 64
  config.generate.samplings = ("cluster_border_4", "class_border")
  config.student.steps, config.student.batch_size = 12, 16
  config.student.optimizer.warmup_steps = 2
  config.student.checkpointing.every, config.student.eval.every, config.student.log_every = 6, 0, 6
  config.evaluate.bootstrap, config.evaluate.uncertainty_folds = 20, 2
  config.transfer.shots, config.transfer.seeds, config.transfer.methods = (1, 2), (0,), ("ridge",)
  return config


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("demo_images")
  logs = []
  results = run_demo(_tiny(), workdir, log=logs.append)
  return workdir, results, logs


def test_every_stage_runs_and_writes_its_artifacts(demo):
  workdir, results, logs = demo
  for stage in ("extract", "teacher", "generate", "alignet_student", "unalignet_student"):
    assert f"[{stage}] ..." in logs
  for path in (
    "item_embeddings.npy",
    "teacher/transform.npz",
    "alignet/manifest.json",
    "alignet/uncertainty_distillation/train_class_border.npz",
    "alignet/untransformed/val_cluster_border_4.npz",
    "human/levels.csv",
    "embed/alignet_student/store/metadata.json",
    "features/unalignet_student/validation/store/metadata.json",
    "transfer/alignet_student/results.json",
    "report.md",
    "results.csv",
    "results.json",
  ):
    assert (workdir / path).exists(), path
  assert list((workdir / "plots").glob("*.png"))
  n_images = 12 * 8
  ids, head = EmbeddingStore(workdir / "embed" / "alignet_student" / "store").read()
  assert head.shape == (n_images, 1024) and ids[0].endswith(".JPEG")
  # the store is the trained student's head on the train images, read back from its checkpoint
  encoder = StudentEncoder(workdir / "alignet_student")
  first = TfdsSource("imagenet2012", "train", str(workdir / "tfds")).record(0)[1]
  expected = encoder.apply(encoder.params, preprocess(first, 32)[None])
  np.testing.assert_allclose(head[:1], np.asarray(expected), atol=1e-4)
  _, pooled = EmbeddingStore(workdir / "features" / "alignet_student" / "validation" / "store").read()
  assert pooled.shape == (12, 64)
  table = {row["model"]: row["accuracy"] for row in results["table"]}
  assert set(table) == {
    "random ViT (base)",
    "teacher (ViT + transform)",
    "AligNet student",
    "UnAligNet student",
  }
  # the teacher is fitted on triplets of the same kind as the held-out ones: it must beat its base
  assert table["teacher (ViT + transform)"] > table["random ViT (base)"] + 0.05
  report = (workdir / "report.md").read_text()
  assert all(name in report for name in table)
  assert "## Levels" in report and "class boundary" in report and "Few-shot" in report
  assert results["levels_triplets"] == {"between_class": 40, "class_boundary": 40, "within_class": 40}
  evaluation = json.loads((workdir / "eval" / "alignet_student" / "results.json").read_text())
  assert evaluation["levels"]["overall"]["n_responses"] == 120
  transfer = results["transfer"]
  assert set(transfer) == {"random ViT (base)", "AligNet student", "UnAligNet student"}
  for summary in transfer.values():
    assert set(summary["fewshot"]) == {"imagenet2012/ridge/1-shot", "imagenet2012/ridge/2-shot"}
    breeds = summary["shift"]["imagenet2012:breeds_superclasses"]
    assert 0 <= breeds["source"] <= 1 and 0 <= breeds["target"] <= 1
  printed = format_results(results).splitlines()
  levels = next(row["levels"] for row in results["table"] if row["model"] == "AligNet student")
  (line,) = [x for x in printed if x.startswith("AligNet student ") and x.count("%") == 3]
  assert line.replace("%", "").split()[-3:] == [f"{100 * levels[k]:.2f}" for k in LEVELS]
  assert any(x.startswith("transfer, AligNet student: imagenet2012/ridge/1-shot") for x in printed)
  assert json.loads((workdir / "results.json").read_text())["table"] == results["table"]


def test_rerun_skips_finished_stages_and_a_change_reruns_only_what_depends_on_it(demo):
  workdir, results, _ = demo
  logs = []
  again = run_demo(_tiny(), workdir, log=logs.append)
  assert not any(line.endswith("...") for line in logs), logs
  assert again["table"] == results["table"]

  changed = _tiny()
  changed.student.steps = 18
  logs = []
  run_demo(changed, workdir, log=logs.append)
  ran = {line[1:].split("]")[0] for line in logs if line.endswith("...")}
  students = ("alignet_student", "unalignet_student")
  assert ran == {
    *students,
    *(f"{stage} {name}" for stage in ("evaluate", "embed", "features", "transfer") for name in students),
    *(f"features {name} validation" for name in students),
  }
