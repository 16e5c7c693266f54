"""The config schema: every key the trainer, data, model and eval code read, with defaults.

  python -m bsa_jax.config_lib configs/kvasir.py[:arg]     # prints every key of a config

Experiment configs in `configs/` start from `base_config()` and override values; they never add keys
the code does not read. The returned config is locked by `launch.py`, so a mistyped
`--config.train.lrr=...` fails before anything compiles, naming the nearest key.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import math
import os

import ml_collections as mlc

from bsa_jax import cli

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_data_root() -> str:
  """Where datasets live: $BSA_DATA_DIR, else `data/` in the repository (put or symlink them there)."""
  return os.environ.get("BSA_DATA_DIR") or os.path.join(REPO_ROOT, "data")


def base_config() -> mlc.ConfigDict:
  """Defaults shared by every experiment (the BSA-Net paper protocol where it says something)."""
  c = mlc.ConfigDict()
  c.seed = 0

  # Model: `bsa_jax.models.<model_name>.Model(**config.model)`.
  c.model_name = "bsanet"
  c.model = mlc.ConfigDict({"variant": "paper", "num_classes": 1})
  # Initialisation: a converted checkpoint dir (see `python -m bsa_jax.models.convert`), a timm name
  # `timm:<name>` (fetched and converted once, cached; bsa_jax/models/pretrained.py), or '' / 'none'
  # (from scratch).
  c.model_init = ""
  # Start from another run when this workdir holds no checkpoint (e.g. fine-tune a trained run): a
  # step dir, or a run's checkpoints/ dir (its best validation step if scored, else its latest).
  c.resume = ""

  c.data = mlc.ConfigDict()
  c.data.root = ""  # '' -> $BSA_DATA_DIR, else <repo>/data
  c.data.image_size = 256
  # "<dataset>:<split>" entries; the train entries are concatenated, val/test are scored per dataset.
  c.data.train = ("kvasir_seg:pranet_train", "cvc_clinicdb:pranet_train")
  c.data.val = ("kvasir_seg:pranet_val", "cvc_clinicdb:pranet_val")
  c.data.test = ("kvasir_seg:pranet_test", "cvc_colondb:all")
  # A dataset (or part of a split) not on disk: error (stop, naming where it was expected) | skip
  # (leave it out with a warning; a test set left out is a "not run" cell of the tables).
  c.data.missing = "error"
  c.data.normalize = "imagenet"
  c.data.augment = mlc.ConfigDict({
      "enabled": False,  # the paper trains without augmentation
      "hflip": 0.5,
      "vflip": 0.5,
      "rotate90": True,
      "scale_min": 0.75,
      "scale_max": 1.25,
      "color_jitter": 0.1,
      # Image-only changes between hospitals and scopes (0 = off): per-channel gain strength,
      # gamma strength (exponent exp(±gamma)), and the probabilities of a blur and of highlights.
      "color_exchange": 0.0,  # probability of SANet's colour exchange with another training image
      "channel_gain": 0.0,
      "gamma": 0.0,
      "blur": 0.0,
      "specular": 0.0,
  })
  c.data.num_workers = 0  # grain worker processes decoding train batches (0 = in-process threads)
  c.data.prefetch = 2  # batches decoded ahead (per worker)
  c.data.source = "folder"  # folder: image/mask folders under root | tfds: prepared array_record builds
  c.data.tfds_data_dir = ""  # tfds data_dir for source='tfds' ('' -> <root>/tfds)
  c.data.split_seed = 0  # 0 = the committed split JSONs; other seeds recompute the seeded splits
  # Build-time check of every image/mask pair, before anything compiles (bsa_jax/data/verify.py):
  # none | headers (sizes only, ~1 ms/pair) | full (decode every file in parallel; cached per file).
  c.data.verify = "full"
  c.data.max_pixels = 100_000_000  # files above this many pixels are refused, naming the file (<=0: off)
  c.data.max_train_examples = -1  # >0 keeps only the first N of the shuffled train set (smoke runs)
  c.data.max_eval_examples = -1
  # DIN's second input: '' (off) | clahe | histeq, applied to the network-size image of every batch
  # (train, val and test) and added as 'image_enhanced' (bsa_jax/data/enhance.py).
  c.data.enhance = ""
  c.data.enhance_clip_limit = 2.0  # CLAHE clip limit (OpenCV's clipLimit)
  c.data.enhance_tile_grid = 8  # CLAHE tiles per axis

  c.train = mlc.ConfigDict()
  c.train.batch_size = 16  # global, over all devices and processes
  c.train.num_epochs = 120.0
  c.train.num_steps = -1  # >0 overrides num_epochs
  c.train.optimizer = "adam"
  c.train.lr = 1e-3
  c.train.schedule = "constant"  # constant | cosine | poly
  c.train.warmup_steps = 0
  c.train.weight_decay = 0.0
  c.train.grad_clip_norm = 0.0  # 0 disables clipping
  # >0: evaluation, checkpoint selection and every tool use an exponential moving average of the
  # weights (and BatchNorm statistics) with this decay (warmed up: min(decay, (1+t)/(10+t))).
  c.train.ema_decay = 0.0
  # Stages (start_fraction, (size, ...)): each step trains at one of its stage's sizes, the batch
  # resized on the device (bsa_jax/train/sizes.py); () trains at data.image_size.
  c.train.size_schedule = ()
  c.train.compute_dtype = "float32"  # float32 | bfloat16 (params stay float32)
  c.train.loss = "structure"  # structure (binary, PraNet) | din (0.3 CE + 0.7 Dice + boundary)
  c.train.deep_supervision_weight = 1.0  # weight of each side output's loss
  c.train.point_loss_weight = 1.0  # Attention Rendering Module point loss
  # loss='din' (bsa_jax/train/losses_multiclass.py): ce·CE + dice·Dice + boundary·L_bnd.
  c.train.ce_weight = 0.3
  c.train.dice_weight = 0.7
  c.train.boundary_weight = 1.0
  c.train.boundary_scales = (1, 2, 4)  # average-pool kernel = stride per scale
  c.train.boundary_operator = "sobel"  # sobel (gradient magnitude) | sobel_l1 (|gx|+|gy|) | laplacian
  c.train.log_every_steps = 10
  c.train.eval_every_epochs = 5.0
  c.train.checkpoint_every_steps = 500
  c.train.keep_checkpoints = 3
  c.train.progress_bar = True

  c.eval = mlc.ConfigDict()
  c.eval.kind = "polyp"  # polyp (binary: mDSC, S_alpha, ...) | multiclass (per-class DSC/HD95)
  c.eval.batch_size = 16
  c.eval.select_metric = "mDSC"  # chosen on the validation split only
  # Flip test-time augmentation of validation, tests and every tool's prediction: none | hflip |
  # flips (h, v and both); logits are averaged (bsa_jax/models/tta.py). Recorded in every table.
  c.eval.tta = "none"
  c.eval.num_overlays = 16

  # Device mesh: axis name -> size; -1 takes every remaining device.
  c.mesh = mlc.ConfigDict({"data": -1})
  return c


def num_train_steps(config: mlc.ConfigDict, num_train_examples: int) -> tuple[int, int]:
  """Returns (total_steps, steps_per_epoch) from `train.num_steps` or `train.num_epochs`."""
  steps_per_epoch = max(1, num_train_examples // config.train.batch_size)
  if config.train.num_steps > 0:
    return int(config.train.num_steps), steps_per_epoch
  return max(1, int(math.ceil(config.train.num_epochs * steps_per_epoch))), steps_per_epoch


def config_hash(config: mlc.ConfigDict) -> str:
  """A short stable hash of the resolved config, for provenance in tables."""
  blob = json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_config(spec: str) -> mlc.ConfigDict:
  """Loads `path/to/config.py[:arg]` like `--config=` does."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no config file at {path} (the repository's configs are in "
                            f"{os.path.join(REPO_ROOT, 'configs')}).")
  module_spec = importlib.util.spec_from_file_location("_bsa_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def small_budget(c: mlc.ConfigDict) -> None:
  """Shrinks `c` in place to the polyp configs' 'small' budget: minutes on a CPU.

  The model's 'tiny' variant at 64 px on 256 training and 32 evaluation images, 2 epochs of batch 8
  evaluated every epoch, with frequent logs and checkpoints and 8 overlays.
  """
  c.model.variant = "tiny"
  c.data.image_size = 64
  c.data.max_train_examples = 256
  c.data.max_eval_examples = 32
  c.train.batch_size = 8
  c.train.num_epochs = 2.0
  c.train.eval_every_epochs = 1.0
  c.train.log_every_steps = 4
  c.train.checkpoint_every_steps = 32
  c.eval.num_overlays = 8


def din_as_drawn(c: mlc.ConfigDict, arg: str | None) -> None:
  """DIN's configs (kvasir_din, acdc, synapse), in place: DIN as its paper draws it.

  The paper's loss without side losses, global DIFM attention and ImageNet `resnext50_32x4d`
  encoders; 'lowmem' pools keys/values 4×/2× at the two finest scales; 'small' keeps its variant's
  CPU settings (scratch, pooled, side losses).
  """
  if arg == "small":
    return
  c.model_init = "timm:resnext50_32x4d"
  c.train.deep_supervision_weight = 0.0
  c.model.difm_kv_pool = (4, 2, 1, 1) if arg == "lowmem" else (1, 1, 1, 1)


def model_swap(config_file: str, arg: str | None, model_name: str, variant: str, *,
               loss: str | None = None, model_init: str | None = None,
               image_size: int | None = None, cpu_image_size: int | None = None,
               base: str = "kvasir.py") -> mlc.ConfigDict:
  """`base` (next to `config_file`) at the same `arg`, '' | 'cpu' | 'small', with the model swapped.

  The shared body of the baseline configs, which compare like for like by changing only what is the
  model's own: `model_name` at `variant` ('tiny' for 'small'), BSA-Net's `model.arm` field dropped,
  and where given the `train.loss`, the full protocol's `model_init` (the base's 'cpu' and 'small'
  budgets train from scratch) and the input size of the full protocol and of 'cpu'.

  Args:
    config_file: the calling config's `__file__`; an unknown `arg` is refused naming it.
  """
  if arg not in (None, "", "cpu", "small"):
    raise ValueError(f"Unknown config argument {arg!r} for configs/{os.path.basename(config_file)}; "
                     "use '', 'cpu' or 'small'.")
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), base)
  c = load_config(f"{path}:{arg}" if arg else path)
  c.model_name = model_name
  c.model.variant = "tiny" if arg == "small" else variant
  del c.model["arm"]  # BSA-Net's own field
  if loss is not None:
    c.train.loss = loss
  if model_init is not None and not arg:
    c.model_init = model_init
  if image_size is not None and not arg:
    c.data.image_size = image_size
  if cpu_image_size is not None and arg == "cpu":
    c.data.image_size = cpu_image_size
  return c


