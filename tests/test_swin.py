"""Swin v1 port: geometry helpers, SwinBlock, and per-stage parity with timm (random init, CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from timm.models import swin_transformer as timm_swin  # noqa: E402

from bsa_jax.models import convert, swin  # noqa: E402
from bsa_jax.models.convert import common, parity  # noqa: E402

# Max abs diff allowed, relative to the reference's max |x| when that exceeds 1 (README quotes it;
# measured at most 1.3e-6 on every stage of Swin-T/S/B at 224 px).
TOL = 1e-5
NARROW = dict(embed_dim=16, num_heads=(1, 2, 2, 4))  # same code paths as the real widths, fast


def assert_parity(report: dict, tol: float = TOL):
  for name, r in report.items():
    assert r["max_abs_diff"] <= tol * max(1.0, r["scale"]), (name, report)


def parity_report(timm_name: str, img_size, batch: int = 1, **timm_kwargs) -> dict:
  model = timm.create_model(timm_name, pretrained=False, img_size=img_size, **timm_kwargs)
  parity.randomize_(model, seed=1).eval()
  converted = convert.convert_timm_model(model)
  h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
  image = np.random.RandomState(0).randn(batch, h, w, 3).astype(np.float32)
  report = parity.check(model, converted, image)
  print(timm_name, img_size, {k: f"{v['max_abs_diff']:.1e} (|x|<={v['scale']:.1f})"
                              for k, v in report.items()})
  return report


# ------------------------------------------------------------------ geometry (no compilation) ----

def test_relative_position_index_matches_timm():
  np.testing.assert_array_equal(swin.relative_position_index((7, 7), 7),
                                timm_swin.get_relative_position_index(7, 7).numpy())


def test_embedded_shrunk_table_gives_timm_bias():
  """timm's own (9x5)-row table for a 5x3 window, centred in our 13x13 one, yields the same biases."""
  table = np.random.RandomState(0).randn(9 * 5, 2).astype(np.float32)
  timm_bias = table[timm_swin.get_relative_position_index(5, 3).numpy()]  # (15, 15, 2)
  ours = convert.swin.embed_table(table, (5, 3), 7)[swin.relative_position_index((5, 3), 7)]
  np.testing.assert_array_equal(ours, timm_bias)


def test_relative_position_index_of_shrunk_window_reads_table_centre():
  index = swin.relative_position_index((3, 3), 7)  # offsets -2..2 of a 13x13 table
  rows, cols = np.divmod(index, 13)
  assert rows.min() == 4 and rows.max() == 8 and cols.min() == 4 and cols.max() == 8
  assert index[4, 4] == 6 * 13 + 6  # token with itself: offset (0, 0)


