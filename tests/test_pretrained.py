"""`config.model_init` resolution: local converted dirs, and `timm:` names failing fast offline."""

import os

import pytest

from bsa_jax.models import pretrained


def test_timm_name_offline_fails_with_how_to_convert_a_local_file(tmp_path, monkeypatch):
  monkeypatch.setenv("BSA_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(RuntimeError) as info:
    pretrained.resolve("timm:swin_tiny_patch4_window7_224")
  message = str(info.value)
  assert "--checkpoint FILE" in message and "--config.model_init=weights/" in message
  assert not os.path.exists(tmp_path / "converted" / "swin_tiny_patch4_window7_224" / "source.json")


def test_a_directory_without_converted_weights_is_rejected(tmp_path):
  with pytest.raises(FileNotFoundError, match="python -m bsa_jax.models.convert"):
    pretrained.resolve(str(tmp_path))


def test_a_cached_conversion_is_reused(tmp_path, monkeypatch):
  monkeypatch.setenv("BSA_CACHE_DIR", str(tmp_path))
  cached = tmp_path / "converted" / "resnet18"
  cached.mkdir(parents=True)
  (cached / "source.json").write_text("{}")
  assert pretrained.resolve("timm:resnet18") == str(cached)
