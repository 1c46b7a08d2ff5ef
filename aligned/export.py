"""Export a trained student as a transformers model folder: "models out".

`export_student(config, workdir)` reads a finetune run (`config.run`, checkpoint `config.step`, -1 =
the latest) with `StudentEncoder` (every checkpoint array checked against the architecture) and
writes `workdir`, a folder transformers loads as it is:

  config.json               the backbone's transformers config: ViTConfig, CLIPVisionConfig,
                            Dinov2Config, SiglipVisionConfig (our SigLIP tower, as HF's
                            SiglipVisionModel reads it) or BertConfig (MiniLM text students)
  model.safetensors         the fine-tuned backbone under the PyTorch model's names and layouts
                            (Linear weights [out, in], conv weights [out, in, kh, kw], LayerNorm and
                            embedding `weight`), metadata {"format": "pt"}: `transformers.ViTModel
                            .from_pretrained(W)` loads it, and so does `FlaxViTModel.from_pretrained(W,
                            from_pt=True)`, without torch (SigLIP: PyTorch only; transformers has no
                            Flax SigLIP, ours reads the folder: `aligned.backbones.siglip`)
  triplet_head.safetensors  the triplet head as a torch.nn.Linear: `weight` [head_dim, d], `bias`
                            [head_dim]; head = pooled @ weight.T + bias, and dot products of head
                            outputs are the student's triplet similarities
  aligned_student.json      what the export is: backbone, the transformers classes, the pooled output
                            the head reads (`FORMATS`: exactly what `aligned.backbones` computes),
                            the preprocessing, head_dim, the source run, step and config, and sha256
                            digests of the checkpoint's files and of the two safetensors files
  preprocessor_config.json  image students: a ViTImageProcessor of the run's size and normalisation
                            (resize to S x S, no crop, bicubic, x / 255, (x - mean) / std). The run
                            resized with OpenCV's INTER_CUBIC (Keys' cubic A = -0.75, no antialiasing);
                            the processor resizes with PIL's bicubic (A = -0.5, antialiased when
                            shrinking): on a textured image shrunk 2.2x the pixels differ by 6 grey
                            levels on average (30 at most). For the run's inputs resize with
                            cv2.INTER_CUBIC and call the processor with do_resize=False
  tokenizer files           text students: the run's tokenizer, and sentence_bert_config.json (its
                            max_seq_length), so the folder is also a `minilm` checkpoint here

Names: transformers' Flax models use their PyTorch modules' names, so the Flax leaf `a/b/kernel` is
the tensor `a.b.weight` (Dense [in, out] -> [out, in]; Conv [kh, kw, in, out] -> [out, in, kh, kw]);
LayerNorm `scale` and Embed `embedding` are `weight`; other leaves keep their names. The Flax trees'
roots are the PyTorch models' own: no `vit.` prefix for ViTModel, `vision_model.` for
CLIPVisionModel, none for Dinov2Model and BertModel. SigLIP inverts
`aligned.backbones.siglip.params_from_hf` (the MAP head's q, k, v stacked into `in_proj_weight`).

`config.run` and `workdir` may be local paths or bucket URLs (`gs://...`). The files are written on
this host's disk first. On a disk the folder is written beside `workdir` under a temporary name and
renamed to `workdir` once every file is in it, so a failed export leaves no folder that looks
complete. In a bucket, which has no folders to rename, the files are uploaded one by one with
aligned_student.json last, under a marker object `.export-incomplete` that is removed at the end: a
folder is a complete export exactly when it has aligned_student.json and no marker. An existing
non-empty `workdir` is refused, unless `config.overwrite` and it holds an earlier export
(aligned_student.json) or an interrupted one (the marker), which is then replaced. On a disk a failed
overwrite leaves the earlier export as it was; in a bucket the earlier export is deleted (its
aligned_student.json first) before the new files are uploaded, so a failed overwrite leaves an
incomplete folder (the marker says so), never a mix that looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile

import flax
import ml_collections
import numpy as np
from etils import epath
from safetensors.numpy import save_file

from aligned import artifacts, paths
from aligned.backbones.preprocessing import NORMALIZATIONS
from aligned.backbones.student import StudentEncoder
from aligned.errors import DataError

EXPORT_FILE = "aligned_student.json"
HEAD_FILE = "triplet_head.safetensors"
INCOMPLETE_FILE = ".export-incomplete"  # in a bucket: the export in this folder is being written


@dataclasses.dataclass(frozen=True)
class Format:
  model: str  # the transformers PyTorch class that loads the folder
  flax_model: str | None  # the transformers Flax class (from_pt=True), if transformers has one
  pooled: str  # the student's pooled output, from that model's outputs


# The pooled output each backbone's student reads (its head's input), as `aligned.backbones` computes it.
FORMATS = {
  "vit": Format(
    "ViTModel",
    "FlaxViTModel",
    "outputs.last_hidden_state[:, 0]: the [CLS] token after the final LayerNorm (not "
    "outputs.pooler_output, ViT's tanh pooler, which is exported but unused)",
  ),
  "clip": Format(
    "CLIPVisionModel",
    "FlaxCLIPVisionModel",
    "outputs.pooler_output: the post-LayerNorm [CLS] token (no projection)",
  ),
  "dinov2": Format(
    "Dinov2Model", "FlaxDinov2Model", "outputs.pooler_output: the [CLS] token after the final LayerNorm"
  ),
  "siglip": Format(
    "SiglipVisionModel", None, "outputs.pooler_output: the multihead-attention-pooling (MAP) head's output"
  ),
  "minilm": Format(
    "BertModel",
    "FlaxBertModel",
    "m = attention_mask[..., None]; p = (outputs.last_hidden_state * m).sum(1) / max(m.sum(1), 1e-9); "
    "pooled = p / max(||p||_2, 1e-12): the masked mean of the last hidden states, L2-normalised",
  ),
}

RESIZE = (
  "cv2.resize(image, (S, S), interpolation=cv2.INTER_CUBIC) of the uint8 RGB image (grey repeated, "
  "alpha dropped), no crop, no antialiasing, rounded to uint8 (aligned.backbones.preprocessing."
  "resize_for_model); then x / 255 and (x - mean) / std per channel; [b, S, S, 3] -> NCHW "
  "(transpose(0, 3, 1, 2)) as pixel_values for the transformers classes"
)


# -- Flax parameters -> PyTorch state dicts -------------------------------------------------------


def torch_state_dict(params) -> dict[str, np.ndarray]:
  """A transformers Flax model's parameter tree -> its PyTorch model's state dict (names, layouts)."""
  state = {}
  for path, value in flax.traverse_util.flatten_dict(params).items():
    *modules, name = (str(k) for k in path)
    value = np.asarray(value)
    if name == "kernel" and value.ndim == 4:  # Conv [kh, kw, in, out] -> [out, in, kh, kw]
      name, value = "weight", value.transpose(3, 2, 0, 1)
    elif name == "kernel" and value.ndim == 2:  # Dense [in, out] -> Linear [out, in]
      name, value = "weight", value.T
    elif name == "kernel":
      raise ValueError(f"{'/'.join(path)}: a {value.ndim}-d kernel has no PyTorch layout here")
    elif name in ("scale", "embedding"):  # LayerNorm, Embed
      name = "weight"
    state[".".join([*modules, name])] = np.ascontiguousarray(value)
  return state


def siglip_state_dict(params, num_hidden_layers: int) -> dict[str, np.ndarray]:
  """Our SigLIP tower's parameters -> HF SiglipVisionModel's state dict: `params_from_hf` inverted."""
  p = "vision_model"
  state = {}

  def linear(prefix, tree):
    state[f"{prefix}.weight"], state[f"{prefix}.bias"] = tree["kernel"].T, tree["bias"]

  def norm(prefix, tree):
    state[f"{prefix}.weight"], state[f"{prefix}.bias"] = tree["scale"], tree["bias"]

  state[f"{p}.embeddings.patch_embedding.weight"] = params["patch_embedding"]["kernel"].transpose(3, 2, 0, 1)
  state[f"{p}.embeddings.patch_embedding.bias"] = params["patch_embedding"]["bias"]
  state[f"{p}.embeddings.position_embedding.weight"] = params["position_embedding"]
  norm(f"{p}.post_layernorm", params["post_layernorm"])
  for i in range(num_hidden_layers):
    layer, tree = f"{p}.encoder.layers.{i}", params[f"layer_{i}"]
    norm(f"{layer}.layer_norm1", tree["layer_norm1"])
    norm(f"{layer}.layer_norm2", tree["layer_norm2"])
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
      linear(f"{layer}.self_attn.{name}", tree["self_attn"][name])
    for name in ("fc1", "fc2"):
      linear(f"{layer}.mlp.{name}", tree["mlp"][name])
  head = params["head"]
  state[f"{p}.head.probe"] = head["probe"]
  # torch.nn.MultiheadAttention: q, k, v projections stacked in one in_proj ([3h, h] and [3h]).
  qkv = [head["attention"][name] for name in ("q_proj", "k_proj", "v_proj")]
  state[f"{p}.head.attention.in_proj_weight"] = np.concatenate([t["kernel"].T for t in qkv])
  state[f"{p}.head.attention.in_proj_bias"] = np.concatenate([t["bias"] for t in qkv])
  linear(f"{p}.head.attention.out_proj", head["attention"]["out_proj"])
  norm(f"{p}.head.layernorm", head["layernorm"])
  for name in ("fc1", "fc2"):
    linear(f"{p}.head.mlp.{name}", head["mlp"][name])
  return {k: np.ascontiguousarray(v) for k, v in state.items()}


def transformers_config(name: str, backbone) -> dict:
  """The backbone's transformers config as config.json holds it."""
  if name == "siglip":
    import transformers

    config = transformers.SiglipVisionConfig(
      **dataclasses.asdict(backbone.config), num_channels=3, hidden_act="gelu_pytorch_tanh"
    )
  elif name == "minilm":
    config = backbone.module.config  # FlaxBertModule's BertConfig
  else:
    config = backbone.config
  return {**config.to_diff_dict(), "architectures": [FORMATS[name].model]}


