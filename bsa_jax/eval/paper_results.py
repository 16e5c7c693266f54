"""Tables 1–4 of the BSA-Net paper, quoted as printed (the paper's numbers, not ours).

Source: Sun, Sui, Liang, Hu, Du, "Medical Image Segmentation with Bilateral Spatial Attention and
Transfer Learning", section 4.3 (full reference: docs/DECISIONS.md#sources). The paper splits
each dataset 7:1:2 at random (no lists published) and resizes to 256x256 for testing; none of these
rows were produced under our protocol, so they are context, not a comparison.

Quirks of the source, kept out of the numbers: the tables say "Kavsir" for Kvasir and "Unet+ +" for
Unet++; the weighted-F column is headed F_beta^o / F_beta^alpha (we read it as F_beta^w); the text says
LDNet beats BSA-Net on CVC-ColonDB in S_alpha and F_beta, but Table 3 has BSA-Net ahead in F_beta
(0.850 vs 0.845) and LDNet ahead in S_alpha and E_phi^max.
"""

from __future__ import annotations

COLUMNS = ("mDSC", "mIoU", "S_alpha", "F_beta_w", "E_phi_max", "MAE")
PAPER_MODEL = "Ours"  # the paper's name for BSA-Net in its tables
SOURCE = ("Sun et al., Medical Image Segmentation with Bilateral Spatial Attention and Transfer "
          "Learning, Tables 1-4")

# table number -> (dataset title, {model: (mDSC, mIoU, S_alpha, F_beta_w, E_phi_max, MAE)})
TABLES: dict[int, tuple[str, dict[str, tuple[float, ...]]]] = {
    1: ("Kvasir", {
        "U-Net": (0.832, 0.739, 0.754, 0.746, 0.822, 0.072),
        "Unet++": (0.841, 0.718, 0.760, 0.870, 0.893, 0.046),
        "PraNet": (0.880, 0.865, 0.845, 0.926, 0.960, 0.034),
        "SANet": (0.882, 0.823, 0.871, 0.889, 0.954, 0.042),
        "LDNet": (0.890, 0.877, 0.866, 0.876, 0.936, 0.070),
        "Ours": (0.901, 0.887, 0.885, 0.917, 0.973, 0.029),
    }),
    2: ("ETIS", {
        "U-Net": (0.608, 0.462, 0.471, 0.704, 0.735, 0.065),
        "Unet++": (0.691, 0.579, 0.587, 0.789, 0.786, 0.052),
        "PraNet": (0.775, 0.713, 0.710, 0.834, 0.863, 0.030),
        "SANet": (0.798, 0.721, 0.701, 0.828, 0.835, 0.044),
        "LDNet": (0.746, 0.722, 0.726, 0.823, 0.865, 0.037),
        "Ours": (0.833, 0.749, 0.729, 0.842, 0.894, 0.024),
    }),
    3: ("CVC-ColonDB", {
        "U-Net": (0.404, 0.340, 0.513, 0.754, 0.770, 0.066),
        "Unet++": (0.411, 0.345, 0.608, 0.801, 0.830, 0.057),
        "PraNet": (0.684, 0.643, 0.756, 0.843, 0.898, 0.046),
        "SANet": (0.741, 0.664, 0.747, 0.838, 0.888, 0.049),
        "LDNet": (0.746, 0.669, 0.758, 0.845, 0.909, 0.045),
        "Ours": (0.753, 0.672, 0.755, 0.850, 0.900, 0.031),
    }),
    4: ("CVC-EndoScene", {
        "U-Net": (0.800, 0.773, 0.776, 0.898, 0.895, 0.035),
        "Unet++": (0.831, 0.843, 0.810, 0.919, 0.927, 0.029),
        "PraNet": (0.870, 0.873, 0.913, 0.938, 0.945, 0.023),
        "SANet": (0.864, 0.863, 0.859, 0.921, 0.943, 0.026),
        "LDNet": (0.873, 0.875, 0.926, 0.925, 0.948, 0.021),
        "Ours": (0.880, 0.880, 0.933, 0.940, 0.956, 0.010),
    }),
}

# Dataset names used in our configs and results -> the paper's table number.
DATASET_TABLE = {
    "kvasir": 1, "kvasir_seg": 1, "kvasir-seg": 1,
    "etis": 2, "etis_laribpolypdb": 2, "etis-laribpolypdb": 2,
    "cvc_colondb": 3, "cvc-colondb": 3, "colondb": 3,
    "cvc_endoscene": 4, "cvc-endoscene": 4, "endoscene": 4,
}


def table_for_dataset(name: str) -> int | None:
  """Paper table number for a dataset name like 'kvasir_seg' or 'cvc_colondb:test' (None if none)."""
  return DATASET_TABLE.get(name.split(":")[0].strip().lower())


def paper_rows(table: int) -> list[dict]:
  """The table's rows as dicts {'model', metric: value} in the paper's order."""
  _, rows = TABLES[table]
  return [{"model": model, **dict(zip(COLUMNS, values))} for model, values in rows.items()]
