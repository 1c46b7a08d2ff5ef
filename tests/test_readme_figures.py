"""README's figures regenerated from a (synthetic) demo workdir: the block is the demo's printed text
byte for byte, --write replaces only what lies between the markers, --check fails on any figure but
the wall time; and the workdir comparison behind README's reproducibility table."""

import json

import numpy as np
import pytest

from aligned.demo import format_results
from benchmarks import compare_workdirs, readme_figures

RESULTS = {
  "items": "teacher: 1,854 THINGS concepts; students: 5,000 WordNet nouns",
  "n_triplets": 2171,
  "triplets": "/data/folder/things/triplets.tsv",
  "chance": 1 / 3,
  "noise_ceiling": None,
  "table": [
    {"model": "SPoSE 49-d (fit to people)", "accuracy": 0.6573, "rsa_spearman": 0.8699},
    {"model": "AligNet student", "accuracy": 0.5122, "rsa_spearman": 0.508},
  ],
  "differences": [{"a": "AligNet student", "b": "SPoSE", "difference": -0.1451, "ci95": [-0.17, -0.12]}],
  "seeds": {"AligNet student": {"seeds": [0]}},
  "labels": {"uncertainty_distillation": {"temperature": 0.9411, "mean_entropy": 0.9331}},
  "students": {"alignet_student": {"tau": 0.8978, "teacher_agreement": 0.654}},
  "timings_s": {"extract": 33.2, "teacher": 160.1, "report": None},
  "wall_s": 701.4,
}
EVALUATION = {
  "accuracy": 0.6573,
  "accuracy_ci95": [0.6373, 0.6773],
  "uncertainty": {"temperature": 0.928, "ece": 0.028},
  "rsa_spearman": 0.8699,
  "rsa_spearman_ci95": [0.815, 0.905],
}
README = """# Title

Before.

<!-- demo-table:begin -->
```
stale
```
<!-- demo-table:end -->

Between.

<!-- eval-table:begin -->
| old |
<!-- eval-table:end -->

After.
"""


def _workdir(tmp_path, results=RESULTS, evaluations=True):
  workdir = tmp_path / "demo"
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "results.json").write_text(json.dumps(results))
  if evaluations:
    for folder, _ in readme_figures.EVAL_ROWS:
      (workdir / "eval" / folder).mkdir(parents=True, exist_ok=True)
      (workdir / "eval" / folder / "results.json").write_text(json.dumps(EVALUATION))
  return workdir


def test_the_demo_block_is_what_the_demo_prints(tmp_path):
  blocks = readme_figures.blocks(_workdir(tmp_path), data_folder="/data/folder/")
  printed = format_results(RESULTS)
  # byte for byte, but for the data folder's path (another machine's)
  assert blocks["demo-table"] == "```\n" + printed.replace("/data/folder/", "$ALIGNED_DATA/") + "\n```"
  lines = blocks["demo-table"].split("\n")
  assert lines[1].startswith("AligNet demo: ") and lines[1].endswith("of $ALIGNED_DATA/things/triplets.tsv")
  assert lines[-2].startswith("wall time 701 s (extract 33 s")
  assert blocks["eval-table"].split("\n")[2] == (
    "| SPoSE 49-d | 65.73 % [63.73, 67.73] | 0.928 | 0.028 | 0.870 [0.815, 0.905] |"
  )
  # without the evaluation folders, only the demo block
  assert list(readme_figures.blocks(_workdir(tmp_path / "bare", evaluations=False))) == ["demo-table"]


def test_write_replaces_only_the_marked_blocks(tmp_path):
  blocks = readme_figures.blocks(_workdir(tmp_path))
  text = README
  for name, block in blocks.items():
    text = readme_figures.replace_block(text, name, block)
  for name, block in blocks.items():
    assert readme_figures.read_block(text, name) == block
  assert "stale" not in text and "| old |" not in text
  outside = text.replace(blocks["demo-table"] + "\n", "").replace(blocks["eval-table"] + "\n", "")
  assert outside == README.replace("```\nstale\n```\n", "").replace("| old |\n", "")
  # idempotent, and clean against the run it came from
  assert readme_figures.replace_block(text, "demo-table", blocks["demo-table"]) == text
  assert readme_figures.differences(text, blocks) == ""