# -- The export ----------------------------------------------------------------------------------


def _check_target(workdir: epath.Path, run: epath.Path, overwrite: bool) -> None:
  if run == workdir or workdir in run.parents:
    raise DataError(workdir, f"the export folder holds the run {run}; choose another workdir")
  if not workdir.exists():
    return
  if not workdir.is_dir():
    raise DataError(workdir, "exists and is not a folder")
  if not any(workdir.iterdir()):
    return
  if not overwrite:
    raise DataError(
      workdir, "exists and is not empty; set config.overwrite=True to replace an earlier export"
    )
  if not ((workdir / EXPORT_FILE).is_file() or (workdir / INCOMPLETE_FILE).is_file()):
    raise DataError(
      workdir,
      f"overwrite replaces only an earlier export (a folder with {EXPORT_FILE}); this is something else",
    )


def _checkpoint_digests(folder: str | os.PathLike) -> dict[str, str]:
  folder = paths.as_path(folder)
  return {str(p.relative_to(folder)): artifacts.sha256_of(p) for p in paths.files_under(folder)}


def _staging_folder(parent: pathlib.Path | None, name: str) -> pathlib.Path:
  """A new empty local folder for the export's files (safetensors and transformers' save_pretrained
  write files themselves): beside `workdir` on its disk (`parent`), or in the host's temporary
  folder (None: the export goes to a bucket)."""
  prefix = f".{name}.export-"
  folder = tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=".tmp")  # local: for save_file
  return paths.require_local(folder, "the export's staging folder")


