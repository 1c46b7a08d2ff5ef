"""The accelerator benchmark at its tiny size, in process: every row, finite positive figures and floors,
and the JSON of `--out` equal to what was printed. Timings are measured, never asserted."""

import json
import math

import pytest

from benchmarks import accelerator

ROWS = ("student_mfu", "extraction", "teacher_epoch", "kmeans_iteration", "labelling")


def test_accelerator_table_at_tiny_size(tmp_path, capsys):
  path = tmp_path / "table.json"
  report = accelerator.main(["--size", "tiny", "--out", str(path)])
  printed = capsys.readouterr().out
  written = json.loads(path.read_text())

  assert written == report and written["size"] == "tiny"
  assert [row["key"] for row in written["rows"]] == list(ROWS)
  for name, value in written["floors"].items():
    assert math.isfinite(value) and value > 0, name
  for row in written["rows"]:
    for field in ("figure", "floor", "ratio", "target"):
      assert math.isfinite(row[field]) and row[field] > 0, (row["key"], field, row[field])
    assert row["ratio"] == pytest.approx(row["figure"] / row["floor"])
    assert row["met"] == (row["ratio"] >= row["target"] if row["at_least"] else row["ratio"] <= row["target"])
  # The printed floors and table are the JSON's, figure for figure.
  assert accelerator.format_floors(written["floors"]) in printed
  assert accelerator.format_table(written["rows"]) in printed
  for row in written["rows"]:
    assert row["check"] in printed and f"{row['figure']:.4g}" in printed
