"""Mechanical torch -> Flax mapping rules and the strict checks shared by every model family.

A timm key maps to a Flax path by turning `name.<i>` into `name_<i>` and dots into slashes; the leaf
follows the tensor: 4-D `weight` -> conv `kernel` (OIHW -> HWIO), 2-D `weight` -> dense `kernel`
(transposed), 1-D `weight` -> norm `scale`, BatchNorm `running_mean/var` -> `batch_stats` `mean/var`.
Every check collects all offending keys before raising (big_vision `models/common.py: merge_params`).
"""

import os
import pickle
import re
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file

# Torch BatchNorm bookkeeping with no Flax counterpart.
IGNORED_SOURCE_SUFFIXES = ("num_batches_tracked",)


class ConversionError(ValueError):
  """A strict load found unmapped keys, missing keys or shape mismatches (all listed in the message)."""


def preferred_checkpoint(path: str) -> str:
  """`path`, or the safetensors file beside a torch pickle that holds the same weights.

  `x.safetensors` beside `x.pth`/`x.bin`, or Hugging Face's `model.safetensors` beside
  `pytorch_model.bin`: reading it runs no code from the file.
  """
  if is_safetensors(path):
    return path
  folder, name = os.path.split(path)
  candidates = [os.path.splitext(name)[0] + ".safetensors"]
  if name == "pytorch_model.bin":
    candidates.append("model.safetensors")
  return next((os.path.join(folder, c) for c in candidates
               if os.path.isfile(os.path.join(folder, c))), path)


def is_safetensors(path: str) -> bool:
  """By name, or by content: an 8-byte header length, then the JSON header (whatever the name)."""
  if path.endswith(".safetensors"):
    return True
  try:
    with open(path, "rb") as f:
      head = f.read(9)
  except OSError:
    return False
  return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30


def _safetensors_hint(path: str) -> str:
  out = os.path.splitext(path)[0] + ".safetensors"
  return (f"Convert it to safetensors once, only if you trust where it came from: python -c \"import "
          f"torch, safetensors.torch as st; c = torch.load('{path}', weights_only=False); "
          f"st.save_file(c.get('model', c.get('state_dict', c)), '{out}')\" and pass --checkpoint {out}.")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a safetensors file, or a torch `.pth/.bin` with `weights_only=True` only (never a full pickle).

  Unwraps the `model` / `state_dict` containers of original (e.g. Microsoft Swin) checkpoints.

  Raises:
    FileNotFoundError: no such file.
    ConversionError: naming the file: truncated or damaged, not a state dict, or a pickle that
      `weights_only=True` refuses (with the command that converts it to safetensors).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--checkpoint {path}: no such file.")
  if is_safetensors(path):
    try:
      state_dict = load_file(path)
    except Exception as e:  # safetensors raises its own SafetensorError on a bad header or size
      raise ConversionError(f"{path}: not a readable safetensors file (truncated or damaged?): "
                            f"{e}") from None
  else:
    state_dict = _load_torch_pickle(path)
  if not isinstance(state_dict, Mapping):
    raise ConversionError(f"{path}: holds a {type(state_dict).__name__}, not a state dict.")
  for container in ("model", "state_dict"):
    if isinstance(state_dict.get(container), Mapping):
      state_dict = state_dict[container]
  return {k: to_numpy(v) for k, v in state_dict.items()}


def _load_torch_pickle(path: str):
  """`torch.load(weights_only=True)`: tensors and plain containers only, no code from the file."""
  try:
    import torch  # optional (requirements-test.txt): only to read a torch pickle
  except ImportError:
    raise ConversionError(f"{path}: reading a torch pickle needs torch; or pass a .safetensors "
                          "file.") from None
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    if "weights only" in str(e).lower():  # torch refused an object it would have to run code for
      # torch's own text advises weights_only=False; keep only its line naming the object.
      reason = next((l.strip() for l in str(e).splitlines() if "GLOBAL" in l or "global" in l), "")
      raise ConversionError(f"{path}: refused: torch.load(weights_only=True) reads tensors only, and "
                            f"this pickle holds more ({reason or 'an object it would have to run'}). "
                            f"{_safetensors_hint(path)}") from None
    raise ConversionError(f"{path}: not a readable torch checkpoint (truncated or damaged?): "
                          f"{e}") from None
  except (RuntimeError, EOFError, ValueError, OSError) as e:  # e.g. a zip without its directory
    raise ConversionError(f"{path}: not a readable torch checkpoint (truncated or damaged?): "
                          f"{e}") from None