def _shareable(folder: pathlib.Path) -> None:
  """The modes a plain write gives (mkdtemp and the atomic writes' mkstemp make folders and files private)."""
  umask = os.umask(0)
  os.umask(umask)
  for path in folder.iterdir():
    path.chmod(0o666 & ~umask)
  folder.chmod(0o777 & ~umask)


def _write(encoder: StudentEncoder, folder: pathlib.Path, source: dict) -> dict:
  """Every file of the export into `folder`; returns the aligned_student.json record."""
  name, backbone, params = encoder.config["backbone"], encoder.backbone, encoder.params
  if name == "siglip":
    state = siglip_state_dict(params["backbone"], backbone.config.num_hidden_layers)
  else:
    state = torch_state_dict(params["backbone"])
  save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
  head = {
    "weight": np.ascontiguousarray(params["head"]["kernel"].T),
    "bias": np.ascontiguousarray(params["head"]["bias"]),
  }
  save_file(head, folder / HEAD_FILE, metadata={"format": "pt"})
  artifacts.write_json(folder / "config.json", transformers_config(name, backbone))

  form = FORMATS[name]
  record = {
    "format": "aligned student export 1",
    "backbone": name,
    "kind": encoder.kind,
    "transformers_class": form.model,
    "transformers_flax_class": form.flax_model,
    "pooled": form.pooled,
    "pooled_dim": int(backbone.dim),
    "head_dim": int(encoder.config["head_dim"]),
    "head": f"{HEAD_FILE}: head = pooled @ weight.T + bias (weight [head_dim, pooled_dim]); dot products of "
    "head outputs are the student's triplet similarities (what the AligNet loss trained)",
  }
  if encoder.kind == "image":
    mean, std = NORMALIZATIONS[encoder.normalization]
    record["image_size"] = int(encoder.image_size)
    record["normalization"] = {"name": encoder.normalization, "mean": list(mean), "std": list(std)}
    record["resize"] = RESIZE
    record["preprocessor_config"] = (
      "preprocessor_config.json: transformers' ViTImageProcessor with this size and normalisation; it "
      "resizes with PIL's bicubic (A = -0.5, antialiased when shrinking), not the OpenCV INTER_CUBIC "
      "(A = -0.75, no antialiasing) the run used, so its pixels differ (by grey levels, more when "
      "shrinking a lot): for the run's inputs resize with cv2 and pass do_resize=False"
    )
    artifacts.write_json(
      folder / "preprocessor_config.json",
      {
        "image_processor_type": "ViTImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"height": int(encoder.image_size), "width": int(encoder.image_size)},
        "resample": 3,  # PIL.Image.BICUBIC
        "do_center_crop": False,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": encoder.normalization != "none",
        "image_mean": list(mean),
        "image_std": list(std),
      },
    )
  else:
    backbone.tokenizer.save_pretrained(folder)
    artifacts.write_json(
      folder / "sentence_bert_config.json", {"max_seq_length": backbone.max_length, "do_lower_case": False}
    )
    record["max_length"] = int(backbone.max_length)
    record["tokenize"] = (
      "tokenizer(texts, truncation=True, max_length=max_length, padding=True) with the tokenizer in this "
      "folder; input_ids, attention_mask and token_type_ids go to the model"
    )
  record["source"] = source
  record["sha256"] = {f: artifacts.sha256_of(folder / f) for f in ("model.safetensors", HEAD_FILE)}
  artifacts.write_json(folder / EXPORT_FILE, record)
  return record


