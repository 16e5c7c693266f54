"""Releasing the heap the compiler freed: the process gives the pages back, and a step compiled on
its first call computes what the jitted step computes."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from bsa_jax.train import heap

_FRAGMENTED_HEAP = textwrap.dedent("""
    import resource, sys
    from bsa_jax.train import heap
    def rss_mib():
      with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
    keep = [bytearray(100_000) for _ in range(3000)]  # 300 MB in blocks under mmap's threshold
    del keep[:-1]  # freed, but the last block holds the top of the heap
    before = rss_mib()
    released = heap.release_free_heap()
    print(released, before, rss_mib())
""")


def test_freed_heap_goes_back_to_the_os():
  out = subprocess.run([sys.executable, "-c", _FRAGMENTED_HEAP], capture_output=True, text=True,
                       check=True).stdout.split()
  released, before, after = out[0] == "True", float(out[1]), float(out[2])
  assert released and before - after > 200, (before, after)  # MiB


def test_a_step_compiled_on_its_first_call_computes_the_jitted_step():
  jitted = jax.jit(lambda w, x: (w * 2, jnp.tanh(x @ w).sum()), donate_argnums=(0,))
  step = heap.CompiledOnFirstCall(jitted)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
  w = jnp.ones((3, 3))
  want = [jax.device_get(jitted(jnp.ones((3, 3)), x))]
  got = step(w, x)
  assert step.compiled is not None
  np.testing.assert_allclose(got[1], want[0][1], rtol=1e-6)
  got = step(got[0], x)  # the executable is reused for the next call
  np.testing.assert_allclose(got[0], 4 * np.ones((3, 3)))
