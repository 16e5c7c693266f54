"""Fault suite for bad data (issue #14, items 4-6): each test reproduces one row of the issue's table
with broken files built in tmp_path from real images, and asserts the new behaviour.

  truncated JPEG in the training folder      -> fails before compilation by default, naming the file
  12000x12000 PNG                            -> refused by the pixel limit; peak RSS bounded (subprocess)
  0/1-valued mask                            -> accepted everywhere, meaning what 0/255 means
  prediction over PIL's bomb limit, eval CLI -> a one-line error naming the file
  empty images/ folder                       -> data.check says that folder is empty
"""

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from conftest import data_dir

from bsa_jax import config_lib
from bsa_jax import data
from bsa_jax.data import check
from bsa_jax.data import pipeline
from bsa_jax.data import registry
from bsa_jax.data import sources
from bsa_jax.data import verify
from bsa_jax.eval import __main__ as eval_cli
from bsa_jax.eval import io as eval_io

BIG = 12000  # the image: 144 Mpx, under PIL's bomb limit (179 Mpx), above our default limit


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
  """Verification records go to this test's cache; folder readers are rebuilt for every test."""
  monkeypatch.setenv("BSA_CACHE_DIR", str(tmp_path / "cache"))
  sources._folder_reader.cache_clear()
  registry._find_examples.cache_clear()
  yield
  sources._folder_reader.cache_clear()
  registry._find_examples.cache_clear()


def _kvasir_copy(root, n: int = 6) -> list[str]:
  """Copies the first n real Kvasir-SEG pairs into root/kvasir_seg/{images,masks}; returns the names."""
  kv = data_dir("kvasir_seg")
  names = sorted(os.listdir(os.path.join(kv, "images")))[:n]
  for sub in ("images", "masks"):
    os.makedirs(root / "kvasir_seg" / sub, exist_ok=True)
    for name in names:
      shutil.copy(os.path.join(kv, sub, name), root / "kvasir_seg" / sub / name)
  return names


