"""Fill the data folder ($ALIGNED_DATA, default ~/.cache/aligned/data) from the manifest's origins.

aligned-download-data            # fetch what is missing, check every sha256
aligned-download-data --verify   # only check, fetch nothing
"""

import sys

from absl import flags

from aligned.cli.launch import start
from aligned.data import cache

_VERIFY = flags.DEFINE_bool("verify", False, "only check the files present; fetch nothing")
_ROOT = flags.DEFINE_string("root", None, "data folder (default: $ALIGNED_DATA or the cache)")


def main(argv):
  del argv
  root = _ROOT.value or cache.data_dir()
  if not _VERIFY.value:
    fetched = cache.download(root)
    print(f"fetched {len(fetched)} files into {root}")
  status = cache.verify(root)
  bad = {path: state for path, state in status.items() if state != "ok"}
  for path, state in bad.items():
    print(f"{state}: {path}", file=sys.stderr)
  print(f"{len(status) - len(bad)}/{len(status)} files verified in {root}")
  sys.exit(1 if bad else 0)


def run():
  start(main)


if __name__ == "__main__":
  run()
