"""Every command behaves like one tool (issue #14 items 7 and 8): `--help` exits 0 and shows how the
command is run, a user mistake is one line and exit status 2 and creates nothing, older hyphenated
flag names still work, and the converter is safe by default.

Commands run in this process (`conftest.run_in_process`: as `python -m ...` runs them, without the
~3 s of a fresh JAX import); one subprocess checks the real `python -m` path.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax.data import sources
from bsa_jax.data import split_lists
from conftest import data_dir

# command -> a flag its help must list (None: positional arguments only)
COMMANDS = {
    "launch.py": "--workdir",
    "bsa_jax.predict": "--input",
    "bsa_jax.eval": "--pred_dir",
    "bsa_jax.eval.workdir": "--step",
    "bsa_jax.eval.curves": "--workdir",
    "bsa_jax.compare": "--budget",
    "bsa_jax.seeds": "--seeds",
    "bsa_jax.bench": "--plan",
    "bsa_jax.data.check": "--threads",
    "bsa_jax.data.benchmark": "--workers",
    "bsa_jax.data.tfds_builders": "--manual_dir",
    "bsa_jax.data.split_lists": "--root",
    "bsa_jax.data.synthetic": None,
    "bsa_jax.models.convert": "--timm_model",
    "bsa_jax.models.summary": "--depth",
    "bsa_jax.config_lib": None,
}


def _usage(command: str) -> str:
  return "python launch.py" if command == "launch.py" else f"python -m {command}"


def _one_line_error(command: str, err: str) -> str:
  """The message of a one-line `<prog>: error: ...` (fails on a traceback or several lines)."""
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"{_usage(command)}: error: "), err
  return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_shows_how_to_run_the_command(command, run_command):
  if command == "bsa_jax.data.tfds_builders":
    pytest.importorskip("tensorflow_datasets")
    # The library registers its builders by name; running the command in the same process must not
    # register them a second time (CI failed on this when another test had imported the library).
    import bsa_jax.data.tfds_builders  # noqa: F401
  code, out, err = run_command(command, "--help")
  assert code == 0, err
  assert _usage(command) in out  # the usage lines, never `check.py` or `workdir.py`
  if COMMANDS[command]:
    assert f"  {COMMANDS[command]}:" in out, out


def test_help_of_the_real_module_entry_point():
  proc = subprocess.run([sys.executable, "-m", "bsa_jax.config_lib", "-h"], cwd=config_lib.REPO_ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0 and "python -m bsa_jax.config_lib configs/" in proc.stdout, proc.stderr


def test_config_lib_prints_every_key_of_a_config(run_command):
  code, out, _ = run_command("bsa_jax.config_lib", "configs/demo.py")
  assert code == 0 and "image_size: 64" in out
  code, _, err = run_command("bsa_jax.config_lib", "configs/nope.py")
  assert code == 2 and "no config file at configs/nope.py" in _one_line_error("bsa_jax.config_lib", err)


# ------------------------------------------------------------------------------------------------
# The user mistakes of issue #14's table: one line naming what is wrong, status 2, nothing created.
# ------------------------------------------------------------------------------------------------
def test_predict_without_input(tmp_path, run_command):
  code, _, err = run_command("bsa_jax.predict", f"--workdir={tmp_path}", "--output",
                             str(tmp_path / "out"))
  assert code == 2 and "--input" in _one_line_error("bsa_jax.predict", err)
  assert not (tmp_path / "out").exists()


def _workdir_with_step(workdir, step: int) -> str:
  """A run folder whose checkpoints/ holds one (metadata-only) step: enough to choose a step."""
  import orbax.checkpoint as ocp
  workdir.mkdir()
  (workdir / "config.json").write_text("{}")
  with ocp.CheckpointManager(str(workdir / "checkpoints"), item_names=("meta",)) as manager:
    manager.save(step, args=ocp.args.Composite(meta=ocp.args.JsonSave({"step": step})))
  return str(workdir)


@pytest.mark.parametrize("step", ["7", "last"])
def test_unknown_step(tmp_path, run_command, step):
  workdir = _workdir_with_step(tmp_path / "run", 5)
  image = tmp_path / "a.png"
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
  code, _, err = run_command("bsa_jax.predict", f"--workdir={workdir}", f"--input={image}",
                             f"--output={tmp_path / 'out'}", f"--step={step}")
  message = _one_line_error("bsa_jax.predict", err)
  assert code == 2 and f"--step={step}" in message and "holds steps [5]" in message
  assert not (tmp_path / "out").exists()
  code, _, err = run_command("bsa_jax.eval.workdir", f"--workdir={workdir}", f"--step={step}")
  assert code == 2 and f"--step={step}" in _one_line_error("bsa_jax.eval.workdir", err)


@pytest.mark.parametrize("config_args", [["--config=configs/nope.py"], ["--config", "configs/nope.py"],
                                         ["--config=configs/nope.py", "--config.train.lr=1"]])
def test_wrong_config_path_creates_nothing(tmp_path, run_command, config_args):
  workdir = tmp_path / "run"
  code, _, err = run_command("launch.py", *config_args, f"--workdir={workdir}")
  assert code == 2 and "no config file at configs/nope.py" in _one_line_error("launch.py", err)
  assert not workdir.exists()


def test_mistyped_config_key_names_the_nearest(tmp_path, run_command):
  code, _, err = run_command("launch.py", "--config=configs/demo.py", f"--workdir={tmp_path / 'run'}",
                             "--config.train.lrr=1")
  message = _one_line_error("launch.py", err)
  assert code == 2 and "--config.train.lrr" in message and "Did you mean --config.train.lr?" in message
  assert not (tmp_path / "run").exists()


def test_typo_in_model_summary_overrides(run_command):
  code, _, err = run_command("bsa_jax.models.summary", "--config=configs/demo.py",
                             "--config.model.variantt=paper")
  message = _one_line_error("bsa_jax.models.summary", err)
  assert code == 2 and "--config.model.variantt" in message and "--config.model.variant?" in message
  code, out, err = run_command("bsa_jax.models.summary", "--config=configs/demo.py")
  assert code == 0 and "total_params: 156967" in out, err


@pytest.mark.parametrize("command", ["launch.py", "bsa_jax.eval", "bsa_jax.models.convert"])
def test_unknown_flag(tmp_path, run_command, command):
  code, _, err = run_command(command, "--bogus=1", f"--workdir={tmp_path / 'run'}")
  assert code == 2 and "Unknown command line flag 'bogus'" in _one_line_error(command, err)
  assert not (tmp_path / "run").exists()


def test_missing_required_flags_and_stray_arguments(tmp_path, run_command):
  code, _, err = run_command("launch.py", "--config=configs/demo.py")
  assert code == 2 and "--workdir" in _one_line_error("launch.py", err)
  code, _, err = run_command("launch.py", "--config=configs/demo.py", f"--workdir={tmp_path}", "x")
  assert code == 2 and "unexpected arguments ['x']" in _one_line_error("launch.py", err)
  code, _, err = run_command("bsa_jax.data.check")
  assert code == 2 and "give one dataset folder" in _one_line_error("bsa_jax.data.check", err)
  code, _, err = run_command("bsa_jax.eval.curves", f"--workdir={tmp_path / 'none'}")
  assert code == 2 and "metrics.jsonl not found" in _one_line_error("bsa_jax.eval.curves", err)


# ------------------------------------------------------------------------------------------------
# One flag style: underscores; the hyphenated names and argparse's space-separated lists still work.
# ------------------------------------------------------------------------------------------------
def test_hyphenated_names_and_space_separated_values_are_normalised():
  from absl import flags
  values = flags.FlagValues()
  flags.DEFINE_list("workers", None, "", flag_values=values)
  flags.DEFINE_multi_string("pred_dir", None, "", flag_values=values)
  flags.DEFINE_bool("per_image", False, "", flag_values=values)
  flags.DEFINE_integer("normal_size", 1, "", flag_values=values)
  original = cli.FLAGS
  cli.FLAGS = values
  try:
    args = cli.normalise_flag_names(["--pred-dir", "p", "--no-such-flag=1", "--per-image",
                                     "--no-per-image", "--normal-size=2", "-x-y"])
    assert args == ["--pred_dir", "p", "--no-such-flag=1", "--per_image", "--noper_image",
                    "--normal_size=2", "-x-y"]  # unknown names are left to absl
    assert cli.join_list_values(["--workers", "0", "2", "--pred_dir", "a", "b", "-x"]) == [
        "--workers=0,2", "--pred_dir=a", "--pred_dir=b", "-x"]
    assert cli.join_list_values(["--workers", "-1", "3"]) == ["--workers=-1,3"]
  finally:
    cli.FLAGS = original


def test_old_flag_spellings_reach_the_command(tmp_path, run_command):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
  code, out, err = run_command("bsa_jax.eval.curves", "--workdir", str(tmp_path), "--out",
                               str(tmp_path / "c.png"))
  assert code == 0 and os.path.exists(tmp_path / "c.png"), err


# ------------------------------------------------------------------------------------------------
# The converter is safe by default (issue #14 item 8).
# ------------------------------------------------------------------------------------------------
class _RunsCode:
  """Unpickling this creates a file: what a malicious checkpoint would do."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return open, (self.marker, "w")


