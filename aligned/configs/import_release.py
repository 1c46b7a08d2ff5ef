"""Import the official AligNet release's triplet files into this project's layout.

  aligned-import-release --config=import_release --config.root=RELEASE --workdir=W

Reads RELEASE/{transform}/{split}_{sampling}.npz (the release README's order: s12 < s01 and s12 < s02),
re-orders each row to ours (s01 largest), validates it and writes W/{transform}/{split}_{sampling}.npz
and W/manifest.json (rows, rows re-ordered, sha256 of source and output per file). W is then a
`data.root` for aligned-finetune.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant:
    raise ValueError(f"unknown variant {variant!r}; import_release has none")
  config = ml_collections.ConfigDict()
  config.root = ""  # the release folder (a local copy or a mounted bucket)
  config.files = ()  # paths relative to root; empty: every {transform}/{split}_{sampling}.npz under it
  config.n_images = 1_281_167  # indices must be below it (ImageNet-2012 train); 0 = unchecked
  config.chunk_rows = 1 << 16  # rows per streamed chunk (bounds memory)
  return config
