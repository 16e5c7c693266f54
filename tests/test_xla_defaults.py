"""The commands' default XLA flags (bsa_jax/xla_defaults.py): set in one place, overridable, and
computing the same numbers as XLA's own defaults (issue #15 item 2)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bsa_jax import cli
from bsa_jax import config_lib
from bsa_jax import xla_defaults

_DEFAULT = xla_defaults.CPU_FLAGS[0]
_NAME = _DEFAULT.split("=")[0]


def test_defaults_go_first_and_the_users_own_value_wins():
  assert xla_defaults.with_defaults("", {}) == _DEFAULT
  assert xla_defaults.with_defaults("--a=1", {}) == f"{_DEFAULT} --a=1"
  mine = f"--a=1 {_NAME}="
  assert xla_defaults.with_defaults(mine, {}) == mine  # not added twice, the user's value stays
  assert xla_defaults.with_defaults(xla_defaults.with_defaults("--a=1", {}), {}) == f"{_DEFAULT} --a=1"
  assert xla_defaults.with_defaults("--a=1", {xla_defaults.ENV: "off"}) == "--a=1"
  environ = {"XLA_FLAGS": "--b=2"}
  xla_defaults.apply(environ)
  assert environ["XLA_FLAGS"] == f"{_DEFAULT} --b=2"


def test_without_defaults_takes_out_exactly_ours():
  assert xla_defaults.without_defaults(xla_defaults.with_defaults("--a=1", {})) == "--a=1"
  assert xla_defaults.without_defaults(f"{_NAME}= --a=1") == f"{_NAME}= --a=1"  # the user's own value


def test_every_command_applies_them_before_its_main(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.delenv(xla_defaults.ENV, raising=False)
  seen = []
  with pytest.raises(SystemExit) as exit_info:
    cli.run(lambda argv: seen.append(os.environ["XLA_FLAGS"]), prog="python -m x", argv=["x"])
  assert exit_info.value.code == 0
  assert seen == [f"{_DEFAULT} --xla_force_host_platform_device_count=2"]


_CHILD = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from bsa_jax import models
from bsa_jax.train import losses_binary
model = models.get_model("bsanet", variant="tiny", arm="none", isam_drop_path=0.0)
rng = np.random.default_rng(0)
image = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
mask = (rng.uniform(size=(2, 64, 64, 1)) > 0.7).astype(np.float32)
variables = jax.jit(lambda: model.init({"params": jax.random.key(1), "points": jax.random.key(2),
                                        "dropout": jax.random.key(3)}, image, train=False))()

def loss_fn(params):
  out, _ = model.apply({**variables, "params": params}, image, train=True,
                       rngs={"points": jax.random.key(4), "dropout": jax.random.key(5)},
                       mutable=["batch_stats"])
  logits = out[0] if isinstance(out, tuple) else out
  logits = logits["logits"] if isinstance(logits, dict) else logits
  return losses_binary.structure_loss(logits, mask)

loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
leaves = [np.asarray(g).ravel() for g in jax.tree.leaves(grads)]
np.save(sys.argv[1], np.concatenate([[float(loss)]] + leaves))
"""


def _loss_and_grads(tmp_path, name: str, **env) -> np.ndarray:
  path = str(tmp_path / f"{name}.npy")
  environ = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu", **env}
  proc = subprocess.run([sys.executable, "-c", "from bsa_jax import xla_defaults; "
                         "xla_defaults.apply(); exec(open(0).read())", path], input=_CHILD,
                        cwd=config_lib.REPO_ROOT, env=environ, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return np.load(path)


def test_training_gradients_equal_xla_own_defaults(tmp_path):
  ours = _loss_and_grads(tmp_path, "defaults")
  xla = _loss_and_grads(tmp_path, "xla", **{xla_defaults.ENV: "off"})
  assert ours.shape == xla.shape and np.all(np.isfinite(ours))
  assert abs(ours[0] - xla[0]) <= 1e-5 * abs(xla[0]), (ours[0], xla[0])  # the loss
  grads, want = ours[1:], xla[1:]
  # Another kernel library sums in another order: float32 rounding, not a different gradient.
  np.testing.assert_allclose(grads, want, rtol=0, atol=1e-4 * np.abs(want).max())
  assert np.linalg.norm(grads - want) <= 1e-4 * np.linalg.norm(want)
