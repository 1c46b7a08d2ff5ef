"""The demo's stage runner on toy stages: skip what is done, redo what changed and what depends on it."""

import json

import ml_collections

from aligned import artifacts
from aligned.demo.runner import Stage, run_stages


def _table(calls: list, value: int = 1):
  def make(name):
    def fn(config, folder):
      calls.append(name)
      artifacts.write_json(folder / "results.json", {"value": config.value})
      (folder / "out.txt").write_text(f"{name} {config.value}")
      return {"value": config.value}

    return fn

  def always(config, folder):
    calls.append("report")
    return {}

  return [
    Stage("a", "a", ml_collections.ConfigDict({"value": value}), make("a"), outputs={"a/out.txt": "a.txt"}),
    Stage("b", "b", ml_collections.ConfigDict({"value": 2}), make("b"), deps=("a",)),
    Stage("c", "c", ml_collections.ConfigDict({"value": 3}), make("c")),
    Stage("report", ".", ml_collections.ConfigDict(), always, always=True),
  ]


def test_skips_done_stages_and_reruns_a_changed_one_with_its_dependents(tmp_path):
  calls, logs = [], []
  done = run_stages(_table(calls), tmp_path, logs.append)
  assert calls == ["a", "b", "c", "report"] and done.ran == {"a", "b", "c"}
  assert (tmp_path / "a.txt").read_text() == "a 1"  # outputs are copied into place

  calls.clear()
  again = run_stages(_table(calls), tmp_path, logs.append)
  assert calls == ["report"] and again.timings["a"] is None and again.results["b"] == {"value": 2}

  calls.clear()
  (tmp_path / "b" / "stale.txt").write_text("left by the old run")
  changed = run_stages(_table(calls, value=5), tmp_path, logs.append)
  assert calls == ["a", "b", "report"] and changed.ran == {"a", "b"}
  assert not (tmp_path / "b" / "stale.txt").exists()  # a rerun starts from an empty folder
  assert (tmp_path / "a.txt").read_text() == "a 5"
  assert json.loads((tmp_path / "a" / "stage_config.json").read_text()) == {
    "config": {"value": 5},
    "inputs": {},
  }
  assert json.loads((tmp_path / "b" / "stage_config.json").read_text())["inputs"] == {
    "a": artifacts.sha256_of(tmp_path / "a" / "results.json")
  }


def test_a_stage_whose_input_was_recomputed_by_a_killed_run_is_not_skipped(tmp_path):
  calls = []
  run_stages(_table(calls), tmp_path, lambda line: None)

  def killed_after_a(line):  # the run dies once `a` is recomputed, before `b` starts
    if line.startswith("[a]") and line.endswith(" s"):
      raise KeyboardInterrupt

  try:
    run_stages(_table(calls, value=5), tmp_path, killed_after_a)
  except KeyboardInterrupt:
    pass
  assert json.loads((tmp_path / "b" / "results.json").read_text()) == {"value": 2}  # made from a = 1
  calls.clear()
  run_stages(_table(calls, value=5), tmp_path, lambda line: None)
  assert calls == ["b", "report"]  # `a` is done (same config), but `b` read the old `a`: it runs again


def test_an_unfinished_stage_runs_again_in_its_folder(tmp_path):
  calls = []
  table = _table(calls)
  (tmp_path / "c").mkdir()
  (tmp_path / "c" / "partial.txt").write_text("kept: the stage resumes from it")
  artifacts.write_json(tmp_path / "c" / "stage_config.json", {"config": {"value": 3}, "inputs": {}})
  run_stages(table, tmp_path, lambda line: None)
  assert "c" in calls and (tmp_path / "c" / "partial.txt").exists()


def test_the_seeds_variant_trains_each_student_per_seed_and_compares_seed_0(tmp_path):
  from aligned.configs import demo as demo_config
  from aligned.demo.pipelines import text_demo

  demo = text_demo(demo_config.get_config("seeds"), tmp_path)
  names = [stage.name for stage in demo.stages]
  students = [n for n in names if not n.startswith("evaluate") and "student" in n]
  assert students == [
    "alignet_student",
    "unalignet_student",
    "alignet_student_seed1",
    "unalignet_student_seed1",
    "alignet_student_seed2",
    "unalignet_student_seed2",
  ]
  seeds = {s.name: s.config.seed for s in demo.stages if s.name in students}
  assert seeds["alignet_student"] == 0 and seeds["unalignet_student_seed2"] == 2
  assert demo.names["alignet_student_seed1"] == "AligNet student (seed 1)"
  report = next(s for s in demo.stages if s.name == "report").config
  assert report.differences == (
    "AligNet student vs UnAligNet student; AligNet student vs MiniLM {word} (students' start)"
  )
  # every student learns from the WordNet nouns and is scored on THINGS through its own texts
  student = next(s for s in demo.stages if s.name == "unalignet_student").config
  assert student.data.source == "wordnet_nouns" and student.data.transform == "untransformed"
  assert student.data.template == student.human_eval.template == "{word}"
