"""Segment an image with an exported model using only onnxruntime, numpy and Pillow (no JAX, no bsa_jax).

  python -m bsa_jax.export --workdir workdirs/kvasir --out exported/kvasir
  pip install onnxruntime numpy pillow            # all this script needs
  python docs/onnx_example.py exported/kvasir polyp.jpg polyp_mask.png

Reads `model.json` for the input size and normalisation, runs `model.onnx`, resizes the probability
map to the image's size and writes the binary mask (255 = foreground). Prints the predicted area.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image


def preprocess(image: Image.Image, card: dict) -> np.ndarray:
  """PIL image -> float32 (1, S, S, 3): RGB, bilinear resize, the card's normalisation."""
  size = card["input"]["shape"][1]
  rgb = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255.0
  norm = card["input"]["normalisation"]
  if norm["mode"] == "imagenet":
    rgb = (rgb - np.array(norm["mean"], np.float32)) / np.array(norm["std"], np.float32)
  return rgb[None]


def segment(model_dir: str, image_path: str) -> tuple[np.ndarray, float]:
  """(uint8 mask at the image's size, predicted area fraction)."""
  with open(os.path.join(model_dir, "model.json")) as f:
    card = json.load(f)
  session = ort.InferenceSession(os.path.join(model_dir, card["artifacts"]["onnx"]["file"]),
                                 providers=["CPUExecutionProvider"])
  image = Image.open(image_path)
  probabilities = session.run(None, {"image": preprocess(image, card)})[0][0, :, :, 0]  # (S, S)
  full = np.asarray(Image.fromarray(probabilities).resize(image.size, Image.BILINEAR))  # (H, W)
  mask = full >= card["output"]["threshold"]
  return (mask * 255).astype(np.uint8), float(mask.mean())


if __name__ == "__main__":
  if len(sys.argv) != 4:
    sys.exit(__doc__)
  mask, area = segment(sys.argv[1], sys.argv[2])
  Image.fromarray(mask).save(sys.argv[3])
  print(f"predicted area: {100 * area:.1f}% -> {sys.argv[3]}")