def to_numpy(value) -> np.ndarray:
  """A numpy or torch array; half-precision floats become float32 (our params are float32)."""
  if not isinstance(value, np.ndarray):  # a torch tensor
    value = value.detach().cpu()
    value = (value.float() if value.is_floating_point() else value).numpy()
  return value.astype(np.float32) if value.dtype == np.float16 else value


def flax_path(torch_key: str) -> str:
  """'layers.0.blocks.1.attn.qkv' -> 'layers_0/blocks_1/attn/qkv' (numbered children get a suffix)."""
  return re.sub(r"\.(\d+)(?=\.|$)", r"_\1", torch_key).replace(".", "/")


def map_leaf(torch_key: str, value: np.ndarray) -> tuple[str, str, np.ndarray]:
  """One torch tensor -> (collection, Flax path, array) by the rules in the module docstring."""
  module, _, leaf = torch_key.rpartition(".")
  collection = "params"
  if leaf == "weight":
    if value.ndim == 4:
      leaf, value = "kernel", value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif value.ndim == 2:
      leaf, value = "kernel", value.T  # (out, in) -> (in, out)
    elif value.ndim == 1:
      leaf = "scale"  # LayerNorm / BatchNorm
  elif leaf in ("running_mean", "running_var"):
    collection, leaf = "batch_stats", {"running_mean": "mean", "running_var": "var"}[leaf]
  return collection, f"{flax_path(module)}/{leaf}" if module else leaf, np.asarray(value)


