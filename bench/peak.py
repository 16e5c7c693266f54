"""This machine's measured float32 peak: a large square matmul, jitted in JAX and in torch.

The fraction in section 3 divides by the faster of the two (the machine's best dense float32 rate
that either framework reaches), so neither library's matmul kernel flatters the figure.
"""

from __future__ import annotations

from bench import common


def jax_matmul(n: int, *, warmup: int, repeats: int) -> dict:
  """GFLOP/s of a jitted (n, n) @ (n, n) float32 matmul; FLOPs = 2 n^3 (checked vs XLA's count)."""
  import jax
  import jax.numpy as jnp
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  compiled = jax.jit(jnp.matmul).lower(a, b).compile()
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  timing = common.time_calls(lambda: compiled(a, b).block_until_ready(), warmup=warmup,
                             repeats=repeats)
  flops = 2.0 * n**3
  return {"n": n, "flops": flops, "xla_flops": float(analysis.get("flops", float("nan"))),
          **timing, "gflops_per_s": flops / timing["median_s"] / 1e9}


def torch_matmul(n: int, *, warmup: int, repeats: int) -> dict:
  """GFLOP/s of torch.mm on (n, n) float32 (MKL/oneDNN on CPU)."""
  import torch
  gen = torch.Generator().manual_seed(0)
  a = torch.randn(n, n, generator=gen)
  b = torch.randn(n, n, generator=gen)
  out = torch.empty(n, n)
  timing = common.time_calls(lambda: torch.mm(a, b, out=out), warmup=warmup, repeats=repeats)
  flops = 2.0 * n**3
  return {"n": n, "flops": flops, **timing, "gflops_per_s": flops / timing["median_s"] / 1e9}


def run(spec: dict) -> dict:
  """Worker entry: both matmuls with the spec's n, warm-up and repeats."""
  kwargs = dict(warmup=spec["warmup"], repeats=spec["repeats"])
  out = {"jax": jax_matmul(spec["n"], **kwargs)}
  try:
    import torch
    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    out["torch"] = torch_matmul(spec["n"], **kwargs)
  except ImportError as e:
    out["torch"] = {"error": f"torch unavailable: {e}"}
  candidates = [(v["gflops_per_s"], k) for k, v in out.items() if "gflops_per_s" in v]
  out["peak_gflops_per_s"], out["peak_from"] = max(candidates)
  return out
