"""Shared test setup: 8 simulated CPU devices, parsed absl flags, the real-data location, and CI's
rule that nothing may be skipped.

With BSA_REQUIRE_DATA=1 (set by `.ci/run`) a missing dataset, a missing reference package
(`pytest.importorskip`) or any other skip is a failure that names what is missing, so CI cannot go
green by skipping. Without it (a developer's machine) such tests skip with the reason; the run ends
by printing the skip count.
"""

import atexit
import os
import runpy
import shutil
import sys
import tempfile
import warnings

# Must be set before jax is imported anywhere: data-parallel tests need 8 CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The commands' default XLA flags (bsa_jax/xla_defaults.py), so this process computes as they do.
from bsa_jax import xla_defaults  # noqa: E402  (imports nothing heavy)
xla_defaults.apply()
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must never try the network in tests
# JAX's persistent compilation cache, as the commands use it, but in a folder of this session only:
# nothing is written to ~/.cache, and the many runs of the same tiny configs (launch.py processes
# included, which inherit the variable) compile each program once. Removed when the session ends.
_JAX_CACHE = tempfile.mkdtemp(prefix="bsa_jax_test_jax_cache_")
atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
os.environ["BSA_COMPILATION_CACHE"] = _JAX_CACHE
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The project's machines keep the real datasets beside the repository (../shared/data); a user's
# checkout points BSA_DATA_DIR at its own copy. Commands run by the tests inherit this.
_SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                            "shared", "data")
if not os.environ.get("BSA_DATA_DIR") and os.path.isdir(_SHARED_DATA):
  os.environ["BSA_DATA_DIR"] = os.path.normpath(_SHARED_DATA)

import pytest
from absl import flags

# grain worker processes read absl flags; parse them once (ENV_NOTES pitfall).
if not flags.FLAGS.is_parsed():
  flags.FLAGS(sys.argv[:1])

from bsa_jax import config_lib

DATA_ROOT = config_lib.default_data_root()
REQUIRE_ENV = "BSA_REQUIRE_DATA"
REQUIRE = os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def data_dir(*parts: str) -> str:
  """Path to a dataset under the shared data root; skips the test if it is absent (fails under
  BSA_REQUIRE_DATA=1)."""
  path = os.path.join(DATA_ROOT, *parts)
  if not os.path.exists(path):
    message = (f"real data not found at {path} (set BSA_DATA_DIR to the folder holding "
               f"the datasets of docs/DECISIONS.md#r8, or put them in {os.path.normpath(_SHARED_DATA)})")
    if REQUIRE:
      pytest.fail(f"{REQUIRE_ENV}=1: {message}", pytrace=False)
    pytest.skip(message)
  return path


def _skip_reason(report) -> str:
  longrepr = report.longrepr
  return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_instead_of_skip(report) -> None:
  report.outcome = "failed"
  report.longrepr = (f"{REQUIRE_ENV}=1 (CI): this test would have been skipped, which CI does not "
                     f"allow. Missing: {_skip_reason(report)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  """Under BSA_REQUIRE_DATA=1 a skip (data, package, browser) inside a test is a failure."""
  report = (yield).get_result()
  if REQUIRE and report.skipped and not hasattr(report, "wasxfail"):
    _fail_instead_of_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
  """Under BSA_REQUIRE_DATA=1 a module skipped at import (`pytest.importorskip`) is an error."""
  report = (yield).get_result()
  if REQUIRE and report.skipped:
    _fail_instead_of_skip(report)


def pytest_terminal_summary(terminalreporter):
  skipped = len(terminalreporter.stats.get("skipped", []))
  mode = "skips fail" if REQUIRE else f"set {REQUIRE_ENV}=1 to make skips fail"
  terminalreporter.write_line(f"skipped: {skipped} ({mode})")


def run_in_process(command: str, *args: str) -> int:
  """Runs a command in this process as its shell form does and returns its exit status:
  `run_in_process("bsa_jax.eval", "--out=x")` is `python -m bsa_jax.eval --out=x`, and "launch.py"
  runs that script.

  The flags the command defines are removed afterwards, so commands whose flags share names
  (--workdir, --out) run one after another in one test session; absl defines a flag only once.
  """
  before, argv = set(flags.FLAGS), sys.argv
  path = os.path.join(config_lib.REPO_ROOT, command) if command.endswith(".py") else None
  sys.argv = [path or command, *args]
  try:
    with warnings.catch_warnings():  # in a test session the command's module is imported already
      warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
      if path:
        runpy.run_path(path, run_name="__main__")
      else:
        runpy.run_module(command, run_name="__main__", alter_sys=True)
  except SystemExit as e:  # every command ends with sys.exit(status)
    return e.code
  finally:
    sys.argv = argv
    for name in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, name)
  raise AssertionError(f"{command} returned without an exit status")


@pytest.fixture
def run_command(capsys):
  """`run_in_process` that also returns what the command printed: (status, stdout, stderr)."""
  def run(command: str, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run_in_process(command, *args)
    out, err = capsys.readouterr()
    return code, out, err
  return run


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
  """A data root holding the synthetic polyp dataset (generated once per test session)."""
  from bsa_jax.data import synthetic
  root = tmp_path_factory.mktemp("data")
  synthetic.ensure(str(root / "synthetic_polyps"))
  return str(root)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synthetic_root) -> str:
  """A 2-step BSA-Net run (tiny, PointRend ARM, 64 px, synthetic data) with its results/.

  Trained once per test session for the tests of the commands that read a run (export, serve,
  video).
  """
  from bsa_jax import train  # the trainer's imports are heavy; only these tests need them
  path = tmp_path_factory.getbasetemp() / "tiny_bsanet_run"
  config = config_lib.load_config(os.path.join(config_lib.REPO_ROOT, "configs/demo.py"))
  config.data.root = synthetic_root
  config.data.max_eval_examples = 4
  config.train.num_steps = 2
  config.train.eval_every_epochs = 0.05
  config.train.progress_bar = False
  config.eval.num_overlays = 0
  train.main(config, str(path))
  return str(path)
