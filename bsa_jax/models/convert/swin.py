"""timm Swin v1 state dicts (and the original Microsoft layout) -> `swin.SwinTransformer` variables.

Key layout: docs/DECISIONS.md#r4, i.e. timm 1.x `swin_transformer.py`. The Microsoft layout is
brought to timm's by the same three rewrites as timm's `checkpoint_filter_fn` (drop the stored buffers,
move each stage's trailing PatchMerging to the start of the next stage, `head.` -> `head.fc.`), but
without any resampling: a table or patch kernel of the wrong size is a shape mismatch.
"""

import math
import re
from typing import Any, Mapping

import numpy as np

from bsa_jax.models import swin
from bsa_jax.models.convert import common

DONT_LOAD = (r"^head\.",)  # the ImageNet classifier
BUFFERS = ("relative_position_index", "attn_mask")  # recomputed by the model, never loaded
_TABLE = "relative_position_bias_table"


def is_microsoft_layout(state_dict: Mapping[str, Any]) -> bool:
  """Original checkpoints merge patches at the end of stage 0; timm 1.x never has stage-0 downsample."""
  return "layers.0.downsample.reduction.weight" in state_dict


def to_timm_layout(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops stored buffers and, for a Microsoft checkpoint, renumbers downsample and renames the head."""
  microsoft = is_microsoft_layout(state_dict)
  out = {}
  for key, value in state_dict.items():
    if key.rpartition(".")[2] in BUFFERS:
      continue
    if microsoft:
      key = re.sub(r"^layers\.(\d+)\.downsample\.",
                   lambda m: f"layers.{int(m[1]) + 1}.downsample.", key)
      key = re.sub(r"^head\.", "head.fc.", key)
    out[key] = value
  return out


def from_timm_layout_to_microsoft(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Inverse of `to_timm_layout` (without the buffers); used to test the Microsoft path offline."""
  out = {}
  for key, value in state_dict.items():
    key = re.sub(r"^layers\.(\d+)\.downsample\.",
                 lambda m: f"layers.{int(m[1]) - 1}.downsample.", key)
    out[re.sub(r"^head\.fc\.", "head.", key)] = value
  return out


def infer_config(state_dict: Mapping[str, np.ndarray], window_size: int | None = None) -> dict:
  """`SwinTransformer` kwargs read off a timm-layout state dict's shapes.

  The window is the largest relative-position table's ((2w-1)^2 rows); pass `window_size` when every
  table was shrunk (a timm model built for maps smaller than its window).
  """
  proj = state_dict["patch_embed.proj.weight"]  # (D, 3, p, p)
  blocks = {}
  for key in state_dict:
    if m := re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", key):
      stage, block = int(m[1]), int(m[2])
      blocks[stage] = max(blocks.get(stage, 0), block + 1)
  depths = ()
  while len(depths) in blocks:  # stages 0, 1, ...; a stray stage is left to the strict check
    depths += (blocks[len(depths)],)
  tables = [state_dict[f"layers.{s}.blocks.0.attn.{_TABLE}"] for s in range(len(depths))]
  if window_size is None:
    side = round(math.sqrt(max(t.shape[0] for t in tables)))
    window_size = (side + 1) // 2
  fc1 = state_dict["layers.0.blocks.0.mlp.fc1.weight"]  # (hidden, D)
  return dict(
      embed_dim=int(proj.shape[0]), depths=depths, num_heads=tuple(int(t.shape[1]) for t in tables),
      window_size=int(window_size), patch_size=int(proj.shape[-1]),
      mlp_ratio=fc1.shape[0] / fc1.shape[1],
      qkv_bias="layers.0.blocks.0.attn.qkv.bias" in state_dict)


def embed_table(table: np.ndarray, source_window: tuple[int, int], window_size: int) -> np.ndarray:
  """A ((2a-1)(2b-1), h) table of a shrunk (a, b) window placed in the centre of a ((2w-1)^2, h) one.

  Exact: a block on a map of a x b tokens only reads those centre rows (see `swin.py`); the zero rim is
  never used at that size.
  """
  win_h, win_w = source_window
  heads = table.shape[-1]
  side = 2 * window_size - 1
  out = np.zeros((side, side, heads), table.dtype)
  top, left = window_size - win_h, window_size - win_w
  out[top:top + 2 * win_h - 1, left:left + 2 * win_w - 1] = table.reshape(
      2 * win_h - 1, 2 * win_w - 1, heads)
  return out.reshape(side * side, heads)


def _square_window(rows: int) -> tuple[int, int] | None:
  side = math.isqrt(rows)
  return ((side + 1) // 2,) * 2 if side * side == rows and side % 2 else None


def convert(state_dict: Mapping[str, np.ndarray], config: dict | None = None, *,
            dont_load=DONT_LOAD, table_windows: Mapping[str, tuple[int, int]] | None = None):
  """timm or Microsoft Swin state dict -> ({'params': ...}, SwinTransformer kwargs).

  Args:
    state_dict: torch key -> numpy array.
    config: `SwinTransformer` kwargs; inferred from the shapes when None.
    dont_load: regexes of keys to skip (the classifier by default).
    table_windows: torch key of a relative-position table -> its (h, w) window, for tables of a
      timm model built at a size where windows shrank non-square (square ones are recognised).
  """
  state_dict = to_timm_layout(state_dict)
  config = dict(config or infer_config(state_dict))
  model = swin.SwinTransformer(**config)
  windows_by_path = {f"params/{common.flax_path(k)}": v for k, v in (table_windows or {}).items()}

  def adapt(path, array, expected):
    if not path.endswith(_TABLE) or expected is None or array.shape == expected.shape:
      return array
    window = windows_by_path.get(path) or _square_window(array.shape[0])
    fits = (window and max(window) <= config["window_size"]
            and array.shape[0] == (2 * window[0] - 1) * (2 * window[1] - 1)
            and array.shape[1] == expected.shape[1])
    return embed_table(array, window, config["window_size"]) if fits else array  # else: mismatch

  input_side = config["patch_size"] * 8  # shapes do not depend on the input size
  variables = common.convert_state_dict(
      state_dict, model, input_shape=(1, input_side, input_side, 3), dont_load=dont_load,
      adapt=adapt, what="swin")
  return variables, config
