"""`config.model_init` resolution: local converted dirs, and `timm:` names failing fast offline."""

import json
import os

import pytest

from bsa_jax.models import pretrained


def test_timm_name_offline_fails_at_once_with_the_commands_that_fetch_and_convert(tmp_path,
                                                                                   monkeypatch):
  monkeypatch.setenv("BSA_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(pretrained, "_cached_hub_file", lambda hub_id: None)  # not fetched before
  from bsa_jax.models.convert import from_timm

  def no_network(*args, **kwargs):
    raise AssertionError("timm was asked to fetch although huggingface.co is known unreachable")
  monkeypatch.setattr(from_timm, "convert_to_dir", no_network)  # no minute of network retries
  with pytest.raises(pretrained.WeightsUnavailable) as info:
    pretrained.resolve("timm:swin_tiny_patch4_window7_224")
  assert isinstance(info.value, FileNotFoundError)  # the CLI prints it as one error, exit 2
  message = str(info.value)
  out = tmp_path / "converted" / "swin_tiny_patch4_window7_224"
  assert ("curl -L -o swin_tiny_patch4_window7_224.safetensors https://huggingface.co/timm/"
          "swin_tiny_patch4_window7_224.ms_in1k/resolve/main/model.safetensors") in message
  assert (f"python -m bsa_jax.models.convert --timm_model=swin_tiny_patch4_window7_224 "
          f"--checkpoint=swin_tiny_patch4_window7_224.safetensors --out={out}") in message
  assert "--config.model_init=none" in message
  assert not os.path.exists(out / "source.json")


def test_offline_a_file_timm_fetched_before_is_converted_from_the_hub_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("BSA_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  calls = []
  monkeypatch.setattr(pretrained, "_cached_hub_file", lambda hub_id: f"/hub/{hub_id}/model.safetensors")
  from bsa_jax.models.convert import from_timm
  monkeypatch.setattr(from_timm, "convert_to_dir", lambda name, out, **kw: calls.append((name, out, kw)))
  out = pretrained.resolve("timm:resnet18")
  assert calls == [("resnet18", out, {"checkpoint": "/hub/timm/resnet18.a1_in1k/model.safetensors"})]


def test_none_and_empty_mean_scratch_and_describe_says_so(tmp_path):
  assert not pretrained.requested("") and not pretrained.requested("none")
  assert pretrained.requested("timm:resnet18") and pretrained.requested("weights/x")
  assert pretrained.describe("none") == pretrained.describe("") == (
      "none: trained from scratch, no ImageNet weights")
  assert "timm's ImageNet weights" in pretrained.describe("timm:swin_tiny_patch4_window7_224")
  (tmp_path / "source.json").write_text(json.dumps({"timm_model": "resnet18", "source": "pretrained"}))
  assert pretrained.describe(str(tmp_path)) == (f"{tmp_path} (converted weights: timm_model "
                                                "resnet18, source pretrained)")
  with pytest.raises(ValueError, match="from scratch"):
    pretrained.resolve("none")


def test_a_directory_without_converted_weights_is_rejected(tmp_path):
  with pytest.raises(FileNotFoundError, match="python -m bsa_jax.models.convert"):
    pretrained.resolve(str(tmp_path))


def test_a_cached_conversion_is_reused(tmp_path, monkeypatch):
  monkeypatch.setenv("BSA_CACHE_DIR", str(tmp_path))
  cached = tmp_path / "converted" / "resnet18"
  cached.mkdir(parents=True)
  (cached / "source.json").write_text("{}")
  assert pretrained.resolve("timm:resnet18") == str(cached)
