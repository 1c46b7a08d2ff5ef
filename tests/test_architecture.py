"""The shape of the code: stages are peers on one core, and nothing in the library imports upward.

Layers (WORKSPACE.md draws them): the core (kernels, metrics, evaluators, data readers, backbones,
distributed, artifacts, ...) imports only the core; each stage (extract, teacher, generation,
student, evaluate, transfer, report, export) imports the core and its own package; configs import
the core only; the demo and the commands (`aligned.cli`) sit on top.
"""

import ast
import pathlib

import pytest

from tests.conftest import REPO

LIBRARY = REPO / "aligned"
STAGES = ("extract", "teacher", "generation", "student", "evaluate", "transfer", "report", "export")
TOP = ("demo", "cli")  # the demo and the commands sit on every stage


def _module(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
  """(imported project module, imported inside a function) for every `aligned` import of a file."""
  tree = ast.parse(path.read_text())
  local = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)}
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aligned"):
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        is_module = (REPO / pathlib.Path(*full.split("."))).with_suffix(".py").exists() or (
          REPO / pathlib.Path(*full.split("."))
        ).is_dir()
        found.append((full if is_module else node.module, id(node) in local))
    elif isinstance(node, ast.Import):
      found += [(a.name, id(node) in local) for a in node.names if a.name.startswith("aligned")]
  return found


def _layer(module: str) -> str:
  """`core`, `configs` (settings only: they import the core), `top` (demo, commands), or a stage."""
  parts = module.split(".")
  if len(parts) > 1 and parts[1] in STAGES:
    return parts[1]
  if len(parts) > 1 and parts[1] in TOP:
    return "top"
  if len(parts) > 1 and parts[1] == "configs":
    return "configs"
  return "core"


FILES = sorted(LIBRARY.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_stage_imports_another_stage_and_the_core_imports_no_stage(path):
  here = _layer(_module(path))
  for imported, _ in _imports(path):
    there = _layer(imported)
    if here == "top" or there == "core":
      continue
    assert there == here, f"{_module(path)} ({here}) imports {imported} ({there})"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_project_imports_are_at_the_top_of_the_module(path):
  local = [imported for imported, inside in _imports(path) if inside]
  assert not local, f"{_module(path)} imports {local} inside a function"


def test_the_layering_rule_is_checked_on_real_imports():
  # The checker itself: the student's trainer is found importing the core and its own stage.
  imported = {m for m, _ in _imports(LIBRARY / "student" / "trainer.py")}
  assert {"aligned.distributed", "aligned.backbones.student"} <= imported
  assert _layer("aligned.generation.kmeans") == "generation" and _layer("aligned.sampling") == "core"
  assert _layer("aligned.demo.runner") == "top" and _layer("aligned.cli.extract") == "top"
  assert _layer("aligned.configs.demo") == "configs" and _layer("aligned.report.tables") == "report"