def _truncate(path) -> None:
  blob = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(blob[:len(blob) // 2])


def _data_config(root, **overrides):
  c = config_lib.base_config().data
  c.root = str(root)
  c.train = ("kvasir_seg:all",)
  c.val, c.test = (), ()
  c.image_size = 32
  for k, v in overrides.items():
    c[k] = v
  return c


def _tiny_train_config(root, workdir_steps: int = 2):
  config = config_lib.load_config(os.path.join(config_lib.REPO_ROOT, "configs/demo.py"))
  config.model_name = "unet"
  config.data = _data_config(root)
  config.train.batch_size = 8  # one image per simulated device (conftest: 8 CPU devices)
  config.train.num_steps = workdir_steps
  config.train.checkpoint_every_steps = 2
  config.train.log_every_steps = 1
  config.train.progress_bar = False
  return config


# ---------------------------------------------------------------------------------------------------
# Row: a truncated JPEG in the training folder.
# ---------------------------------------------------------------------------------------------------
def test_truncated_jpeg_fails_before_compilation_by_default(tmp_path, monkeypatch):
  import jax
  from bsa_jax import train
  names = _kvasir_copy(tmp_path, n=16)
  bad = tmp_path / "kvasir_seg" / "images" / names[2]
  _truncate(bad)
  config = _tiny_train_config(tmp_path)
  assert config.data.verify == "full"  # the default catches it, no option needed
  compiled = []
  real_jit = jax.jit
  monkeypatch.setattr(jax, "jit", lambda *a, **k: compiled.append(a) or real_jit(*a, **k))
  with pytest.raises(data.DataError, match=re.escape(str(bad)) + r": cannot decode .*truncated"):
    train.main(config, str(tmp_path / "run"))
  assert not compiled  # nothing was jitted, let alone compiled
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_verification_is_cached_by_file_size_and_mtime(tmp_path):
  names = _kvasir_copy(tmp_path)
  examples = registry.find_examples("kvasir_seg", str(tmp_path))
  first = verify.verify_examples(examples)
  assert (first["checked"], first["cached"]) == (2 * len(names), 0)
  again = verify.verify_examples(examples)
  assert (again["checked"], again["cached"]) == (0, 2 * len(names))  # paid once
  bad = tmp_path / "kvasir_seg" / "masks" / names[4]
  _truncate(bad)  # a changed file is decoded again, not trusted from the cache
  with pytest.raises(data.DataError, match=r"1 of 6 .* unusable(?s:.*)" + re.escape(str(bad))):
    verify.verify_examples(examples)


def test_verification_cache_forgets_deleted_files_and_folders(tmp_path):
  """The cache (~/.cache/bsa_jax/verified) keeps only files and folders that still exist."""
  kept, dropped = tmp_path / "kept", tmp_path / "dropped"
  names = _kvasir_copy(kept, n=3)
  _kvasir_copy(dropped, n=2)
  examples = registry.find_examples("kvasir_seg", str(kept))
  verify.verify_examples(registry.find_examples("kvasir_seg", str(dropped)))
  verify.verify_examples(examples)
  cache = tmp_path / "cache" / "verified"
  assert len(os.listdir(cache)) == 2
  shutil.rmtree(dropped)
  for sub in ("images", "masks"):
    os.remove(kept / "kvasir_seg" / sub / names[0])
  again = verify.verify_examples([e for e in examples if os.path.exists(e.image)])
  assert (again["checked"], again["cached"]) == (0, 4)
  cache_files = os.listdir(cache)
  assert len(cache_files) == 1, cache_files  # the deleted folder's file is gone
  with open(cache / cache_files[0]) as f:
    entries = json.load(f)["files"]
  assert sorted(entries) == sorted(os.path.join(sub, n) for sub in ("images", "masks") for n in names[1:])


@pytest.mark.slow  # two tiny training runs: ~1.5 min, ~3 min with worker processes (quiet 2-core CPU)
@pytest.mark.parametrize("num_workers", [0, 2])  # in-process threads; grain worker processes
def test_file_breaking_during_training_stops_the_run_naming_it_checkpoints_intact(tmp_path,
                                                                                    monkeypatch,
                                                                                    num_workers):
  from bsa_jax import train
  from bsa_jax.workdir import checkpoint as ckpt_lib
  names = _kvasir_copy(tmp_path, n=16)
  # 2 steps per epoch, so every file is read once per 2 steps. Worker processes decode batches far
  # ahead while the step compiles (in one run, every batch up to step 18 before step 2 had ended).
  steps = 6 if num_workers == 0 else 40
  config = _tiny_train_config(tmp_path, workdir_steps=steps)
  config.data.num_workers = num_workers
  victim = tmp_path / "kvasir_seg" / "images" / names[1]
  good = victim.read_bytes()
  real_save = ckpt_lib.Checkpointer.save

  def save_then_break_a_file(self, step, *args, **kwargs):  # the disk goes bad after step 2's save
    real_save(self, step, *args, **kwargs)
    if step == 2:
      _truncate(victim)

  workdir = str(tmp_path / "run")
  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save_then_break_a_file)
  with pytest.raises(data.DataError, match=r"Training stopped before step \d(?s:.*)" +
                     re.escape(str(victim)) + r": cannot decode(?s:.*)The last checkpoint is step"
                     ) as stopped:
    train.main(config, workdir)
  monkeypatch.setattr(ckpt_lib.Checkpointer, "save", real_save)
  assert not _children_after(10), "worker processes were left running"
  last = re.search(r"The last checkpoint is step (\d+)", str(stopped.value)).group(1)
  entries = os.listdir(os.path.join(workdir, "checkpoints"))
  assert last in entries and not [d for d in entries if "tmp" in d]  # every save completed
  victim.write_bytes(good)  # replaced with a good copy: the same command resumes and finishes
  summary = train.main(config, workdir)
  assert summary["step"] == steps


def _children_after(seconds: float) -> list:
  """This process's live multiprocessing children, waiting up to `seconds` for them to exit."""
  deadline = time.monotonic() + seconds
  while multiprocessing.active_children() and time.monotonic() < deadline:
    time.sleep(0.2)
  return multiprocessing.active_children()


def test_pipeline_names_the_file_when_verification_is_off(tmp_path):
  names = _kvasir_copy(tmp_path, n=4)
  bad = tmp_path / "kvasir_seg" / "masks" / names[0]
  _truncate(bad)
  it = data.train_iterator(_data_config(tmp_path, verify="none"), global_batch_size=4, seed=0)
  with pytest.raises(data.DataError, match=r"Training stopped before step 1(?s:.*)" +
                     re.escape(str(bad))):
    next(it)


# ---------------------------------------------------------------------------------------------------
# Row: a 12000x12000 PNG (under PIL's bomb limit).
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
  """A 12000x12000 RGB PNG tiled from a real Kvasir image, and its tiled real mask (L, 0/255)."""
  kv = data_dir("kvasir_seg")
  name = sorted(os.listdir(os.path.join(kv, "images")))[0]
  root = tmp_path_factory.mktemp("big")
  for sub, mode in (("images", "RGB"), ("masks", "L")):
    tile = np.asarray(Image.open(os.path.join(kv, sub, name)).convert(mode))
    reps = (-(-BIG // tile.shape[0]), -(-BIG // tile.shape[1])) + (1,) * (tile.ndim - 2)
    big = np.tile(tile, reps)[:BIG, :BIG]
    if sub == "masks":
      big = np.where(big >= 128, 255, 0).astype(np.uint8)
    os.makedirs(root / sub)
    Image.fromarray(big).save(root / sub / "big.png", compress_level=1)
  return root


def _peak_rss_mb(code: str) -> tuple[float, str]:
  """Runs `code` in a fresh Python; returns (its peak RSS in MB, its stdout).

  The peak is the child's VmHWM: getrusage's ru_maxrss would start from the parent's (pytest's) peak,
  which Linux carries across fork and exec.
  """
  if not os.path.exists("/proc/self/status"):
    pytest.skip("peak RSS is read from /proc (Linux)")
  code += ("\nimport re\nprint('PEAK_RSS_KB', re.search(r'VmHWM:\\s*(\\d+)', "
           "open('/proc/self/status').read()).group(1))")
  env = dict(os.environ, PYTHONPATH=config_lib.REPO_ROOT, JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  kb = int(re.search(r"PEAK_RSS_KB (\d+)", run.stdout).group(1))
  return kb / 1024, run.stdout


def test_12000px_png_is_refused_by_default_and_bounded_when_allowed(big_pair):
  image, mask = big_pair / "images" / "big.png", big_pair / "masks" / "big.png"
  # data.check: the default limit refuses both files without decoding them (was 2.0 GB decoded).
  rss, out = _peak_rss_mb(f"from bsa_jax.data import check\n"
                          f"print(check.check({str(big_pair)!r}).format())")
  assert f"{image}: 12000x12000 = 144.0 Mpx is above the pixel limit of 100 Mpx" in out
  assert f"{mask}: 12000x12000" in out and "FAILED" in out
  assert rss < 500, rss
  # data.check with the limit lifted decodes every byte without keeping float or RGB copies.
  rss, out = _peak_rss_mb(f"from bsa_jax.data import check\n"
                          f"print(check.check({str(big_pair)!r}, max_pixels=None).format())")
  assert "OK:" in out
  assert rss < 1200, rss  # one 432 MB RGB decode, the mask's 3 x 144 MB; was 2.0 GB
  # Training decodes it reduced (PNG: Image.reduce after decoding) to >= 2x the network size.
  min_side = pipeline.decode_min_side(256)
  rss, out = _peak_rss_mb(
      "from bsa_jax.data import readers, registry\n"
      f"e = registry.Example('big', {str(image)!r}, {str(mask)!r}, '')\n"
      f"r = readers.FolderReader((e,), max_pixels=None, min_side={min_side})\n"
      "x = r.read(0)\nprint(x['image'].shape, x['mask'].shape, x['mask'].mean())")
  assert "(1500, 1500, 3) (1500, 1500)" in out
  assert rss < 1000, rss
  # predict's reader skips it by default, naming the file and the limit.
  from bsa_jax.tools import predict
  skipped = []
  assert list(predict.read_images([str(image)], skipped)) == []
  assert str(image) in skipped[0][1] and "pixel limit of 100 Mpx" in skipped[0][1]


@pytest.mark.slow  # a tiny training run, then a 12000x12000 prediction (~2 min on 2 cores)
def test_predict_with_the_limit_lifted_holds_the_image_and_bands_only(big_pair, tmp_path):
  """Outputs are made and written in bands of rows: the decoded image (576 MB in PIL) is the only
  full-size array. Was 5.9 GB (float64 probability, float32 overlay and PIL copies at full size)."""
  from bsa_jax import train
  _kvasir_copy(tmp_path, n=8)
  workdir, out = str(tmp_path / "run"), tmp_path / "out"
  train.main(_tiny_train_config(tmp_path), workdir)
  image = big_pair / "images" / "big.png"
  rss, printed = _peak_rss_mb(
      "from bsa_jax.tools import predict\n"
      f"r = predict.run({workdir!r}, [{str(image)!r}], {str(out)!r}, max_pixels=None)\n"
      "print('predicted', r['predicted'], r['skipped'])")
  assert "predicted 1 []" in printed
  for sub, name, mode in (("masks", "big.png", "L"), ("probabilities", "big.png", "L"),
                          ("overlays", "big_overlay.png", "RGB")):
    with Image.open(out / sub / name) as written:  # the header only: no decoding here
      assert (written.size, written.mode) == ((BIG, BIG), mode)
  assert rss < 1200, rss  # 0.96 GB measured: 0.3 GB of Python, JAX and the model, the image, bands


def test_eval_scores_large_masks_at_their_size_one_pair_at_a_time(big_pair, tmp_path):
  # 4000x4000 masks (16 Mpx) keep the test short; the README gives the 12000x12000 figures.
  side, mask = BIG // 3, Image.open(big_pair / "masks" / "big.png")
  peaks = {}
  for n in (1, 3):
    gt_dir, pred_dir = tmp_path / f"gt{n}", tmp_path / f"pred{n}"
    os.makedirs(gt_dir)
    os.makedirs(pred_dir)
    for i in range(n):
      mask.resize((side, side), Image.NEAREST).save(gt_dir / f"{i}.png", compress_level=1)
      mask.resize((side // 8, side // 8), Image.BILINEAR).save(pred_dir / f"{i}.png")  # resized up
    rss, out = _peak_rss_mb(
        "from bsa_jax.eval import __main__ as cli\n"
        f"s, _, _ = cli.evaluate_dir({str(pred_dir)!r}, {str(gt_dir)!r}, 'big', progress=False)\n"
        "print('mDSC', s['mDSC'], s['num_images'], s['num_resized'])")
    assert re.search(rf"mDSC 0\.9\d+ {n} {n}", out), out
    peaks[n] = rss
  # Scored at the masks' size one pair at a time: three pairs peak like one, and one pair holds a
  # fixed number of full-size maps (< 100 bytes per mask pixel with the float path a resized
  # prediction takes; most of it is F^w's distance transform).
  assert peaks[3] < 1.15 * peaks[1] + 50, peaks
  assert peaks[1] * 2**20 < 100 * side * side, peaks


# ---------------------------------------------------------------------------------------------------
# Row: a 0/1-valued mask.
# ---------------------------------------------------------------------------------------------------
def _mask_variants(clinic_mask: str) -> dict[str, Image.Image]:
  fg = np.asarray(Image.open(clinic_mask)) != 0  # a real 1-bit CVC-ClinicDB mask
  grey = fg.astype(np.uint8) * 255
  return {"0_255": Image.fromarray(grey), "0_1": Image.fromarray(fg.astype(np.uint8)),
          "rgb": Image.fromarray(np.stack([grey] * 3, -1)), "1bit": Image.fromarray(fg)}


def test_01_mask_means_the_same_everywhere(tmp_path):
  clinic = data_dir("cvc_clinicdb_pranet_train")
  names = sorted(os.listdir(os.path.join(clinic, "images")), key=registry.natural_key)[:2]
  want = np.asarray(Image.open(os.path.join(clinic, "masks", names[0]))) != 0
  pred_dir = tmp_path / "pred"
  os.makedirs(pred_dir)
  for n in names:  # one prediction per image: a blurred copy of its mask
    m = Image.open(os.path.join(clinic, "masks", n)).convert("L")
    m.resize((96, 72), Image.BILINEAR).save(pred_dir / n)
  scores = {}
  for variant, image in _mask_variants(os.path.join(clinic, "masks", names[0])).items():
    root = tmp_path / variant
    for sub in ("images", "masks"):
      os.makedirs(root / "kvasir_seg" / sub)
    for n in names:
      shutil.copy(os.path.join(clinic, "images", n), root / "kvasir_seg" / "images" / n)
      shutil.copy(os.path.join(clinic, "masks", n), root / "kvasir_seg" / "masks" / n)
    image.save(root / "kvasir_seg" / "masks" / names[0])
    path = str(root / "kvasir_seg" / "masks" / names[0])
    # data.check
    report = check.check(str(root / "kvasir_seg"))
    assert report.ok and not report.warnings, report.format()
    # training: the reader the grain pipeline indexes, with the default verification
    sources._folder_reader.cache_clear()
    registry._find_examples.cache_clear()
    reader = pipeline.train_reader(_data_config(root))
    np.testing.assert_array_equal(reader.read(reader.ids.index(names[0][:-4]))["mask"], want)
    # evaluation overlays: the eval sets' original-size masks are what the GT contour is drawn from
    test_set = data.eval_sets(_data_config(root, test=("kvasir_seg:all",)), "test")["kvasir_seg:all"]
    batch = next(test_set.batches(2))
    np.testing.assert_array_equal(batch["mask_orig"][batch["id"].index(names[0][:-4])], want)
    # the eval CLI's reader and its scores
    gt = eval_io.read_gt(path)
    np.testing.assert_array_equal(gt, want)
    assert gt.view(np.uint8).max() == 1  # canonical bools
    summary, _, _ = eval_cli.evaluate_dir(str(pred_dir), str(root / "kvasir_seg"), "c", progress=False)
    scores[variant] = {k: summary[k] for k in ("mDSC", "S_alpha", "F_beta_w", "MAE")}
  assert all(s == scores["0_255"] for s in scores.values()), scores


def test_ambiguous_mask_is_refused_everywhere_naming_the_file_and_rule(tmp_path):
  names = _kvasir_copy(tmp_path, n=2)
  bad = tmp_path / "kvasir_seg" / "masks" / names[0]
  ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))  # many grey levels
  img_size = Image.open(tmp_path / "kvasir_seg" / "images" / names[0]).size
  Image.fromarray(ramp).resize(img_size).save(bad, format="JPEG")
  report = check.check(str(tmp_path / "kvasir_seg"))
  assert any(str(bad) in e and "not binary" in e and "rule" in e for e in report.errors)
  with pytest.raises(data.DataError, match=re.escape(str(bad)) + r".*not binary.*rule"):
    data.num_examples(_data_config(tmp_path), "train")
  with pytest.raises(eval_io.EvalInputError, match=re.escape(str(bad)) + r".*not binary"):
    eval_io.read_gt(str(bad))


# ---------------------------------------------------------------------------------------------------
# Row: a prediction over PIL's bomb limit given to the eval CLI.
# ---------------------------------------------------------------------------------------------------
def test_bomb_limit_prediction_is_a_one_line_error_naming_the_file(tmp_path):
  clinic = data_dir("cvc_clinicdb_pranet_train")
  name = sorted(os.listdir(os.path.join(clinic, "masks")), key=registry.natural_key)[0]
  os.makedirs(tmp_path / "gt")
  os.makedirs(tmp_path / "pred")
  shutil.copy(os.path.join(clinic, "masks", name), tmp_path / "gt" / name)
  side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 10  # just over PIL's error limit (179 Mpx)
  bomb = tmp_path / "pred" / name
  Image.new("L", (side, side)).save(bomb)  # ~0.2 MB on disk
  env = dict(os.environ, PYTHONPATH=config_lib.REPO_ROOT)
  run = subprocess.run([sys.executable, "-m", "bsa_jax.eval", "--pred-dir", str(tmp_path / "pred"),
                        "--gt-dir", str(tmp_path / "gt"), "--out", str(tmp_path / "m"), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=300)
  assert run.returncode != 0
  assert "Traceback" not in run.stderr
  lines = [l for l in run.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and str(bomb) in lines[0] and "decompression-bomb" in lines[0], run.stderr
  assert not os.path.exists(tmp_path / "m.csv")


# ---------------------------------------------------------------------------------------------------
# Row: an empty images/ folder.
# ---------------------------------------------------------------------------------------------------
def test_empty_images_folder_is_named_as_empty(tmp_path):
  _kvasir_copy(tmp_path, n=6)
  images = tmp_path / "kvasir_seg" / "images"
  shutil.rmtree(images)
  os.makedirs(images)
  report = check.check(str(tmp_path / "kvasir_seg"))
  assert not report.ok
  assert len(report.errors) == 1, report.errors  # not six "mask has no image" lines
  assert report.errors[0].startswith(f"{images}: the folder is empty")
  assert "6 file(s)" in report.errors[0]
