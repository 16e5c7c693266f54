"""Training: the step (`step.py`), its losses and optimizer, the mesh, and the run (`trainer.main`)."""

from bsa_jax.train.step import init_state, model_inputs, predict_step, train_step
from bsa_jax.train.trainer import NonFiniteError, jit_steps, main

__all__ = ["NonFiniteError", "init_state", "jit_steps", "main", "model_inputs", "predict_step", "train_step"]
