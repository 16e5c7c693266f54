"""Export: the lax -> ONNX translation is exact op by op (resizes, the ARM's gathers and scatters),
every registry model converts or is refused, and `python -m bsa_jax.export --check` passes on a
trained run with real images; the ONNX example runs where JAX cannot be imported."""

import contextlib
import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from bsa_jax import config_lib
from bsa_jax import models
from bsa_jax.models import rendering
from bsa_jax.tools import export
from bsa_jax.tools import jaxpr_onnx
from tests.conftest import data_dir
from tests.conftest import run_in_process
from tests.test_attention import numpy_init

REPO = config_lib.REPO_ROOT
CONFIGS = {"bsanet": "configs/kvasir.py:small", "unet": "configs/kvasir_unet.py:small",
           "pranet": "configs/kvasir_pranet.py:small", "unetpp": "configs/kvasir_unetpp.py:small",
           "ldnet": "configs/kvasir_ldnet.py:small", "sanet": "configs/kvasir_sanet.py:small",
           "din": "configs/acdc.py:small"}


(BATCH,) = jax.export.symbolic_shape("B")  # one symbolic scope for every input of a function


def _symbolic(shape, dtype=jnp.float32):
  """ShapeDtypeStruct with the leading axis the symbolic batch B."""
  return jax.ShapeDtypeStruct((BATCH, *shape), dtype)


def _run_onnx(fn, specs, arrays):
  """fn converted to ONNX and run by onnxruntime on `arrays`; returns the outputs."""
  names = [f"x{i}" for i in range(len(specs))]
  outs = jax.eval_shape(fn, *[jax.ShapeDtypeStruct((2, *s.shape[1:]), s.dtype) for s in specs])
  num_outputs = len(outs) if isinstance(outs, (tuple, list)) else 1
  model = jaxpr_onnx.convert(fn, specs, names, [f"y{i}" for i in range(num_outputs)])
  session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  return session.run(None, dict(zip(names, arrays)))


# ----------------------------------------------------------------------------------------------------
# Op-level exactness.

@pytest.mark.parametrize("src,dst", [((8, 8), (16, 16)), ((16, 12), (5, 7)), ((7, 9), (12, 20))])
def test_bilinear_resize_maps_exactly(src, dst):
  """jax.image.resize is a product with interpolation matrices at the lax level: no ONNX Resize."""
  fn = lambda x: jax.image.resize(x, (x.shape[0], *dst, 3), "bilinear")
  x = np.random.default_rng(0).normal(size=(3, *src, 3)).astype(np.float32)
  (got,) = _run_onnx(fn, [_symbolic((*src, 3))], [x])
  want = np.asarray(jax.jit(fn)(x))
  assert got.shape == want.shape == (3, *dst, 3)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_arm_point_sample_and_subdivision_map_exactly():
  """The ARM's bilinear point gather, top-k of uncertain pixels and scatter: same values, same pixels."""
  rng = np.random.default_rng(1)
  features = rng.normal(size=(3, 8, 8, 4)).astype(np.float32)
  logits = rng.normal(size=(3, 8, 8, 1)).astype(np.float32)
  coords = rng.uniform(-0.1, 1.1, size=(3, 50, 2)).astype(np.float32)  # edges clamp too

  def sample(f, c):
    return rendering.point_sample(f, c)

  (got,) = _run_onnx(sample, [_symbolic((8, 8, 4)), _symbolic((50, 2))], [features, coords])
  np.testing.assert_allclose(got, np.asarray(jax.jit(sample)(features, coords)), atol=1e-6)

  def subdivide(l, f):  # point logits from a fixed linear head over sampled features
    predict = lambda c: rendering.point_sample(f, c) @ jnp.arange(1.0, 5.0)[:, None]
    return rendering.subdivision_step(l, (16, 16), 40, predict)

  got_logits, got_index = _run_onnx(subdivide, [_symbolic((8, 8, 1)), _symbolic((8, 8, 4))],
                                    [logits, features])
  want_logits, want_index = jax.jit(subdivide)(logits, features)
  np.testing.assert_array_equal(got_index, np.asarray(want_index))  # the same pixels recomputed
  np.testing.assert_allclose(got_logits, np.asarray(want_logits), atol=1e-6)


