"""Shared test setup: 8 simulated CPU devices, parsed absl flags, and the real-data location."""

import os
import sys

# Must be set before jax is imported anywhere: data-parallel tests need 8 CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must never try the network in tests
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest
from absl import flags

# grain worker processes read absl flags; parse them once (ENV_NOTES pitfall).
if not flags.FLAGS.is_parsed():
  flags.FLAGS(sys.argv[:1])

from bsa_jax import config_lib

DATA_ROOT = config_lib.default_data_root()


def data_dir(*parts: str) -> str:
  """Path to a dataset under the shared data root; skips the test if it is absent."""
  path = os.path.join(DATA_ROOT, *parts)
  if not os.path.exists(path):
    pytest.skip(f"real data not found at {path} (set BSA_DATA_DIR to the folder holding "
                f"the datasets listed in shared/data/MANIFEST.md)")
  return path


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
  """A data root holding the synthetic polyp dataset (generated once per test session)."""
  from bsa_jax.data import synthetic
  root = tmp_path_factory.mktemp("data")
  synthetic.ensure(str(root / "synthetic_polyps"))
  return str(root)