def test_converter_refuses_a_pickle_naming_the_file(tmp_path, run_command):
  torch = pytest.importorskip("torch")
  path, marker = tmp_path / "model.pth", tmp_path / "pwned"
  torch.save({"conv1.weight": torch.zeros(1), "extra": _RunsCode(str(marker))}, path)
  code, _, err = run_command("bsa_jax.models.convert", "--timm_model=resnet18", f"--checkpoint={path}",
                             f"--out={tmp_path / 'out'}")
  message = _one_line_error("bsa_jax.models.convert", err)
  assert code == 2 and str(path) in message and "weights_only=True" in message
  assert f"--checkpoint {tmp_path / 'model.safetensors'}" in message  # how to convert it
  assert not marker.exists() and not (tmp_path / "out").exists()


def test_converter_names_a_truncated_safetensors_file(tmp_path, run_command):
  from safetensors.numpy import save_file
  path = tmp_path / "model.safetensors"
  save_file({"conv1.weight": np.zeros((8, 3, 3, 3), np.float32)}, str(path))
  path.write_bytes(path.read_bytes()[:-100])
  code, _, err = run_command("bsa_jax.models.convert", "--timm_model=resnet18", f"--checkpoint={path}",
                             f"--out={tmp_path / 'out'}")
  message = _one_line_error("bsa_jax.models.convert", err)
  assert code == 2 and str(path) in message and "truncated" in message
  assert not (tmp_path / "out").exists()


