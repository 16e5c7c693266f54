"""Runs a timm model and our port on the same input and compares every stage (needs torch + timm).

Used by the CLI's `--check` and by the parity tests. timm's fresh init leaves norms at scale 1 /
bias 0, BatchNorm statistics at 0 / 1 and the relative-position tables near 0, which would hide a wrong
mapping of exactly those tensors; `randomize_` makes all of them non-trivial first.
"""

import numpy as np

from bsa_jax.models.convert import Converted


def randomize_(model, seed: int = 0):
  """In place: random norm affines, BatchNorm running stats and relative-position tables."""
  import torch  # torch is a test/conversion dependency, not a runtime one
  generator = torch.Generator().manual_seed(seed)

  def fill(tensor, low, high):
    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
        fill(module.weight, 0.5, 1.5)
        fill(module.bias, -0.2, 0.2)
      if isinstance(module, torch.nn.BatchNorm2d):
        fill(module.running_mean, -0.2, 0.2)
        fill(module.running_var, 0.5, 2.0)
    for name, param in model.named_parameters():
      if name.endswith("relative_position_bias_table"):
        fill(param, -1.0, 1.0)
  return model


def timm_features(model, image: np.ndarray, *, float64: bool = False) -> dict[str, np.ndarray]:
  """timm's per-stage features (NHWC numpy) under our names: ['stem',] 'stage1'.., Swin also 'norm'.

  With `float64` the model is converted to double in place.
  """
  import torch  # torch is a test/conversion dependency, not a runtime one
  model.eval()
  if float64:
    model.double()
  dtype = np.float64 if float64 else np.float32
  x = torch.from_numpy(np.asarray(image, dtype)).permute(0, 3, 1, 2)
  with torch.no_grad():
    final, intermediates = model.forward_intermediates(x)
  feats = [t.permute(0, 2, 3, 1).numpy() for t in intermediates]
  if len(feats) == 5:  # ResNet: act1 (stride 2) then layer1..4
    return {"stem": feats[0], **{f"stage{i}": f for i, f in enumerate(feats[1:], 1)}}
  out = {f"stage{i}": f for i, f in enumerate(feats, 1)}
  out["norm"] = final.numpy()  # Swin keeps NHWC and applies the final norm to the last stage
  return out


def flax_features(converted: Converted, image: np.ndarray, *,
                  float64: bool = False) -> dict[str, np.ndarray]:
  """Our port's features (eval mode, jitted) for the same NHWC image, in float32 or float64."""
  import jax  # jax only for this check, not to import the module
  import jax.numpy as jnp  # jax only for this check, not to import the module
  dtype = np.float64 if float64 else np.float32
  with jax.enable_x64(float64):
    model = converted.model(dtype=jnp.dtype(dtype))
    apply = jax.jit(lambda variables, x: model.apply(variables, x, train=False))
    variables = jax.tree.map(lambda a: np.asarray(a, dtype),
                             {k: v for k, v in converted.variables.items() if v})
    out = apply(variables, np.asarray(image, dtype))
    return {k: np.asarray(v) for k, v in out.items()}


def compare(reference: dict[str, np.ndarray], ours: dict[str, np.ndarray]) -> dict[str, dict]:
  """Per feature: max abs diff and the reference's max |x| (the scale the diff is relative to)."""
  if set(reference) != set(ours):
    raise ValueError(f"feature names differ: timm {sorted(reference)} vs ours {sorted(ours)}")
  out = {}
  for name, ref in reference.items():
    if ref.shape != ours[name].shape:
      raise ValueError(f"{name}: timm shape {ref.shape} vs ours {ours[name].shape}")
    out[name] = {"max_abs_diff": float(np.max(np.abs(ref - ours[name]))),
                 "scale": float(np.max(np.abs(ref)))}
  return out


def check(model, converted: Converted, image: np.ndarray, *,
          float64: bool = False) -> dict[str, dict]:
  """`compare` of timm `model` and `converted` on `image` (B, H, W, 3).

  float32 differences grow with depth in random networks (rounding is amplified like any
  perturbation); `float64=True` (which converts `model` to double in place) separates that from a
  porting error, which would stay large.
  """
  return compare(timm_features(model, image, float64=float64),
                 flax_features(converted, image, float64=float64))
