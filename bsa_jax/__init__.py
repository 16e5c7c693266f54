"""bsa_jax: attention-based medical image segmentation in JAX/Flax (BSA-Net, DIN)."""

__version__ = "0.1.0"