def test_converter_prefers_the_safetensors_file_beside_a_pickle(tmp_path):
  from safetensors.numpy import save_file
  from bsa_jax.models.convert import common
  (tmp_path / "w.pth").write_bytes(b"not read")
  save_file({"a": np.ones(2, np.float32)}, str(tmp_path / "w.safetensors"))
  assert common.preferred_checkpoint(str(tmp_path / "w.pth")) == str(tmp_path / "w.safetensors")
  np.testing.assert_array_equal(common.load_state_dict(str(tmp_path / "w.safetensors"))["a"], 1)


def test_converter_refuses_an_existing_out_before_converting(tmp_path, run_command, monkeypatch):
  from bsa_jax.models.convert import from_timm
  out = tmp_path / "out"
  out.mkdir()
  (out / "source.json").write_text("{}")

  def no_conversion():
    raise AssertionError("the converter started before refusing --out")

  monkeypatch.setattr(from_timm, "_import_timm", no_conversion)
  code, _, err = run_command("bsa_jax.models.convert", "--timm-model=resnet18", "--random-init",
                             f"--out={out}")
  message = _one_line_error("bsa_jax.models.convert", err)
  assert code == 2 and str(out) in message and "--overwrite" in message
  assert (out / "source.json").read_text() == "{}"