def test_fill_or_drop_gather_fills_out_of_bounds_rows_like_xla():
  def fn(x, i):
    return x.at[jnp.arange(x.shape[0])[:, None], i].get(mode="fill", fill_value=-7.0)

  x = np.arange(12, dtype=np.float32).reshape(2, 6)
  index = np.array([[0, 5, 6, -9], [2, 9, 1, 3]], np.int32)
  # A static batch: `jnp.arange(B)` of the symbolic B is a `dim_as_value`, which the translator does
  # not cover (no registry model needs it; their symbolic-batch parity is tested below).
  specs = [jax.ShapeDtypeStruct((2, 6), jnp.float32), jax.ShapeDtypeStruct((2, 4), jnp.int32)]
  (got,) = _run_onnx(fn, specs, [x, index])
  np.testing.assert_array_equal(got, np.asarray(jax.jit(fn)(x, index)))


def test_an_unsupported_primitive_is_named():
  with pytest.raises(jaxpr_onnx.UnsupportedError, match="cumsum"):
    jaxpr_onnx.convert(lambda x: jnp.cumsum(x, axis=1), [_symbolic((4,))], ["x"], ["y"])


# ----------------------------------------------------------------------------------------------------
# Every registry model: converted with parity, or refused with the reason.

def _perturbed_variables(model, size):
  """numpy-initialised variables with BatchNorm statistics that are not the identity."""
  variables = numpy_init(model, jnp.zeros((1, size, size, 3)), train=False)
  rng = np.random.default_rng(3)

  def perturb(path, leaf):
    name = path[-1].key
    if name == "mean":
      return leaf + rng.normal(0, 0.1, leaf.shape).astype(leaf.dtype)
    if name == "var":
      return leaf * rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
    return leaf

  return jax.tree_util.tree_map_with_path(perturb, variables)


@pytest.mark.parametrize("name", ["bsanet", "unet", "pranet"])
def test_model_probabilities_match_in_onnx_and_stablehlo(name, tmp_path):
  """Random (perturbed) weights: ONNX for the three models, the StableHLO batch of one for U-Net."""
  config = config_lib.load_config(os.path.join(REPO, CONFIGS[name]))
  size = int(config.data.image_size)
  model = models.build_model(config)
  variables = _perturbed_variables(model, size)
  fn = lambda x: jax.nn.sigmoid(model.apply(variables, x, train=False)[0])
  x = np.random.default_rng(4).normal(size=(2, size, size, 3)).astype(np.float32)
  want = np.asarray(jax.jit(fn)(x))
  (got,) = _run_onnx(fn, [export.input_spec(size)], [x])
  assert np.abs(got - want).max() <= export.TOLERANCE
  if name != "unet":
    return  # the StableHLO path is the same for every model (and the command's check covers BSA-Net)
  path = str(tmp_path / "m.jax_export")
  entry = export.write_stablehlo(fn, export.input_spec(size), path, ("cpu", "cuda"))
  assert entry["platforms"] == ["cpu", "cuda"]
  assert np.abs(export.load_stablehlo(path)(x[:1]) - want[:1]).max() <= export.TOLERANCE


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_registry_model_converts_or_is_refused(name):
  """Traced only (weights as abstract inputs): every primitive translates, or export refuses."""
  assert set(CONFIGS) == set(models.available_models()), "add the new model to CONFIGS"
  config = config_lib.load_config(os.path.join(REPO, CONFIGS[name]))
  reason = export.refusal(config)
  if name == "din":
    assert reason and "enhanced" in reason
    return
  assert reason is None
  size = int(config.data.image_size)
  model = models.build_model(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)),
                                             train=False))
  leaves, tree = jax.tree.flatten(shapes)
  fn = lambda x, *w: model.apply(jax.tree.unflatten(tree, w), x, train=False)[0]
  specs = [export.input_spec(size)] + list(leaves)
  onnx_model = jaxpr_onnx.convert(fn, specs, [f"in{i}" for i in range(len(specs))], ["logits"])
  assert [d.dim_param or d.dim_value for d in
          onnx_model.graph.output[0].type.tensor_type.shape.dim] == ["B", size, size, 1]