def matches_any(name: str, patterns: Iterable[str]) -> bool:
  return any(re.search(p, name) for p in patterns)


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Nested dict -> {'a/b/c': leaf}."""
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def _shape(x) -> tuple[int, ...]:
  return tuple(np.shape(x))


def format_problems(title: str, problems: Mapping[str, list[str]]) -> str:
  lines = [title]
  for kind, keys in problems.items():
    if keys:
      lines.append(f"  {kind} ({len(keys)}):")
      lines.extend(f"    {k}" for k in keys)
  return "\n".join(lines)


def check_tree(loaded: Mapping[str, Any], expected: Mapping[str, Any], *, what: str,
               dont_load: Iterable[str] = (), labels: Mapping[str, str] | None = None) -> None:
  """Raises `ConversionError` listing every unexpected key, missing key and shape mismatch.

  Both trees are flat ('a/b/c' keys); `expected` leaves only need a `.shape`. Keys matched by a
  `dont_load` regex are excused on either side. `labels` names a loaded key's origin in the message
  (e.g. its torch key).
  """
  dont_load = tuple(dont_load)
  labels = labels or {}

  def name(k):
    return f"{labels[k]} -> {k}" if k in labels else k

  unexpected = sorted(name(k) for k in loaded
                      if k not in expected and not matches_any(k, dont_load))
  missing = sorted(k for k in expected if k not in loaded and not matches_any(k, dont_load))
  mismatched = sorted(
      f"{name(k)}: got {_shape(loaded[k])}, expected {_shape(expected[k])}"
      for k in loaded if k in expected and _shape(loaded[k]) != _shape(expected[k])
      and not matches_any(k, dont_load))
  if unexpected or missing or mismatched:
    raise ConversionError(format_problems(
        f"{what}: the trees do not match (excuse keys with a dont_load regex if intended)",
        {"unmapped keys (no place in the target)": unexpected,
         "missing keys (target has no source)": missing,
         "shape mismatches": mismatched}))


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model, *, input_shape: tuple[int, ...],
                       dont_load: Iterable[str] = (), rename: Callable[[str], str] = lambda k: k,
                       adapt: Callable[[str, np.ndarray, Any], np.ndarray] | None = None,
                       what: str = "convert") -> dict[str, dict[str, Any]]:
  """Maps a (timm-layout) state dict onto `model`'s variables, strictly.

  The target shapes come from `jax.eval_shape(model.init)` on `input_shape`, so nothing is
  computed. Source keys matched by `dont_load` are skipped; target paths matched by it may stay
  unloaded.

  Args:
    state_dict: torch key -> numpy array.
    model: the Linen module to load into.
    input_shape: a dummy input shape for tracing `model.init`.
    dont_load: regexes over torch keys and Flax paths ('params/...').
    rename: torch key -> torch-style key in our naming, applied before the mechanical rules.
    adapt: optional (flax path, array, expected leaf or None) -> array, for exact re-layouts.
    what: name used in error messages.

  Returns:
    {'params': ..., 'batch_stats': ...} nested dicts of numpy arrays (batch_stats only if present).
  """
  dont_load = tuple(dont_load)
  init = jax.eval_shape(model.init, jax.random.key(0),
                        jax.ShapeDtypeStruct(input_shape, jnp.float32))
  expected = flatten(init)
  loaded, labels = {}, {}
  for key, value in state_dict.items():
    if key.endswith(IGNORED_SOURCE_SUFFIXES) or matches_any(key, dont_load):
      continue
    collection, path, array = map_leaf(rename(key), value)
    full = f"{collection}/{path}"
    if adapt is not None:
      array = adapt(full, array, expected.get(full))
    if full in loaded:
      raise ConversionError(f"{what}: {labels[full]} and {key} both map to {full}")
    loaded[full], labels[full] = array, key
  check_tree(loaded, expected, what=what, dont_load=dont_load, labels=labels)
  return unflatten(loaded)


def merge_params(init_tree: Mapping[str, Any], loaded_tree: Mapping[str, Any],
                 dont_load: Iterable[str] = (), *, prefix: str = "") -> dict[str, Any]:
  """Returns `init_tree` with the leaves under `prefix` replaced by `loaded_tree`, strictly.

  big_vision-style: both trees are flattened; every init leaf under `prefix` must be loaded with the
  same shape and every loaded leaf must have a place, unless its path (relative to `prefix`) matches
  a `dont_load` regex, in which case the init value is kept. All offending paths are reported at once.
  Loaded leaves take the init leaf's dtype and, for jax arrays, its sharding (an explicit transfer,
  so this works under `jax_transfer_guard='disallow'`).

  Args:
    init_tree: freshly initialised params (or any variable collection) of the full model.
    loaded_tree: the tree to load, shaped like `init_tree` below `prefix`.
    dont_load: regexes of relative paths to keep from `init_tree` (e.g. heads).
    prefix: '/'-joined path of the sub-tree to load into, e.g. 'encoder/isam'; '' = whole tree.

  Returns:
    A new nested dict; `init_tree` is not modified.
  """
  flat_init = flatten(init_tree)
  root = prefix.strip("/")
  scope = {k[len(root) + 1:] if root else k: k for k in flat_init
           if not root or k.startswith(root + "/")}
  if root and not scope:
    raise ConversionError(f"merge_params: no leaves under prefix {root!r} in the init tree")
  flat_loaded = flatten(loaded_tree)
  check_tree(flat_loaded, {rel: flat_init[full] for rel, full in scope.items()},
             what=f"merge_params(prefix={root!r})", dont_load=dont_load)
  merged = dict(flat_init)
  for rel, full in scope.items():
    if rel in flat_loaded and not matches_any(rel, dont_load):
      merged[full] = _like(flat_loaded[rel], flat_init[full])
  return unflatten(merged)


def _like(value, reference):
  """`value` as an array with `reference`'s dtype, on `reference`'s devices if that is a jax.Array."""
  value = np.asarray(value, dtype=reference.dtype)
  if isinstance(reference, jax.Array):
    return jax.device_put(value, reference.sharding)
  return value