def test_check_fails_on_a_figure_but_not_on_the_wall_time(tmp_path):
  blocks = readme_figures.blocks(_workdir(tmp_path))
  text = readme_figures.replace_block(README, "demo-table", blocks["demo-table"])
  text = readme_figures.replace_block(text, "eval-table", blocks["eval-table"])

  slower = {**RESULTS, "wall_s": 1234.0, "timings_s": {"extract": 99.0}}
  assert readme_figures.differences(text, readme_figures.blocks(_workdir(tmp_path, slower))) == ""

  moved = {**RESULTS, "table": [{**RESULTS["table"][0], "accuracy": 0.6574}, RESULTS["table"][1]]}
  diff = readme_figures.differences(text, readme_figures.blocks(_workdir(tmp_path, moved)))
  assert (
    "-SPoSE 49-d (fit to people)        65.73 %" in diff
    and "+SPoSE 49-d (fit to people)        65.74 %" in diff
  )

  # --keep-wall-time: README's wall-time line stays, every figure comes from the run
  kept = readme_figures.replace_block(
    text, "demo-table", readme_figures.demo_block(moved), keep_machine_lines=True
  )
  assert "wall time 701 s" in kept and "65.74 %" in kept


def test_command_check_and_write(tmp_path, capsys):
  workdir = _workdir(tmp_path)
  readme = tmp_path / "README.md"
  readme.write_text(README)
  args = ["--workdir", str(workdir), "--readme", str(readme)]
  assert readme_figures.main([*args, "--check"]) == 1
  assert "-stale" in capsys.readouterr().out
  assert readme_figures.main([*args, "--write"]) == 0
  assert readme_figures.main([*args, "--check"]) == 0
  assert format_results(RESULTS) in readme.read_text()


def test_markers_missing_or_doubled_are_refused(tmp_path, capsys):
  readme = tmp_path / "README.md"
  readme.write_text("no markers")
  assert readme_figures.main(["--workdir", str(_workdir(tmp_path)), "--readme", str(readme), "--check"]) == 2
  assert "error: README needs exactly one '<!-- demo-table:begin -->'" in capsys.readouterr().err
  with pytest.raises(ValueError, match="demo-table:begin"):
    readme_figures.read_block("no markers", "demo-table")
  with pytest.raises(ValueError, match="exactly one"):
    readme_figures.read_block(README + README, "demo-table")
  with pytest.raises(FileNotFoundError, match="no finished demo"):
    readme_figures.blocks("/nonexistent/workdir")


def test_compare_workdirs_tells_identical_from_different(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  for root, shift, seconds in ((a, 0.0, 1.0), (b, 2.0**-10, 2.0)):
    (root / "stage").mkdir(parents=True)
    np.save(root / "same.npy", np.arange(6, dtype=np.float32))
    np.save(root / "stage" / "moved.npy", np.ones(3, np.float32) + np.float32(shift))
    # times and the workdir's own path differ between runs, not the results
    results = {"accuracy": 0.5, "wall_s": seconds, "folder": f"{root}/stage"}
    (root / "results.json").write_text(json.dumps(results))
    (root / "run.log").write_text(f"took {seconds}")
  rows = {r["path"]: r for r in compare_workdirs.compare(a, b)}
  assert set(rows) == {"same.npy", "stage/moved.npy", "results.json"}  # logs left out
  assert rows["same.npy"]["identical"] and rows["results.json"]["identical"]
  assert not rows["stage/moved.npy"]["identical"]
  assert rows["stage/moved.npy"]["max_abs_difference"] == 2.0**-10
  assert compare_workdirs.format_rows(list(rows.values())).endswith("2 of 3 files identical")


def test_compare_workdirs_json_numbers_and_text(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  for root, accuracy, name in ((a, 0.5, "x"), (b, 0.25, "x")):
    root.mkdir()
    (root / "numbers.json").write_text(json.dumps({"accuracy": accuracy, "name": name}))
    (root / "text.json").write_text(json.dumps({"accuracy": 0.5, "input": f"/elsewhere/{root.name}.npy"}))
  rows = {r["path"]: r for r in compare_workdirs.compare(a, b)}
  assert rows["numbers.json"]["max_abs_difference"] == 0.25
  # a string that differs (another input) is a difference without a number, never "identical"
  assert not rows["text.json"]["identical"] and rows["text.json"]["max_abs_difference"] is None
