"""Import the official release's AligNet files: `aligned-import-release --config.root=RELEASE --workdir=W`."""

from absl import flags
from ml_collections import config_flags

from aligned.cli.launch import config_file, run_job, start
from aligned.data.alignet_files import format_import, import_release

_CONFIG = config_flags.DEFINE_config_file("config", config_file("import_release"), "release import config")
_WORKDIR = flags.DEFINE_string(
  "workdir", "runs/alignet_release", "where our-layout files and manifest.json go"
)


def main(argv):
  del argv
  run_job(import_release, format_import, _CONFIG.value, _WORKDIR.value)


def run():
  start(main)


if __name__ == "__main__":
  run()
