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


# Calls that only work on a local disk: `open("gs://b/x")` writes a local folder `gs:`, `np.load` and
# `os`/`shutil` take local names, `rglob` is a recursive glob a bucket cannot serve. Library code goes
# through `aligned.paths` (epath) instead; a call that must stay local says why on its line (`# local: ...`).
_LOCAL_ONLY = {
  ("open",),
  ("pathlib", "Path"),
  ("np", "load"),
  ("np", "save"),
  ("np", "savez"),
  ("np", "savez_compressed"),
  ("np", "loadtxt"),
  ("np", "genfromtxt"),
  ("os", "replace"),
  ("os", "rename"),
  ("os", "remove"),
  ("os", "makedirs"),
  ("os", "listdir"),
  ("os", "scandir"),
  ("os", "walk"),
  ("glob", "glob"),
}
_LOCAL_ONLY_PREFIXES = ("os.path", "shutil", "tempfile")


def _dotted(node: ast.AST) -> tuple[str, ...]:
  if isinstance(node, ast.Name):
    return (node.id,)
  if isinstance(node, ast.Attribute):
    return (*_dotted(node.value), node.attr)
  return ("<expr>",)  # a call's result, a subscript: `as_path(p).open` is not the builtin `open`


def _local_only_calls(source: str) -> list[tuple[int, str]]:
  """(line, call) of every local-only call in `source` whose line has no `# local:` reason."""
  lines = source.splitlines()
  found = []
  for node in ast.walk(ast.parse(source)):
    if not isinstance(node, ast.Call):
      continue
    name = _dotted(node.func)
    dotted = ".".join(name)
    rglob = isinstance(node.func, ast.Attribute) and node.func.attr == "rglob"
    if (name in _LOCAL_ONLY or dotted.startswith(_LOCAL_ONLY_PREFIXES) or rglob) and "# local:" not in lines[
      node.lineno - 1
    ]:
      found.append((node.lineno, f"{dotted or 'rglob'}(...)"))
  return sorted(found)


@pytest.mark.parametrize(
  "path", [p for p in FILES if p.name != "paths.py"], ids=lambda p: str(p.relative_to(REPO))
)
def test_files_are_reached_through_epath_so_bucket_paths_work(path):
  found = _local_only_calls(path.read_text())
  where = path.relative_to(REPO)
  assert not found, "local-only file calls (use aligned.paths, or say `# local: why`):\n" + "\n".join(
    f"{where}:{line}: {call}" for line, call in found
  )


def test_the_local_only_checker_finds_real_calls():
  source = (
    "import numpy as np\nx = np.load(p)\nwith open(p) as f: pass\nfor q in root.rglob('*'): pass\n"
    "with as_path(p).open() as f: pass\n"
    "y = np.load(p)  # local: a temporary file\nz = shutil.copyfile(a, b)\n"
  )
  assert _local_only_calls(source) == [
    (2, "np.load(...)"),
    (3, "open(...)"),
    (4, "root.rglob(...)"),
    (7, "shutil.copyfile(...)"),
  ]
