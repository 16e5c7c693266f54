"""Polyp segmentation evaluation: PraNet-toolbox metrics, file I/O, the eval CLI and paper tables.

`metrics` (numpy/scipy, on the host) is the one implementation: every validation, test and table
number comes from it. Importing this package does not import jax.
"""

from bsa_jax.eval.metrics import (ALL_METRIC_NAMES, EXTRA_METRIC_NAMES, METRIC_NAMES, PolypMetrics,
                                  aggregate, image_scores, resize_prediction, to_uint8_map)

__all__ = ["ALL_METRIC_NAMES", "EXTRA_METRIC_NAMES", "METRIC_NAMES", "PolypMetrics", "aggregate",
           "image_scores", "resize_prediction", "to_uint8_map"]