def test_converter_overwrite_replaces_the_output(tmp_path, run_command):
  pytest.importorskip("timm")
  out = tmp_path / "out"
  args = ["--timm_model=resnet18", "--random_init", f"--out={out}",
          "--timm_kwargs=" + json.dumps({"channels": [8, 16, 32, 64]})]
  assert run_command("bsa_jax.models.convert", *args)[0] == 0
  assert run_command("bsa_jax.models.convert", *args)[0] == 2
  code, out_text, err = run_command("bsa_jax.models.convert", *args, "--seed=1", "--overwrite")
  assert code == 0, err
  assert json.loads((out / "source.json").read_text())["seed"] == 1


# ------------------------------------------------------------------------------------------------
# Training on a folder of one's own: `--config.data.train=folder:/path` (issue #14 item 7).
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def own_folder(tmp_path):
  """images/ and masks/ with 20 real Kvasir pairs (symlinks), as a user's own dataset."""
  kvasir = data_dir("kvasir_seg")
  folder = tmp_path / "my_polyps"
  for sub in ("images", "masks"):
    (folder / sub).mkdir(parents=True)
  masks = {os.path.splitext(m)[0]: m for m in os.listdir(os.path.join(kvasir, "masks"))}
  for name in sorted(os.listdir(os.path.join(kvasir, "images")))[:20]:
    stem = os.path.splitext(name)[0]
    os.symlink(os.path.join(kvasir, "images", name), folder / "images" / name)
    os.symlink(os.path.join(kvasir, "masks", masks[stem]), folder / "masks" / masks[stem])
  return folder


def test_own_folder_gets_a_seeded_validation_part(own_folder, monkeypatch):
  monkeypatch.chdir(own_folder.parent)
  data = config_lib.load_config(os.path.join(config_lib.REPO_ROOT, "configs/kvasir.py")).data
  data.train = ("folder:my_polyps",)  # relative: recorded as an absolute path
  notes = split_lists.resolve_folder_entries(data, {"data.train"})
  assert data.train == (f"folder:{own_folder}:train",) and data.val == (f"folder:{own_folder}:val",)
  assert data.test == () and len(notes) == 2
  train, val = (sources.reader_for(data, data.train[0]), sources.reader_for(data, data.val[0]))
  train_ids = [e.id for e in train.examples]
  val_ids = [e.id for e in val.examples]
  assert len(train_ids) == 18 and len(val_ids) == 2 and not set(train_ids) & set(val_ids)
  assert val_ids == split_lists.folder_split(train_ids + val_ids, "val")  # seeded: the same each run

  kept = config_lib.base_config().data  # an explicit --config.data.val/test is kept as given
  kept.train, kept.val, kept.test = ("folder:my_polyps",), ("folder:my_polyps:val",), ("x:all",)
  split_lists.resolve_folder_entries(kept, {"data.train", "data.val", "data.test"})
  assert kept.train == (f"folder:{own_folder}:all",) and kept.test == ("x:all",)


def test_a_folder_without_images_and_masks_is_named(tmp_path):
  data = config_lib.base_config().data
  with pytest.raises(Exception, match=f"{tmp_path}: no images/ and masks/"):
    sources.reader_for(data, f"folder:{tmp_path}")


@pytest.mark.slow
def test_launch_trains_on_an_own_folder_with_one_override(own_folder, tmp_path, run_command):
  workdir = tmp_path / "run"
  code, _, err = run_command(
      "launch.py", "--config=configs/demo.py", f"--workdir={workdir}",
      f"--config.data.train=folder:{own_folder}", "--config.model_name=unet",
      "--config.data.image_size=32", "--config.train.num_steps=2", "--config.train.eval_every_epochs=1",
      "--config.eval.num_overlays=0", "--config.train.progress_bar=False")
  assert code == 0, err[-3000:]
  saved = json.loads((workdir / "config.json").read_text())["data"]
  assert saved["train"] == [f"folder:{own_folder}:train"] and saved["val"] == [f"folder:{own_folder}:val"]
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("val/mDSC" in r for r in logged)  # checkpoints chosen on the folder's seeded 10 %
