"""Datasheet peak FLOP/s of known GPUs, for model FLOP utilisation (the `mfu` section, gpu plan).

Dense figures (no 2:4 sparsity), per GPU, in TFLOP/s, as NVIDIA publishes them:
- A100 (SXM4 and PCIe, 40/80 GB): NVIDIA A100 Tensor Core GPU datasheet — FP32 19.5, TF32 156,
  BF16 312.
- H100 SXM5: NVIDIA H100 Tensor Core GPU datasheet — FP32 67, TF32 494.7, BF16 989.4 (the sheet's
  989 / 1,979 are with sparsity). H100 PCIe: FP32 51, TF32 378, BF16 756.
- L40S: NVIDIA L40S datasheet — FP32 91.6, TF32 183, BF16 362.05.
- L4: NVIDIA L4 datasheet — FP32 30.3, TF32 60, BF16 121 (half the sheet's sparse 120 / 242).
- A10: NVIDIA A10 datasheet — FP32 31.2, TF32 62.5, BF16 125.
- RTX 4090: NVIDIA Ada GPU architecture whitepaper, appendix table — FP32 82.6, TF32 82.6, BF16 with
  FP32 accumulate 165.2.
- RTX 3090: NVIDIA Ampere GA102 GPU architecture whitepaper, appendix table — FP32 35.6, TF32 35.6,
  BF16 with FP32 accumulate 71.
- V100 SXM2: NVIDIA V100 datasheet — FP32 15.7 (PCIe 14); no TF32 or BF16 tensor cores (bf16 runs
  on the FP32 units: peak = FP32).
- T4: NVIDIA T4 datasheet — FP32 8.1; no TF32 or BF16 tensor cores (same rule).

float32 on Ampere and newer: XLA computes float32 dots and convolutions in TF32 by default (JAX's
default matmul precision), so float32 utilisation is against the TF32 peak there, else FP32.
"""

from __future__ import annotations

import re

# (pattern on jax's device_kind, name, FP32, TF32 or None, BF16 or None), TFLOP/s; most specific first.
PEAKS = (
    (r"H100.*PCIe", "H100 PCIe", 51.0, 378.0, 756.0),
    (r"H100", "H100 SXM", 67.0, 494.7, 989.4),
    (r"A100", "A100", 19.5, 156.0, 312.0),
    (r"L40S", "L40S", 91.6, 183.0, 362.05),
    (r"\bL4\b", "L4", 30.3, 60.0, 121.0),
    (r"\bA10\b", "A10", 31.2, 62.5, 125.0),
    (r"RTX 4090(?! D)", "RTX 4090", 82.6, 82.6, 165.2),
    (r"RTX 3090(?! Ti)", "RTX 3090", 35.6, 35.6, 71.0),
    (r"V100.*PCIE", "V100 PCIe", 14.0, None, None),
    (r"V100", "V100 SXM2", 15.7, None, None),
    (r"\bT4\b", "T4", 8.1, None, None),
)


def lookup(device_kind: str) -> tuple | None:
  """The PEAKS entry of a device (jax `device_kind`, e.g. 'NVIDIA A100-SXM4-80GB'), or None."""
  for entry in PEAKS:
    if re.search(entry[0], device_kind, flags=re.IGNORECASE):
      return entry
  return None


def peak_flops(device_kind: str, dtype: str) -> tuple[float | None, str]:
  """(peak FLOP/s per device for `dtype`'s matrix maths, what the figure is), or (None, reason)."""
  entry = lookup(device_kind)
  if entry is None:
    return None, f"unknown device {device_kind!r}: achieved FLOP/s only"
  _, name, fp32, tf32, bf16 = entry
  if dtype == "bfloat16":
    return (bf16 or fp32) * 1e12, f"{name} {'BF16 tensor' if bf16 else 'FP32 (no BF16 units)'}"
  return (tf32 or fp32) * 1e12, f"{name} {'TF32 tensor' if tf32 else 'FP32'}"