@pytest.mark.parametrize("resolution, window_size", [((56, 56), 7), ((10, 9), 7), ((20, 12), 12)])
def test_shift_mask_matches_timm(resolution, window_size):
  block = timm_swin.SwinTransformerBlock(dim=8, input_resolution=resolution, num_heads=1,
                                         window_size=window_size, shift_size=window_size // 2)
  window, shift = swin.effective_window(resolution, window_size, window_size // 2)
  assert window == tuple(block.window_size) and shift == tuple(block.shift_size)
  padded = tuple(-(-r // w) * w for r, w in zip(resolution, window))
  ours = swin.shifted_window_mask(padded, window, shift)
  np.testing.assert_array_equal(ours, block.attn_mask.numpy())
  assert set(np.unique(ours)) == {0.0, -100.0}


def test_window_partition_roundtrip_and_order():
  x = jnp.arange(2 * 6 * 4 * 1, dtype=jnp.float32).reshape(2, 6, 4, 1)
  windows = swin.window_partition(x, (3, 2))  # (2, 4, 6, 1)
  assert windows.shape == (2, 4, 6, 1)
  np.testing.assert_array_equal(windows[0, 1, :, 0], [2, 3, 6, 7, 10, 11])  # 2nd window: cols 2..3
  np.testing.assert_array_equal(swin.window_reverse(windows, (3, 2), 6, 4), x)


def test_effective_window_shrinks_per_axis():
  assert swin.effective_window((20, 12), 12, 6) == ((12, 12), (6, 0))
  assert swin.effective_window((7, 7), 7, 3) == ((7, 7), (0, 0))
  assert swin.effective_window((5, 30), 7, 3) == ((5, 7), (0, 3))


def test_swin_tiny_param_count():
  """timm's 28,288,354 minus the 769,000 of the ImageNet head."""
  model = swin.swin_from_variant("tiny")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) == 28_288_354 - 769_000
  table = shapes["params"]["layers_0"]["blocks_0"]["attn"]["relative_position_bias_table"]
  assert table.shape == (169, 3)


# -------------------------------------------------------------------------- SwinBlock ----

def _block_variables(timm_block) -> dict:
  flat = {}
  for key, value in timm_block.state_dict().items():
    collection, path, array = common.map_leaf(key, value.numpy())
    flat[f"{collection}/{path}"] = array
  return common.unflatten(flat)


@pytest.mark.parametrize("shift, float64", [(0, False), (3, False), (3, True)])
def test_swin_block_matches_timm_on_padded_map(shift, float64):
  """A 10x9 map with window 7 pads to 14x14; the ISAM module relies on exactly this block.

  In float64 the port agrees to rounding (~1e-15), so the float32 gaps are rounding, not porting.
  """
  torch.manual_seed(0)
  block = timm_swin.SwinTransformerBlock(dim=32, input_resolution=(10, 9), num_heads=4,
                                         window_size=7, shift_size=shift)
  parity.randomize_(block).eval()
  dtype = np.float64 if float64 else np.float32
  x = np.random.RandomState(0).randn(2, 10, 9, 32).astype(dtype)
  with torch.no_grad():
    expected = (block.double() if float64 else block)(torch.from_numpy(x)).numpy()
  with jax.enable_x64(float64):
    ours = swin.SwinBlock(dim=32, num_heads=4, window_size=7, shift_size=shift,
                          dtype=jnp.dtype(dtype))
    variables = jax.tree.map(lambda a: a.astype(dtype), _block_variables(block))
    out = np.asarray(jax.jit(ours.apply)(variables, x))
  assert out.shape == (2, 10, 9, 32) and out.dtype == dtype
  np.testing.assert_allclose(out, expected, atol=1e-12 if float64 else 1e-5, rtol=0)


def _small_timm_block(shift: int = 2):
  torch.manual_seed(0)
  block = timm_swin.SwinTransformerBlock(dim=16, input_resolution=(8, 8), num_heads=2,
                                         window_size=4, shift_size=shift)
  return parity.randomize_(block).eval()


def test_swin_block_drop_path_uses_dropout_rng():
  variables = _block_variables(_small_timm_block())
  block = swin.SwinBlock(dim=16, num_heads=2, window_size=4, shift_size=2, drop_path=0.5)
  x = np.random.RandomState(0).randn(8, 8, 8, 16).astype(np.float32)
  train_apply = jax.jit(lambda v, x, rng: block.apply(v, x, train=True, rngs={"dropout": rng}))
  a = train_apply(variables, x, jax.random.key(2))
  np.testing.assert_array_equal(a, train_apply(variables, x, jax.random.key(2)))
  assert not np.allclose(a, train_apply(variables, x, jax.random.key(3)))


def test_swin_block_bfloat16_compute_keeps_float32_params():
  timm_block = _small_timm_block()
  x = np.random.RandomState(0).randn(2, 8, 8, 16).astype(np.float32)
  with torch.no_grad():
    expected = timm_block(torch.from_numpy(x)).numpy()
  block = swin.SwinBlock(dim=16, num_heads=2, window_size=4, shift_size=2, dtype=jnp.bfloat16)
  out = jax.jit(block.apply)(_block_variables(timm_block), x)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), expected, atol=0.1)


# --------------------------------------------------------------- backbone parity vs timm ----

def test_swin_tiny_224_parity():
  """The real Swin-T (the ISAM weights' source); stage 4 (7x7) is one unshifted window."""
  assert_parity(parity_report("swin_tiny_patch4_window7_224", 224))


@pytest.mark.slow
@pytest.mark.parametrize("timm_name", ["swin_small_patch4_window7_224", "swin_base_patch4_window7_224"])
def test_swin_small_and_base_224_parity(timm_name):
  """The other converter targets README names: Swin-S (18 blocks in stage 3), Swin-B (width 128)."""
  assert_parity(parity_report(timm_name, 224))


def test_swin_256_padding_parity():
  """256 -> 64/32/16/8 maps: every stage pads to a multiple of 7, shifted blocks included."""
  assert_parity(parity_report("swin_tiny_patch4_window7_224", 256, batch=2, depths=(2, 1, 1, 2),
                              **NARROW))


def test_swin_window12_small_nonsquare_parity():
  """Window 12 at 160x96: per-axis shift in stage 2, non-square shrunk windows (10x6, 5x3) after."""
  assert_parity(parity_report("swin_base_patch4_window12_384", (160, 96), depths=(2, 2, 1, 1),
                              **NARROW))
