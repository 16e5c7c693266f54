"""Benchmarks (issue #7): speed, memory and scaling of BSA-Net, side by side with PyTorch and the machine.

  python -m bsa_jax.bench
"""
