"""The commands: `--config` by packaged name or file, and every command a console script."""

import ast
import sys
import tomllib

import pytest

from aligned.cli import launch
from tests.conftest import REPO


def test_packaged_names_resolve_to_the_files_inside_the_package():
  extract = str(REPO / "aligned" / "configs" / "extract.py")
  assert launch.resolve_config("extract") == extract
  assert launch.resolve_config("extract:things_images") == extract + ":things_images"
  assert launch.resolve_config("extract.py:imagenet") == extract + ":imagenet"
  # the checkout spelling of earlier versions, and the path inside a checkout, name the same file
  assert launch.resolve_config("configs/extract.py:imagenet") == extract + ":imagenet"
  assert launch.config_file("demo") == str(REPO / "aligned" / "configs" / "demo.py")


def test_a_config_file_of_ones_own_is_taken_as_given(tmp_path, monkeypatch):
  mine = tmp_path / "extract.py"  # same name as a packaged config: the file wins
  mine.write_text("def get_config(variant=None):\n  return {}\n")
  assert launch.resolve_config(f"{mine}:x") == f"{mine}:x"
  monkeypatch.chdir(tmp_path)
  assert launch.resolve_config("extract.py") == "extract.py"


@pytest.mark.parametrize("value", ["nope", "common", "__init__", "configs/nope.py:x"])
def test_unknown_configs_are_refused_with_the_names_there_are(value):
  with pytest.raises(ValueError, match=r"not a file, nor a packaged config \(one of .*extract.*finetune"):
    launch.resolve_config(value)


def test_only_the_config_flag_is_rewritten():
  argv = [
    "prog",
    "--config=demo:images",
    "--config.student.steps=3",
    "--config",
    "teacher:smoke",
    "--workdir=w",
  ]
  out = launch.resolve_config_argv(argv)
  assert out[1] == "--config=" + launch.config_file("demo") + ":images"
  assert out[2] == "--config.student.steps=3" and out[3] == "--config"
  assert out[4] == launch.config_file("teacher") + ":smoke" and out[5] == "--workdir=w"


def test_a_bad_config_ends_the_command_with_one_line_and_exit_code_2(monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", ["aligned-extract", "--config=extarct:things_images"])
  with pytest.raises(SystemExit) as exit_info:
    launch.start(lambda argv: pytest.fail("the command must not start"))
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: --config=extarct:things_images: extarct is not a file")


def test_every_command_is_a_console_script_and_a_checkout_shim():
  scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
  commands = sorted(
    p.stem for p in (REPO / "aligned" / "cli").glob("*.py") if p.stem not in ("__init__", "launch")
  )
  assert sorted(scripts) == sorted(f"aligned-{name.replace('_', '-')}" for name in commands)
  for name in commands:
    assert scripts[f"aligned-{name.replace('_', '-')}"] == f"aligned.cli.{name}:run"
    tree = ast.parse((REPO / "aligned" / "cli" / f"{name}.py").read_text())
    assert any(isinstance(node, ast.FunctionDef) and node.name == "run" for node in tree.body), name
    shim = (REPO / "experiments" / f"{name}.py").read_text()
    assert f"from aligned.cli.{name} import run" in shim, name
