"""Writing an 8-bit PNG a band of rows at a time, so that the size of an output image does not set
the memory it takes to write it.

PIL encodes a PNG only from a whole image in memory, and copies an RGB array to 4 bytes a pixel
first: for a 12000x12000 overlay that is 432 MB of array and 576 MB of PIL image. `predict` computes
its outputs in bands of rows and hands each band to a `PngRows`, which filters it, compresses it and
writes it. The file is complete or absent: it is written under a temporary name and renamed when
the last row is in.

Format (PNG specification, ISO/IEC 15948): signature, IHDR, IDAT chunks holding one zlib stream of
filtered rows, IEND. Every row uses filter 2 ("Up": the difference with the row above), which
compresses smooth images well and needs only the previous row. Against pypng, which also streams
rows but does not filter them: same memory, files 1.75-2.8x smaller (`bench/png_bench.py`, NOTES §11).
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {"L": (0, 1), "RGB": (2, 3)}  # PIL mode -> (PNG colour type, channels)
_UP = 2  # PNG filter type "Up"
_CHUNK_BYTES = 1 << 20  # IDAT data is written in chunks of about this size


class PngRows:
  """An 8-bit grey ("L") or RGB PNG of `height` rows of `width` pixels, written band by band.

  Use as a context manager; `write` takes uint8 (rows, width) for "L" or (rows, width, 3) for
  "RGB". Leaving the block with an exception, or with rows missing, removes the partial file.
  """

  def __init__(self, path: str, width: int, height: int, mode: str, compress_level: int = 6):
    if mode not in _COLOUR_TYPES:
      raise ValueError(f"mode must be one of {sorted(_COLOUR_TYPES)}, got {mode!r}")
    self.path, self.width, self.height, self.mode = path, width, height, mode
    colour_type, self.channels = _COLOUR_TYPES[mode]
    self.rows_written = 0
    self._previous = np.zeros((1, width * self.channels), np.uint8)  # "Up" sees zeros above row 0
    self._compressor = zlib.compressobj(compress_level)
    self._pending = bytearray()
    self._part = f"{path}.part"
    self._file = open(self._part, "wb")
    self._file.write(_SIGNATURE)
    self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))

  def _chunk(self, kind: bytes, data: bytes) -> None:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    self._file.write(struct.pack(">I", len(data)) + kind)
    self._file.write(data)
    self._file.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))

  def _add(self, compressed: bytes, final: bool = False) -> None:
    """Collects compressed bytes and writes them as IDAT chunks of about _CHUNK_BYTES."""
    self._pending += compressed
    if len(self._pending) >= _CHUNK_BYTES or (final and self._pending):
      self._chunk(b"IDAT", bytes(self._pending))
      self._pending.clear()

  def write(self, rows: np.ndarray) -> None:
    """Appends uint8 rows: (n, width) for "L", (n, width, 3) for "RGB"."""
    rows = np.asarray(rows)
    expected = (self.width,) + ((self.channels,) if self.channels > 1 else ())
    if rows.dtype != np.uint8 or rows.shape[1:] != expected:
      raise ValueError(f"{self.path}: rows must be uint8 (n, {', '.join(map(str, expected))}), got "
                       f"{rows.dtype} {rows.shape}")
    if self.rows_written + len(rows) > self.height:
      raise ValueError(f"{self.path}: more than {self.height} rows written")
    if not len(rows):
      return
    flat = rows.reshape(len(rows), -1)
    filtered = np.empty((len(rows), flat.shape[1] + 1), np.uint8)
    filtered[:, 0] = _UP
    np.subtract(flat[:1], self._previous, out=filtered[:1, 1:])  # uint8: modulo 256, as PNG wants
    np.subtract(flat[1:], flat[:-1], out=filtered[1:, 1:])
    self._previous = flat[-1:].copy()
    self._add(self._compressor.compress(filtered))
    self.rows_written += len(rows)

  def close(self) -> None:
    """Finishes the stream and moves the file to its name; raises if rows are missing."""
    if self.rows_written != self.height:
      self.abort()
      raise ValueError(f"{self.path}: {self.rows_written} of {self.height} rows were written")
    self._add(self._compressor.flush(), final=True)
    self._chunk(b"IEND", b"")
    self._file.close()
    os.replace(self._part, self.path)

  def abort(self) -> None:
    """Removes the partial file."""
    self._file.close()
    if os.path.exists(self._part):
      os.remove(self._part)

  def __enter__(self) -> "PngRows":
    return self

  def __exit__(self, kind, value, traceback) -> None:
    if kind is None:
      self.close()
    else:
      self.abort()