def test_non_float32_runs_are_refused():
  config = config_lib.load_config(os.path.join(REPO, CONFIGS["unet"]))
  config.train.compute_dtype = "bfloat16"
  assert "float32" in export.refusal(config)


# ----------------------------------------------------------------------------------------------------
# A trained run end to end: the command, its check on real images, the card, the example without JAX.

@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run):
  """The tiny BSA-Net run exported by the command (run in this process) with --check on real
  Kvasir images; returns (workdir, out, CompletedProcess-like result, check images)."""
  images = data_dir("kvasir_seg", "images")
  workdir = tiny_run
  check_dir = tmp_path_factory.mktemp("check")
  names = sorted(os.listdir(images))[:3]
  for n in names:
    os.symlink(os.path.join(images, n), check_dir / n)
  out = str(tmp_path_factory.mktemp("exported"))
  printed, errors = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
    status = run_in_process("bsa_jax.export", "--workdir", workdir, "--out", out, "--check",
                            "--check_images", str(check_dir), "--platforms", "cpu,cuda")
  result = subprocess.CompletedProcess(["bsa_jax.export"], status, printed.getvalue(),
                                       errors.getvalue())
  return workdir, out, result, [str(check_dir / n) for n in names]


@pytest.mark.slow  # the whole command with --check (~45 s; the parity tests above run by default)
def test_export_command_checks_both_artifacts_on_real_images(exported):
  workdir, out, proc, images = exported
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = proc.stdout.strip().splitlines()[-1]
  assert last.startswith("max_abs_diff: ")
  assert float(last.split()[1]) <= 1e-4
  card = json.load(open(os.path.join(out, "model.json")))
  assert card["input"]["shape"] == ["B", 64, 64, 3] and card["input"]["channel_order"] == "RGB"
  assert card["input"]["normalisation"]["mode"] == "imagenet"
  assert card["output"]["threshold"] == 0.5 and "sigmoid" in card["output"]["meaning"]
  assert card["artifacts"]["stablehlo"]["platforms"] == ["cpu", "cuda"]
  assert card["provenance"]["selection"].startswith("best validation")
  assert card["check"]["images"] == len(images) and card["check"]["passed"]
  for entry in card["artifacts"].values():
    assert len(entry["sha256"]) == 64 and os.path.getsize(os.path.join(out, entry["file"])) > 0


@pytest.mark.slow  # uses the exported run of the command test above
def test_onnx_example_runs_without_jax_and_matches_predict(exported, tmp_path):
  """docs/onnx_example.py in a subprocess where importing jax, flax or bsa_jax fails."""
  workdir, out, proc, images = exported
  assert proc.returncode == 0, proc.stderr[-3000:]
  mask_path = str(tmp_path / "mask.png")
  guard = ("import runpy, sys\n"
           "for name in ('jax', 'jaxlib', 'flax', 'bsa_jax'):\n"
           "  sys.modules[name] = None  # any import of them raises ImportError\n"
           f"sys.argv = ['onnx_example.py', {out!r}, {images[0]!r}, {mask_path!r}]\n"
           f"runpy.run_path({os.path.join(REPO, 'docs', 'onnx_example.py')!r}, run_name='__main__')\n")
  run = subprocess.run([sys.executable, "-c", guard], capture_output=True, text=True, timeout=300,
                       cwd=str(tmp_path))
  assert run.returncode == 0, run.stderr[-3000:]
  assert "predicted area" in run.stdout
  from bsa_jax.tools import predict
  predict.run(workdir, [images[0]], str(tmp_path / "pred"))
  stem = os.path.splitext(os.path.basename(images[0]))[0]
  want = np.asarray(Image.open(tmp_path / "pred" / "masks" / f"{stem}.png"))
  got = np.asarray(Image.open(mask_path))
  assert got.shape == want.shape
  # predict resizes the logits, the example the probabilities: only boundary pixels may differ.
  assert np.mean(got != want) < 0.005


def test_export_refuses_a_din_run_naming_the_reason(tmp_path):
  config = config_lib.load_config(os.path.join(REPO, CONFIGS["din"]))
  with open(tmp_path / "config.json", "w") as f:
    f.write(config.to_json_best_effort())
  with pytest.raises(export.ExportError, match="enhanced"):
    export.run(str(tmp_path), str(tmp_path / "out"))
