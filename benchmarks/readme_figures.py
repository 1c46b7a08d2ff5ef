"""README's figures from a run of main: regenerated from a demo workdir, written into README.md or checked.

  python -m benchmarks.readme_figures --workdir=runs/demo            # print the blocks
  python -m benchmarks.readme_figures --workdir=runs/demo --check    # exit 1 with a diff if README differs
  python -m benchmarks.readme_figures --workdir=runs/demo --write    # replace the blocks in README.md
  python -m benchmarks.readme_figures --workdir=runs/demo --run ...  # run `make demo`'s command first

Each block sits in README.md between `<!-- NAME:begin -->` and `<!-- NAME:end -->` lines:
- `demo-table`: what `make demo` prints, byte for byte (`aligned.demo.format_results` of the workdir's
  `results.json`, the function the command prints with) but for the data folder, spelled
  `$ALIGNED_DATA`, in a code fence;
- `eval-table`: the markdown table of the evaluation section (SPoSE and both MiniLM inputs, from the
  demo's `eval/reference`, `eval/base` and `eval/backbone` results: RSA intervals from the demo's 200
  bootstrap resamples of objects, where `aligned-evaluate` alone takes 1,000).

The `wall time` line is the one machine-dependent line: `--check` leaves it out of the comparison, and
`--write --keep-wall-time` keeps README's line (e.g. when the run shared its cores with other work).
Every other figure is bit-reproducible on one machine (README, "Reproducibility").
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

from aligned.data.cache import data_dir
from aligned.demo import format_results
from aligned.report.tables import markdown_table, num, pct

README = Path(__file__).resolve().parent.parent / "README.md"
MACHINE_DEPENDENT = ("wall time ",)  # lines that differ between machines and runs: kept out of --check

# (evaluation folder of the demo, name in README's evaluation table)
EVAL_ROWS = (
  ("reference", "SPoSE 49-d"),
  ("base", "MiniLM `{word}`"),
  ("backbone", "MiniLM `{word}: {definition}`"),
)
EVAL_HEADER = ["run", "THINGS accuracy [95 % CI]", "T (CV)", "ECE", "RSA Spearman [95 % CI]"]


def demo_block(results: dict, data_folder: str | None = None) -> str:
  """The demo's printed table, fenced, with the data folder's path spelled `$ALIGNED_DATA`."""
  text = format_results(results)
  if data_folder:
    text = text.replace(str(data_folder).rstrip("/") + "/", "$ALIGNED_DATA/")
  return "```\n" + text + "\n```"


def eval_table(evaluations: dict[str, dict]) -> str:
  """README's evaluation table from the demo's evaluation results ({folder: results.json})."""
  rows = []
  for folder, name in EVAL_ROWS:
    r = evaluations[folder]
    u = r.get("uncertainty") or {}
    rows.append(
      [
        name,
        pct(r["accuracy"], r.get("accuracy_ci95")),
        num(u.get("temperature")),
        num(u.get("ece")),
        num(r.get("rsa_spearman"), r.get("rsa_spearman_ci95")),
      ]
    )
  return markdown_table(EVAL_HEADER, rows)


def blocks(workdir: str | os.PathLike, data_folder: str | None = None) -> dict[str, str]:
  """Every README block a finished demo workdir gives (`eval-table` only when its evaluations exist);
  `data_folder` (default: the current one, `aligned.data.cache.data_dir()`) is spelled `$ALIGNED_DATA`."""
  workdir = Path(workdir)
  results = workdir / "results.json"
  if not results.exists():
    raise FileNotFoundError(f"{results}: no finished demo here (run `make demo`, or pass --run)")
  data_folder = str(data_dir()) if data_folder is None else data_folder
  out = {"demo-table": demo_block(json.loads(results.read_text()), data_folder)}
  evals = {folder: workdir / "eval" / folder / "results.json" for folder, _ in EVAL_ROWS}
  if all(p.exists() for p in evals.values()):
    out["eval-table"] = eval_table({k: json.loads(p.read_text()) for k, p in evals.items()})
  return out


def _markers(name: str) -> tuple[str, str]:
  return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def _span(text: str, name: str) -> tuple[int, int]:
  """Start and end offsets of the block's content (between the marker lines) in `text`."""
  begin, end = _markers(name)
  if text.count(begin) != 1 or text.count(end) != 1:
    raise ValueError(f"README needs exactly one {begin!r} and one {end!r} line")
  start = text.index(begin) + len(begin) + 1  # the content starts on the line after the marker
  stop = text.index(end)
  if stop < start:
    raise ValueError(f"{end!r} comes before {begin!r}")
  return start, stop


