"""Portable artifacts of a trained run, with proven parity: the library behind `python -m bsa_jax.export`.

For the run's validation-selected checkpoint (or `--step`), `export_run` writes to the output folder:

- `model.onnx`: an ONNX graph (opset 18) made by `bsa_jax.tools.jaxpr_onnx` from the model's jaxpr;
- `model.jax_export`: `jax.export`'s serialization of the jitted function (a StableHLO module with its
  calling convention), lowered for the platforms listed in `model.json`;
- `model.json`: what a consumer needs (input size, RGB channel order, NHWC layout, normalisation,
  output meaning and threshold), the artifacts' sha256 and the run's provenance and test metrics.

Both artifacts take `image` float32 (B, S, S, 3), B free (symbolic), already resized and normalised, and
return `probabilities` float32 (B, S, S, K): the sigmoid of the logit for one class, else the softmax.
`check_export` runs both on real images against the JAX model and reports the max absolute
difference of the probabilities.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bsa_jax import config_lib
from bsa_jax import models
from bsa_jax.data import checksums
from bsa_jax.data import io
from bsa_jax.data import preprocess
from bsa_jax.data import registry
from bsa_jax.eval.evaluate import git_commit
from bsa_jax.tools import jaxpr_onnx
from bsa_jax.workdir.load import load_config
from bsa_jax.workdir.load import load_trained


ONNX_FILE = "model.onnx"
STABLEHLO_FILE = "model.jax_export"
CARD_FILE = "model.json"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
TOLERANCE = 1e-4  # on probabilities, the target
FORMAT_VERSION = 1


class ExportError(ValueError):
  """A run that cannot be exported (or a failed check); the message says why and what to do."""


# ----------------------------------------------------------------------------------------------------
# What can be exported.

def refusal(config) -> str | None:
  """Why the run's model cannot be exported as one image -> probabilities function, or None."""
  if config.data.get("enhance"):
    return (f"model {config.model_name!r} takes a second input, the {config.data.enhance!r}-enhanced "
            "image computed in numpy (bsa_jax/data/enhance.py), which an ONNX/StableHLO consumer "
            "cannot reproduce from the model file; export supports single-input models "
            "(bsanet, unet, unetpp, pranet, ldnet, sanet).")
  if config.model_name == "din":
    return ("model 'din' needs the enhanced image as a second input (config.data.enhance); export "
            "supports single-input models (bsanet, unet, unetpp, pranet, ldnet, sanet).")
  dtype = config.train.get("compute_dtype", "float32")
  if dtype != "float32":
    return (f"the run computes in {dtype}; export supports float32 models only (onnxruntime's CPU "
            f"kernels lack {dtype}). Retrain with --config.train.compute_dtype=float32.")
  return None


def refuse_unexportable(workdir: str) -> None:
  """Raises `ExportError` naming the reason if the run in `workdir` cannot be exported."""
  reason = refusal(load_config(os.path.abspath(workdir)))
  if reason:
    raise ExportError(f"{workdir}: cannot export: {reason}")


def probability_fn(trained):
  """image (B, S, S, 3) normalised float32 -> probabilities (B, S, S, K) with the run's weights."""
  model = models.build_model(trained.config)
  variables = trained.variables
  num_classes = int(trained.config.model.num_classes)

  def fn(image):
    logits = model.apply(variables, image, train=False)[0].astype(jnp.float32)  # (B, S, S, K)
    return jax.nn.sigmoid(logits) if num_classes == 1 else jax.nn.softmax(logits, axis=-1)

  return fn


def input_spec(size: int) -> jax.ShapeDtypeStruct:
  """(B, size, size, 3) float32 with B symbolic."""
  (batch,) = jax.export.symbolic_shape("B")
  return jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)


# ----------------------------------------------------------------------------------------------------
# Writing the artifacts.

def write_stablehlo(fn, spec, path: str, platforms: Sequence[str]) -> dict:
  """Serializes `jax.export` of jit(fn) for `platforms`; returns its model-card entry."""
  exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(spec)
  with open(path, "wb") as f:
    f.write(exported.serialize())
  return {"file": os.path.basename(path), "platforms": list(exported.platforms),
          "calling_convention_version": exported.calling_convention_version,
          "jax_version": jax.__version__, "sha256": checksums.file_sha256(path),
          "load": "jax.export.deserialize(open(path, 'rb').read()).call(image)"}


