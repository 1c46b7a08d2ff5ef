"""The Colab notebook runs headless, top to bottom, on the real data (a few minutes on 2 CPU cores)."""

import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # subprocesses / whole pipelines: `make test-fast` skips them

NOTEBOOK = REPO / "experiments" / "notebooks" / "alignet_demo.ipynb"


def _text(cell) -> str:
  return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_notebook_is_committed_clean():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  assert notebook.metadata.kernelspec.name == "python3"
  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, "commit the notebook without outputs"
  install = next(c.source for c in notebook.cells if c.cell_type == "code")
  assert 'if importlib.util.find_spec("aligned") is None:' in install and "cache.download()" in install


def test_notebook_runs(tmp_path, monkeypatch, data_dir):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint('kernel python', sys.executable)"))
  workdir = tmp_path / "outputs"
  monkeypatch.setenv("ALIGNED_NOTEBOOK_WORKDIR", str(workdir))
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
  cwd = tmp_path / "cwd"  # not the checkout: the notebook must find the project and data by itself
  cwd.mkdir()
  client = NotebookClient(
    notebook, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(cwd)}}
  )
  client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails

  printed = "\n".join(_text(c) for c in notebook.cells if c.cell_type == "code")
  assert f"kernel python {sys.executable}" in printed  # the venv's interpreter, not another python3
  images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(images) >= 6  # CV curve, two training curves, the accuracy chart, the report's plots (2)
  for name in ("MiniLM (base)", "teacher (MiniLM + transform)", "AligNet student", "UnAligNet student"):
    assert name in printed
  for path in (
    "extract/embeddings.npy",
    "teacher/transform.npz",
    "teacher/plots/cv_curve.png",
    "alignet/manifest.json",
    "alignet_student/things_embeddings.npy",
    "unalignet_student/plots/training.png",
    "report/report.md",
    "report/results.csv",
  ):
    assert (workdir / path).exists(), path
  assert not list(cwd.iterdir()), "the notebook wrote into its working directory"
