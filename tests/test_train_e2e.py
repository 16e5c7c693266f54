"""End-to-end runs of launch.py: exact resume after SIGKILL, 2 processes = 1, NaN stops, real data learns."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bsa_jax import config_lib
from bsa_jax.workdir import metric_writer
from bsa_jax import train

REPO = config_lib.REPO_ROOT
# A small, fast run: tiny U-Net at 32 px on the synthetic set; validation only at the end.
FAST = ("--config=configs/demo.py", "--config.model_name=unet", "--config.data.image_size=32",
        "--config.train.batch_size=8", "--config.train.num_steps=12",
        "--config.train.checkpoint_every_steps=4", "--config.train.log_every_steps=1",
        "--config.train.eval_every_epochs=1000", "--config.data.max_eval_examples=8",
        "--config.data.test=()", "--config.train.progress_bar=False")


def _env(data_root, devices, **extra):
  env = {k: v for k, v in os.environ.items() if k != "BSA_FAULT_KILL_DURING_SAVE_AT_STEP"}
  env.update(BSA_CACHE_DIR=data_root, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
  return env


def _launch(workdir, data_root, *extra_flags, devices=1, env_extra=None, wait=True):
  cmd = [sys.executable, os.path.join(REPO, "launch.py"), f"--workdir={workdir}", *FAST,
         *extra_flags]
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(data_root, devices, **(env_extra or {})),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  if wait:
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out
  return proc


def _final_params(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  return ocp.StandardCheckpointer().restore(path)["params"]


def _losses(workdir):
  lines = metric_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return {r["step"]: r["loss"] for r in lines if "loss" in r}


def _wait_for_step(workdir, step, proc, timeout=300):
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f"run ended before step {step}: {proc.stdout.read()[-3000:]}")
    if os.path.exists(path) and max(_losses(workdir) or [0]) >= step:
      return
    time.sleep(0.2)
  raise AssertionError(f"step {step} not reached in {timeout}s")


def test_sigkill_and_restart_match_an_uninterrupted_run(tmp_path, synthetic_root):
  ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "run")
  rc, out = _launch(ref_dir, synthetic_root)
  assert rc == 0, out[-3000:]

  # 1) SIGKILL from outside, mid-way between checkpoints (once step 4's async save has committed).
  proc = _launch(run_dir, synthetic_root, wait=False)
  _wait_for_step(run_dir, 6, proc)
  committed = os.path.join(run_dir, "checkpoints", "4", "commit_success.txt")
  while not os.path.exists(committed):
    assert proc.poll() is None, "run ended before checkpoint 4 was committed"
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # 2) Restart; it resumes from step 4 and is killed while saving step 8.
  rc, out = _launch(run_dir, synthetic_root, env_extra={"BSA_FAULT_KILL_DURING_SAVE_AT_STEP": "8"})
  assert rc == -signal.SIGKILL, out[-3000:]
  assert "Resumed from" in out and out.count("Resumed from") == 1
  assert not os.path.exists(os.path.join(run_dir, "checkpoints", "8", "commit_success.txt"))
  # 3) Restart with the same command; it must finish with exactly the reference params.
  rc, out = _launch(run_dir, synthetic_root)
  assert rc == 0, out[-3000:]
  ref, got = _final_params(ref_dir, 12), _final_params(run_dir, 12)
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
    np.testing.assert_array_equal(a, b)
  ref_losses, run_losses = _losses(ref_dir), _losses(run_dir)
  for step in range(9, 13):  # steps after the last restart replay the reference exactly
    assert run_losses[step] == ref_losses[step]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _records_by_step(workdir, prefix):
  """{step: the one metrics.jsonl record holding `prefix` keys}; a step logged twice fails."""
  records = [r for r in metric_writer.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
             if any(k.startswith(prefix) for k in r)]
  steps = [r["step"] for r in records]
  assert len(steps) == len(set(steps)), f"duplicate {prefix!r} records at steps {sorted(steps)}"
  return {r["step"]: r for r in records}


@pytest.mark.slow  # three launch.py processes (~1.5 min)
def test_two_processes_match_one_process(tmp_path, synthetic_root):
  # Validation after every step, 10 images in eval batches of 4: each process feeds real rows of
  # every batch, and the last batch is half padding (on process 1).
  flags = ("--config.train.num_steps=3", "--config.train.checkpoint_every_steps=3",
           "--config.train.eval_every_epochs=0.05", "--config.eval.batch_size=4",
           "--config.data.max_eval_examples=10")
  one_dir, two_dir = str(tmp_path / "one"), str(tmp_path / "two")
  rc, out = _launch(one_dir, synthetic_root, *flags, devices=4)
  assert rc == 0, out[-3000:]
  port = _free_port()
  procs = [_launch(two_dir, synthetic_root, *flags, f"--coordinator_address=localhost:{port}",
                   "--num_processes=2", f"--process_id={i}", devices=2, wait=False)
           for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert "4 devices, 2 process(es)" in outs[0] + outs[1]
  one, two = _losses(one_dir), _losses(two_dir)
  assert sorted(one) == sorted(two) == [1, 2, 3]
  # Step 1 sees identical params and the identical global batch. Later steps differ only by the
  # summation order of the cross-process gradient all-reduce (gloo), which Adam's per-element
  # normalisation amplifies slightly (~1e-5 relative).
  assert two[1] == pytest.approx(one[1], rel=1e-6)
  np.testing.assert_allclose([two[2], two[3]], [one[2], one[3]], rtol=1e-4)
  assert sorted(_records_by_step(one_dir, "loss")) == sorted(_records_by_step(two_dir, "loss"))
  # Validation: one record per step in both runs, every val/* value equal. After step 1 the params
  # still agree (Adam's first update is ~lr·sign(g)): measured 2.6e-8 apart at most. Later steps carry
  # the all-reduce drift above (measured 4.1e-5). A process scoring another's rows, a lost or doubled
  # row, or a padding row scored moves them by 1e-2 or more.
  val_one, val_two = _records_by_step(one_dir, "val/"), _records_by_step(two_dir, "val/")
  assert sorted(val_one) == sorted(val_two) == [1, 2, 3]
  for step in val_one:
    assert set(val_one[step]) == set(val_two[step]), step
    assert val_one[step]["val/num_images"] == val_two[step]["val/num_images"] == 10
    for key, value in val_one[step].items():
      assert val_two[step][key] == pytest.approx(value, abs=1e-6 if step == 1 else 1e-3), (step, key)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, synthetic_root):
  config = config_lib.load_config(os.path.join(REPO, "configs/demo.py"))
  config.model_name = "unet"
  config.data.root = synthetic_root
  config.data.image_size = 32
  config.data.test = ()
  config.data.val = ()
  config.train.num_steps = 20
  config.train.checkpoint_every_steps = 1
  config.train.lr = 1e30  # diverges within a few steps
  config.train.schedule = "constant"
  config.train.progress_bar = False
  workdir = str(tmp_path / "nan")
  with pytest.raises(train.NonFiniteError, match=r"Non-finite training at step (\d+)") as info:
    train.main(config, workdir)
  bad_step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert steps and max(steps) == bad_step - 1, (steps, bad_step)
  saved = _final_params(workdir, max(steps))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved))
  assert f"last good checkpoint is step {bad_step - 1}" in str(info.value)


def test_config_typo_fails_before_compiling_and_names_the_key():
  proc = subprocess.run([sys.executable, "launch.py", "--config=configs/kvasir.py:small",
                         "--workdir=/tmp/unused", "--config.train.lrr=3e-4"],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
  assert proc.returncode != 0
  assert "--config.train.lrr" in proc.stderr and "Did you mean --config.train.lr?" in proc.stderr
  assert not os.path.exists("/tmp/unused")

