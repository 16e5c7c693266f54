"""Every config in configs/ loads, locks, and names things that exist (model, fields, datasets, ...)."""

import dataclasses
import glob
import os

import pytest

from bsa_jax import config_lib
from bsa_jax.eval import evaluate
from bsa_jax import models
from bsa_jax.data import registry
from bsa_jax.data import sources
from bsa_jax.data import split_lists

CONFIGS = sorted(glob.glob(os.path.join(config_lib.REPO_ROOT, "configs", "*.py")))
ARGS = ("", "cpu", "small")
BASELINES = ("unet", "unetpp", "pranet")


def _specs():
  for path in CONFIGS:
    for arg in ARGS:
      spec = f"{path}:{arg}" if arg else path
      try:
        config_lib.load_config(spec)
      except ValueError as e:
        assert "argument" in str(e), e  # a config that does not offer this argument says so
        continue
      yield spec


SPECS = list(_specs())


def test_every_config_is_covered():
  assert {os.path.basename(p) for p in CONFIGS} >= {"demo.py", "kvasir.py", "acdc.py"}
  assert any(s.endswith("kvasir.py:small") for s in SPECS)
  assert all(any(s.endswith(f"kvasir_{m}.py:cpu") for s in SPECS) for m in BASELINES)


@pytest.mark.parametrize("arg", ["", "cpu"])
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_configs_are_bsanet_configs_with_the_model_swapped(name, arg):
  """The comparison's rows share data, schedule and budget; only the model (and PraNet's size) differ."""
  def load(path):
    return config_lib.load_config(os.path.join(config_lib.REPO_ROOT, "configs", path) +
                                  (f":{arg}" if arg else "")).to_dict()
  ours, theirs = load("kvasir.py"), load(f"kvasir_{name}.py")
  assert theirs["model_name"] == name and theirs["model"]["variant"] != "tiny"
  if name == "pranet" and arg == "cpu":
    assert theirs["data"].pop("image_size") % 32 == 0
    ours["data"].pop("image_size")
  for key in ("data", "train", "eval", "seed", "model_init"):
    assert theirs[key] == ours[key], key


@pytest.mark.parametrize("spec", SPECS, ids=[os.path.relpath(s, config_lib.REPO_ROOT) for s in SPECS])
def test_config_names_resolve(spec):
  config = config_lib.load_config(spec)
  config.lock()
  model_cls = models.get_model_module(config.model_name).Model
  fields = {f.name for f in dataclasses.fields(model_cls)}
  assert set(config.model) <= fields, set(config.model) - fields
  for which in ("train", "val", "test"):
    for entry in config.data[which]:
      dataset, split = split_lists.parse_entry(entry)
      if dataset not in sources.VOLUME_DATASETS:  # ACDC/Synapse are known to the volume reader
        registry.spec(dataset)  # raises for an unknown dataset name
      assert split
  evaluate.get_evaluator(config.eval.kind)
  assert config.train.loss in ("structure", "din")
  assert config.train.schedule in ("constant", "cosine", "poly")
  assert config.train.batch_size > 0 and config.data.image_size > 0
