"""Helpers shared by the tests: shapes and parameter counts without compute, the first batch of a
config's training set, a few jitted train steps of a config's model on one batch, and a folder's
file digests (to prove that nothing was rewritten)."""

import functools
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from bsa_jax import config_lib
from bsa_jax import models
from bsa_jax import train
from bsa_jax.train import optim
from conftest import data_dir
from tests.test_attention import fast_jit
from tests.test_attention import numpy_init


def count(tree) -> int:
  """Number of parameters (array elements) in a tree of arrays or shape structs."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def shapes(model, image_shape):
  """(variables, (logits, aux)) as ShapeDtypeStructs: no compute, so the full models are cheap."""
  image = jax.ShapeDtypeStruct(image_shape, jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), image)
  return variables, jax.eval_shape(functools.partial(model.apply, train=False), variables, image)


def golden_params(model, expected: int, label: str):
  """`model`'s parameter shapes (at 64 px) after asserting that they number `expected`.

  The count is printed under `label`, so `pytest -s` shows every model's size.
  """
  variables, _ = shapes(model, (1, 64, 64, 3))
  params = variables["params"]
  print(f"{label}: {count(params):,} parameters")
  assert count(params) == expected
  return params


def first_batch(data_config, batch_size: int = 8) -> dict:
  """The first batch of `data_config`'s training iterator (seed 0), the iterator closed after."""
  from bsa_jax import data  # the pipeline's imports are heavy; only the training tests need them
  iterator = data.train_iterator(data_config, global_batch_size=batch_size, seed=0)
  try:
    return next(iterator)
  finally:
    iterator.close()


def kvasir_batch(config_name: str) -> dict:
  """One 64-px batch of 8 from configs/<config_name>:small's training set (Kvasir + ClinicDB)."""
  data_dir("kvasir_seg")
  data_dir("cvc_clinicdb_pranet_train")
  c = config_lib.load_config(os.path.join(config_lib.REPO_ROOT, f"configs/{config_name}:small"))
  batch = first_batch(c.data)
  assert batch["image"].shape == (8, 64, 64, 3) and 0 < batch["mask"].mean() < 1
  return batch


def train_on_batch(config, batch: dict, num_steps: int):
  """`num_steps` jitted `train.train_step`s of `config`'s model and optimizer, all on `batch`.

  Returns (metrics of every step as floats, paths of the parameters the first step left unchanged).
  With Adam and no weight decay a parameter moves on the first step iff its gradient is non-zero,
  so the second list names the parameters no gradient reaches.
  """
  model = models.build_model(config)
  tx, schedule = optim.make_optimizer(config.train, 10)
  image_shape = (1,) + batch["image"].shape[1:]
  variables = numpy_init(model, jnp.zeros(image_shape), train=False)  # no initialiser compiles
  init_params = jax.tree.map(np.asarray, variables["params"])
  state = {"step": jnp.zeros((), jnp.int32), "params": variables["params"],
           "batch_stats": variables["batch_stats"], "opt_state": tx.init(variables["params"])}
  step = fast_jit(functools.partial(train.train_step, model=model, tx=tx, schedule=schedule,
                                    train_config=config.train))
  history, unchanged = [], None
  for _ in range(num_steps):
    state, metrics = step(state, batch, jax.random.key(1))
    history.append({k: float(v) for k, v in metrics.items()})
    if unchanged is None:
      moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), state["params"],
                           init_params)
      unchanged = [jax.tree_util.keystr(p)
                   for p, m in jax.tree_util.tree_flatten_with_path(moved)[0] if not m]
  return history, unchanged


def digest_tree(path: str) -> dict[str, str]:
  """{file path relative to `path`: sha256} of every file under `path`."""
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
  return out
