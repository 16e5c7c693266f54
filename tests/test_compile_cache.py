"""JAX's persistent compilation cache (`bsa_jax/compile_cache.py`): where it lives, how it is turned
off, that a second process is served from it, and that the commands turn it on.

The test session runs with BSA_COMPILATION_CACHE set to a folder of its own (conftest.py); the
two-process test uses another, in a temporary BSA_CACHE_DIR, so nothing is written to the user's home.
"""

import json
import os
import subprocess
import sys
import types

import pytest

from bsa_jax import compile_cache
from bsa_jax import config_lib

# Compiles one small function with the cache on (no minimum compile time) and reports what JAX's
# monitoring events say about the persistent cache.
_CHILD = """
import json, jax, jax.numpy as jnp
from bsa_jax import compile_cache
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
path = compile_cache.enable(min_compile_time_s=0.0)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 3.0)
f(jnp.ones((32, 32))).block_until_ready()
print("RESULT " + json.dumps({"path": path,
      "hits": events.count("/jax/compilation_cache/cache_hits"),
      "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""


def _run_child(env) -> dict:
  proc = subprocess.run([sys.executable, "-c", _CHILD], cwd=config_lib.REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])


def _entries(path: str) -> set[str]:
  return {name for name in os.listdir(path) if name.endswith("-cache")}


def test_second_process_is_served_from_the_cache(tmp_path):
  env = dict(os.environ, BSA_CACHE_DIR=str(tmp_path), JAX_PLATFORMS="cpu", XLA_FLAGS="")
  env.pop(compile_cache.ENV)  # unset = on, in $BSA_CACHE_DIR/jax_cache
  first = _run_child(env)
  assert first["path"].startswith(str(tmp_path / "jax_cache") + os.sep)
  assert first["hits"] == 0 and first["misses"] >= 1
  written = _entries(first["path"])
  assert written, "the first process writes its executables"
  second = _run_child(env)
  assert second["path"] == first["path"]
  assert second["hits"] >= 1 and second["misses"] == 0, second
  assert _entries(second["path"]) == written, "nothing new to write"


@pytest.fixture
def jax_cache_unset():
  """JAX's cache folder unset for the test (an earlier command of the session may have set it)."""
  import jax
  before = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", None)
  yield
  jax.config.update("jax_compilation_cache_dir", before)


def test_off_and_folder_override(monkeypatch, tmp_path, jax_cache_unset):
  monkeypatch.setenv("BSA_CACHE_DIR", str(tmp_path))
  for value in ("off", "0", "false", "No", "none"):
    monkeypatch.setenv(compile_cache.ENV, value)
    assert compile_cache.cache_root() is None
    assert compile_cache.enable() is None, "off: JAX is not configured"
  monkeypatch.setenv(compile_cache.ENV, "on")
  assert compile_cache.cache_root() == str(tmp_path / "jax_cache")
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
  assert compile_cache.cache_root() == str(tmp_path / "mine")
  monkeypatch.delenv("BSA_CACHE_DIR")
  monkeypatch.delenv(compile_cache.ENV)
  assert compile_cache.cache_root() == os.path.expanduser("~/.cache/bsa_jax/jax_cache")


def test_folder_names_the_versions_backend_and_machine(tmp_path):
  assert compile_cache.cache_tag("0.10.2", "0.10.2", "gpu", "NVIDIA A100-SXM4-80GB") == (
      "jax0.10.2-jaxlib0.10.2-gpu-nvidia_a100_sxm4_80gb")
  assert compile_cache.cache_tag("0.10.2", "0.10.2", "cpu", "cpu", "4da5fa5b") == (
      "jax0.10.2-jaxlib0.10.2-cpu-4da5fa5b")
  one, two = tmp_path / "a", tmp_path / "b"
  one.write_text("model name\t: X\nflags\t\t: fpu avx2\n")
  two.write_text("model name\t: X\nflags\t\t: fpu avx2 avx512f\n")
  assert compile_cache.cpu_fingerprint(str(one)) != compile_cache.cpu_fingerprint(str(two))
  assert compile_cache.cpu_fingerprint(str(tmp_path / "absent")) == ""


class _Enabled(Exception):
  """Raised by the stand-in for the step after `enable`: the command got that far."""


def _record_enable(monkeypatch) -> list[str]:
  calls = []
  monkeypatch.setattr(compile_cache, "enable", lambda **_: calls.append("enable"))
  return calls


def test_launch_predict_and_eval_turn_it_on_before_compiling(monkeypatch, tmp_path):
  from bsa_jax import train
  from bsa_jax.eval import workdir as eval_workdir
  from bsa_jax.tools import launch
  from bsa_jax.tools import predict
  calls = _record_enable(monkeypatch)

  def after(name):
    def stand_in(*args, **kwargs):
      calls.append(name)
      raise _Enabled
    return stand_in

  monkeypatch.setattr(train, "main", after("train"))
  with pytest.raises(_Enabled):
    launch.run(config_lib.base_config(), str(tmp_path / "run"))
  monkeypatch.setattr(predict.inference, "load_trained", after("predict"))
  with pytest.raises(_Enabled):
    predict.run(str(tmp_path / "run"), [str(tmp_path)], str(tmp_path / "out"))
  monkeypatch.setattr(eval_workdir, "evaluate_workdir", after("eval"))
  monkeypatch.setattr(eval_workdir, "flags", types.SimpleNamespace(FLAGS=_Flags(workdir=str(tmp_path / "run"))))
  with pytest.raises(_Enabled):
    eval_workdir.main(["eval"])
  assert calls == ["enable", "train", "enable", "predict", "enable", "eval"]


class _Flags:
  """The parsed flags `eval.workdir.main` reads."""

  def __init__(self, **values):
    self.__dict__.update({"step": "best", "split": "test", "num_overlays": None, "tta": None,
                          "weights": "run", **values})