def write_onnx(fn, spec, path: str, doc: str) -> dict:
  """Converts fn to ONNX (bsa_jax/tools/jaxpr_onnx.py) and saves it; returns its model-card entry."""
  import onnx  # onnx: only when exporting
  try:
    model = jaxpr_onnx.convert(fn, [spec], ["image"], ["probabilities"], model_name="bsa_jax",
                               doc=doc)
  except jaxpr_onnx.UnsupportedError as e:
    raise ExportError(f"ONNX export failed: {e}. The StableHLO artifact does not need it; report "
                      "the primitive so a translation can be added.") from None
  onnx.save(model, path)
  return {"file": os.path.basename(path), "opset": jaxpr_onnx.OPSET, "onnx_version": onnx.__version__,
          "converter": "bsa_jax.tools.jaxpr_onnx (lax primitives -> ONNX, exact)",
          "sha256": checksums.file_sha256(path),
          "load": "onnxruntime.InferenceSession(path).run(None, {'image': image})[0]"}


def _read_results(workdir: str) -> dict:
  path = os.path.join(workdir, "results", "test_metrics.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _count_params(variables) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(variables.get("params", {}))))


def model_card(trained, workdir: str, artifacts: dict, threshold: float = 0.5) -> dict:
  """Everything a consumer of the artifacts needs, and where they came from."""
  config, size = trained.config, trained.image_size
  num_classes = int(config.model.num_classes)
  norm = config.data.normalize
  if norm == "imagenet":
    normalisation = {"mode": "imagenet", "formula": "(rgb / 255 - mean) / std",
                     "mean": preprocess.IMAGENET_MEAN.tolist(), "std": preprocess.IMAGENET_STD.tolist()}
  else:
    normalisation = {"mode": norm, "formula": "rgb / 255"}
  results = _read_results(workdir)
  binary = num_classes == 1
  return {
      "format_version": FORMAT_VERSION,
      "model": {"name": config.model_name, "variant": config.model.get("variant", ""),
                "num_classes": num_classes, "parameters": _count_params(trained.variables)},
      "input": {
          "name": "image", "shape": ["B", size, size, 3], "dtype": "float32", "layout": "NHWC",
          "channel_order": "RGB", "batch": "any size (symbolic B)",
          "resize": f"the uint8 RGB image resized to {size}x{size}, bilinear "
                    "(PIL Image.BILINEAR, as bsa_jax/data/preprocess.py)",
          "normalisation": normalisation,
      },
      "output": {
          "name": "probabilities", "shape": ["B", size, size, num_classes], "dtype": "float32",
          "meaning": ("foreground probability: sigmoid of the model's logit" if binary else
                      "class probabilities: softmax of the model's logits over the last axis"),
          "threshold": threshold if binary else None,
          "mask": (f"probability >= {threshold} is foreground" if binary else
                   "argmax over the last axis"),
          "to_image_size": "resize the map bilinearly to the image's size (predict resizes the "
                           "logits, then applies the sigmoid; the two differ by interpolation only)",
      },
      "artifacts": artifacts,
      "provenance": {
          "workdir": os.path.abspath(workdir),
          "checkpoint_step": int(trained.step),
          "selection": trained.selection,
          "config_hash": config_lib.config_hash(config),
          "training_commit": results.get("provenance", {}).get("commit"),
          "datasets_sha256": results.get("provenance", {}).get("datasets_sha256"),
          "export_commit": git_commit(),
          "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      },
      "test_metrics": results.get("results", {}),
  }


def export_run(workdir: str, out_dir: str, *, step: str = "best",
               platforms: Sequence[str] = DEFAULT_PLATFORMS, threshold: float = 0.5,
               trained=None) -> dict:
  """Writes model.onnx, model.jax_export and model.json for a trained run; returns the model card.

  Args:
    workdir: a run written by `launch.py`.
    out_dir: the output folder (created).
    step: 'best' (validation-selected), 'latest' or a step number.
    platforms: `jax.export` lowering platforms for the StableHLO artifact.
    threshold: the mask threshold recorded in the card (binary models).
    trained: an already loaded `Trained` of `workdir` (saves a reload).
  """
  refuse_unexportable(workdir)
  trained = trained or load_trained(workdir, step)
  os.makedirs(out_dir, exist_ok=True)
  fn, spec = probability_fn(trained), input_spec(trained.image_size)
  doc = (f"bsa_jax {trained.config.model_name} step {trained.step} ({trained.selection}); "
         "see model.json")
  artifacts = {
      "stablehlo": write_stablehlo(fn, spec, os.path.join(out_dir, STABLEHLO_FILE), platforms),
      "onnx": write_onnx(fn, spec, os.path.join(out_dir, ONNX_FILE), doc),
  }
  card = model_card(trained, workdir, artifacts, threshold)
  with open(os.path.join(out_dir, CARD_FILE), "w") as f:
    json.dump(card, f, indent=2)
  return card


# ----------------------------------------------------------------------------------------------------
# Parity check.

def default_check_images(config, count: int) -> list[str]:
  """The first `count` images (natural order) of the run's first test dataset under the data root."""
  root = config.data.root or config_lib.default_data_root()
  names = [n.split(":")[0] for n in tuple(config.data.test) + tuple(config.data.val)]
  for name in names:
    try:
      return [e.image for e in registry.find_examples(name, root)[:count]]
    except (io.DataError, FileNotFoundError, OSError):
      continue
  raise ExportError(f"--check found none of the run's datasets {names} under {root}; pass real "
                    "images with --check_images=<folder or files> (or set $BSA_DATA_DIR).")


def preprocess_images(paths: Sequence[str], size: int, normalize: str) -> np.ndarray:
  """float32 (N, size, size, 3): each file read, resized and normalised exactly as `predict` does."""
  return np.stack([preprocess.normalize(preprocess.resize_image(io.load_image(p), size), normalize)
                   for p in paths])


def _expand_paths(items: Sequence[str]) -> list[str]:
  paths = []
  for item in items:
    if os.path.isdir(item):
      paths += sorted(os.path.join(item, n) for n in os.listdir(item) if io.is_image_file(n))
    elif os.path.exists(item):
      paths.append(item)
    else:
      raise ExportError(f"--check_images {item}: no such file or folder.")
  return paths


def load_onnx(path: str):
  """batch (N, S, S, 3) -> probabilities, through onnxruntime's CPU provider."""
  import onnxruntime as ort  # onnxruntime: only for the --check parity run
  session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
  return lambda batch: session.run(None, {"image": batch})[0]


def load_stablehlo(path: str):
  """batch (N, S, S, 3) -> probabilities, through `jax.export.deserialize(...).call` (jitted)."""
  with open(path, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  call = jax.jit(exported.call)
  return lambda batch: np.asarray(call(batch))


def check_export(trained, out_dir: str, image_paths: Sequence[str], batch_size: int = 4) -> dict:
  """Max |artifact - JAX| of the probabilities on real images, per artifact, plus mask agreement.

  The images go through in batches of `batch_size` and once more one at a time (the artifacts'
  batch is symbolic, so both sizes must work).
  """
  paths = _expand_paths(image_paths)
  if not paths:
    raise ExportError(f"--check_images {list(image_paths)}: no image files.")
  batch = preprocess_images(paths, trained.image_size, trained.config.data.normalize)  # (N, S, S, 3)
  reference = np.asarray(jax.jit(probability_fn(trained))(batch))  # (N, S, S, K)
  loaders = {"stablehlo": (load_stablehlo, STABLEHLO_FILE), "onnx": (load_onnx, ONNX_FILE)}
  report = {"images": len(paths), "per_artifact": {}}
  for name, (load, file_name) in loaders.items():
    run_artifact = load(os.path.join(out_dir, file_name))
    got = np.concatenate([run_artifact(batch[i:i + batch_size])
                          for i in range(0, len(batch), batch_size)])
    single = run_artifact(batch[:1])  # a batch of one through the same artifact
    diff = max(float(np.abs(got - reference).max()), float(np.abs(single - reference[:1]).max()))
    report["per_artifact"][name] = {
        "max_abs_diff": diff,
        "mask_pixels_differing": float(np.mean((got >= 0.5) != (reference >= 0.5))),
    }
  report["max_abs_diff"] = max(r["max_abs_diff"] for r in report["per_artifact"].values())
  report["passed"] = report["max_abs_diff"] <= TOLERANCE
  return report


def run(workdir: str, out_dir: str, *, step: str = "best", check: bool = False,
        check_images: Sequence[str] = (), num_check_images: int = 8,
        platforms: Sequence[str] = DEFAULT_PLATFORMS, threshold: float = 0.5) -> dict:
  """Exports the run and, with `check`, verifies both artifacts on real images; returns
  {"card": model card, "check": report or None}. The report is also stored in model.json."""
  refuse_unexportable(workdir)  # before the (slow) restore
  trained = load_trained(workdir, step)
  card = export_run(workdir, out_dir, step=step, platforms=platforms, threshold=threshold,
                    trained=trained)
  report = None
  if check:
    images = list(check_images) or default_check_images(trained.config, num_check_images)
    report = check_export(trained, out_dir, images)
    card["check"] = {**report, "tolerance": TOLERANCE,
                     "images_from": list(check_images) or "the run's first test dataset"}
    with open(os.path.join(out_dir, CARD_FILE), "w") as f:
      json.dump(card, f, indent=2)
  return {"card": card, "check": report}