def read_block(text: str, name: str) -> str:
  start, stop = _span(text, name)
  return text[start:stop].removesuffix("\n")


def _prefix(line: str) -> str | None:
  return next((p for p in MACHINE_DEPENDENT if line.startswith(p)), None)


def replace_block(text: str, name: str, block: str, keep_machine_lines: bool = False) -> str:
  """`text` with the content between the block's markers replaced by `block` (with
  `keep_machine_lines`, the old block's machine-dependent lines stay)."""
  if keep_machine_lines:
    old = {_prefix(line): line for line in read_block(text, name).split("\n") if _prefix(line)}
    block = "\n".join(old.get(_prefix(line), line) for line in block.split("\n"))
  start, stop = _span(text, name)
  return text[:start] + block + "\n" + text[stop:]


def comparable(block: str) -> list[str]:
  """The block's lines less the machine-dependent ones."""
  return [line for line in block.split("\n") if not _prefix(line)]


def differences(text: str, new: dict[str, str]) -> str:
  """A unified diff of README's blocks against `new` (machine-dependent lines left out); '' when equal."""
  out = []
  for name, block in new.items():
    old = comparable(read_block(text, name))
    out += difflib.unified_diff(
      old, comparable(block), f"README.md {name}", f"the run's {name}", lineterm="", n=1
    )
  return "\n".join(out)


def run_demo(workdir: str | os.PathLike) -> None:
  """`make demo`'s command into `workdir` (skips what is done there)."""
  command = [sys.executable, "-m", "experiments.demo", "--config=demo", f"--workdir={workdir}"]
  subprocess.run(command, check=True, cwd=README.parent)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/demo", help="a finished `make demo` workdir")
  parser.add_argument("--run", action="store_true", help="run the demo into --workdir first")
  action = parser.add_mutually_exclusive_group()
  action.add_argument("--check", action="store_true", help="exit 1 with a diff if README's blocks differ")
  action.add_argument("--write", action="store_true", help="replace README's blocks")
  parser.add_argument("--keep-wall-time", action="store_true", help="with --write: keep README's wall time")
  parser.add_argument("--readme", default=str(README))
  parser.add_argument("--data-folder", help="the run's data folder (default: $ALIGNED_DATA's)")
  args = parser.parse_args(argv)

  if args.run:
    run_demo(args.workdir)
  readme = Path(args.readme)
  try:
    return _act(args, blocks(args.workdir, args.data_folder), readme)
  except (ValueError, FileNotFoundError) as e:  # no finished demo, or README without its markers
    print(f"error: {e}", file=sys.stderr)
    return 2


def _act(args, new: dict[str, str], readme: Path) -> int:
  if args.check:
    diff = differences(readme.read_text(), new)
    if diff:
      print(diff)
      print(f"{readme}: differs from {args.workdir} (update it with --write)")
      return 1
    print(f"{readme}: {', '.join(new)} as in {args.workdir} (wall time not compared)")
  elif args.write:
    text = readme.read_text()
    for name, block in new.items():
      text = replace_block(text, name, block, args.keep_wall_time)
    readme.write_text(text)
    print(f"{readme}: {', '.join(new)} written from {args.workdir}")
  else:
    print("\n\n".join(f"<!-- {name} -->\n{block}" for name, block in new.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