def export_student(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Writes the student run `config.run` (step `config.step`, -1 = latest) as a transformers folder
  `workdir` (see the module docstring); returns a summary."""
  if not config.run:
    raise DataError(None, "config.run: set it to a finetune workdir")
  run, workdir = paths.absolute(config.run), paths.absolute(workdir)
  _check_target(workdir, run, config.overwrite)
  # The backbone is checked before the model is read (StudentEncoder refuses what is not a run).
  run_config = run / "config.json"
  name = json.loads(run_config.read_text()).get("backbone") if run_config.is_file() else None
  if name is not None and name not in FORMATS:
    raise DataError(run_config, f"backbone {name!r} cannot be exported (exportable: {', '.join(FORMATS)})")
  encoder = StudentEncoder(run, "head", None if config.step < 0 else config.step)
  source = {
    "run": str(run),
    "step": int(encoder.step),
    "checkpoint_sha256": _checkpoint_digests(encoder.checkpoint),
    "run_config": encoder.config,
  }

  if paths.is_local(workdir):
    record = _export_on_disk(encoder, paths.require_local(workdir, "exported"), source)
  else:
    record = _export_to_bucket(encoder, workdir, source)
  return {
    "export": str(workdir),
    "run": source["run"],
    "step": source["step"],
    "backbone": record["backbone"],
    "transformers_class": record["transformers_class"],
    "head_dim": record["head_dim"],
    "parameters": int(sum(v.size for v in flax.traverse_util.flatten_dict(encoder.params).values())),
    "files": sorted(p.name for p in workdir.iterdir()),
  }


def _export_on_disk(encoder: StudentEncoder, workdir: pathlib.Path, source: dict) -> dict:
  """The files written into a folder beside `workdir`, which is then renamed to it."""
  for stale in workdir.parent.glob(f".{workdir.name}.export-*.tmp"):  # left by a killed export
    paths.rmtree(stale)
  workdir.parent.mkdir(parents=True, exist_ok=True)
  folder = _staging_folder(workdir.parent, workdir.name)
  earlier = None
  try:
    record = _write(encoder, folder, source)
    _shareable(folder)
    if workdir.exists():  # empty, or an earlier export (checked above): moved aside, then deleted
      earlier = _staging_folder(workdir.parent, workdir.name)
      os.replace(workdir, earlier)  # local: a rename on one disk, so that the folder is never half replaced
    os.replace(folder, workdir)  # local: a rename on one disk, so that the export appears whole
  finally:
    paths.rmtree(folder)
  if earlier is not None:
    paths.rmtree(earlier)
  return record


def _export_to_bucket(encoder: StudentEncoder, workdir: epath.Path, source: dict) -> dict:
  """The files written on this host's disk, then uploaded under the marker, aligned_student.json last."""
  folder = _staging_folder(None, workdir.name)
  try:
    record = _write(encoder, folder, source)
    marker = workdir / INCOMPLETE_FILE
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("an export is being written here (aligned.export); it is complete without this file\n")
    if workdir.exists():  # an earlier export (checked above): its record first, so it never looks whole
      (workdir / EXPORT_FILE).unlink(missing_ok=True)
      for earlier in workdir.iterdir():
        if earlier.is_dir():
          paths.rmtree(earlier)
        elif earlier.name != INCOMPLETE_FILE:
          earlier.unlink()
    for file in sorted(folder.iterdir(), key=lambda p: p.name == EXPORT_FILE):  # the record last
      paths.copy_file(file, workdir / file.name)
    marker.unlink()
  finally:
    paths.rmtree(folder)
  return record


def format_results(results: dict) -> str:
  return (
    f"exported {results['run']} step {results['step']} ({results['backbone']}, "
    f"{results['parameters'] / 1e6:.2f} M parameters, head {results['head_dim']}) to {results['export']}\n"
    f"load it: transformers.{results['transformers_class']}.from_pretrained({results['export']!r}) "
    f"(see {EXPORT_FILE} for the pooled output, the head and the preprocessing)"
  )