def _config_keys(config, prefix=""):
  """Flattened dotted keys of a ConfigDict (nested dicts included)."""
  keys = []
  for k, v in config.items():
    keys.append(prefix + k)
    if hasattr(v, "items"):
      keys += _config_keys(v, prefix + k + ".")
  return keys


def config_arg(argv: list[str]) -> str | None:
  """The value of `--config=X` or `--config X` in `argv` (None when absent)."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def check_overrides(argv: list[str]) -> None:
  """Refuses a missing config file, or a `--config.<key>=` that does not exist (naming the nearest).

  Runs before absl parses flags, so the mistake is one line in a fraction of a second (ml_collections
  would defer a missing file to the config's first use, after the workdir exists).

  Raises:
    FileNotFoundError: the `--config` file does not exist.
    cli.UserError: an override names no key of the config.
  """
  spec = config_arg(argv)
  overrides = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
  if not spec:
    return
  try:
    keys = _config_keys(load_config(spec))
  except FileNotFoundError as e:
    raise cli.UserError(f"--config={spec}: {e}") from None
  for key in overrides:
    if key not in keys:
      near = difflib.get_close_matches(key, keys, n=1)
      hint = f" Did you mean --config.{near[0]}?" if near else ""
      raise cli.UserError(f"unknown config key --config.{key} (not in {spec.partition(':')[0]}).{hint} "
                          f"Run `python -m bsa_jax.config_lib {spec}` to list every key.")


def main(argv: list[str]) -> int:
  """Prints every key of the config named by the one positional argument."""
  if len(argv) != 2:
    raise cli.UserError("give one config, e.g. `python -m bsa_jax.config_lib configs/kvasir.py:small`")
  print(load_config(argv[1]))
  return 0


if __name__ == "__main__":
  cli.run(main, prog="python -m bsa_jax.config_lib")
