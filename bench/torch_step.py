"""Times the PyTorch twin of BSA-Net (`bench/torch_bsanet.py`) the way a torch user runs it.

Modes: 'eager' (NCHW), 'channels_last' (model and input in channels_last, so oneDNN convolutions run
without layout reorders), and 'compile' / 'compile_channels_last' (torch.compile of the loss
function, i.e. forward + loss, with AOTAutograd's compiled backward; for inference, torch.compile of
the model with Inductor's weight freezing).
The train step is the plain loop: zero_grad(set_to_none=True), train_loss, backward, Adam step
(lr 1e-3; `fused=True`, torch's fastest Adam on CPU, when this torch supports it).
"""

from __future__ import annotations

from bench import common

MODES = ("eager", "channels_last", "compile", "compile_channels_last")


def _short_error(e: BaseException, limit: int = 300) -> str:
  """The first line of an exception, trimmed (torch.compile errors can be pages long)."""
  text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
  return text[:limit]


def make_optimizer(params):
  """(torch.optim.Adam(lr=1e-3), description): fused where supported."""
  import torch
  params = list(params)
  try:
    return torch.optim.Adam(params, lr=1e-3, fused=True), "Adam(lr=1e-3, fused=True)"
  except (RuntimeError, TypeError, ValueError):
    return torch.optim.Adam(params, lr=1e-3), "Adam(lr=1e-3)"


def run(spec: dict) -> dict:
  """Worker entry: train (and inference if spec['predict']) timings for one mode, or an error."""
  import torch
  threads = int(spec.get("threads") or torch.get_num_threads())
  torch.set_num_threads(threads)
  out = {"framework": "torch", "mode": spec["mode"], "threads": threads,
         "torch_version": torch.__version__}
  try:
    from bench import torch_bsanet
  except Exception as e:  # the twin is written separately; report rather than crash
    return {**out, "error": f"unavailable: cannot import bench.torch_bsanet ({_short_error(e)})"}
  mode = spec["mode"]
  channels_last = mode.endswith("channels_last")
  torch.manual_seed(0)
  model = torch_bsanet.build_model(spec["variant"])
  out["num_params"] = int(torch_bsanet.num_params(model))
  image, mask = common.synthetic_batch(spec["batch"], spec["size"])
  x = torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()  # (B, 3, S, S)
  y = torch.from_numpy(mask).permute(0, 3, 1, 2).contiguous()  # (B, 1, S, S)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  opt, out["optimizer"] = make_optimizer(model.parameters())

  def loss_fn(image, target):
    return torch_bsanet.train_loss(model, image, target)

  if mode.startswith("compile"):
    loss_fn = torch.compile(loss_fn)

  def train_once():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(x, y)
    loss.backward()
    opt.step()
    out["last_loss"] = float(loss.detach())

  model.train()
  try:
    out["train"] = common.time_calls(train_once, warmup=spec["warmup"], repeats=spec["repeats"])
  except Exception as e:
    return {**out, "error": f"train step failed: {_short_error(e)}"}
  out["train"]["images_per_s"] = spec["batch"] / out["train"]["median_s"]
  # The first call includes torch.compile's tracing and code generation.
  out["train"]["compile_s"] = out["train"]["first_s"] - out["train"]["median_s"]

  if spec.get("predict"):
    model.eval()
    infer = model
    if mode.startswith("compile"):
      # Inductor's recommended CPU inference setting: constant-fold weights and prepack them for
      # oneDNN (applies under inference_mode only).
      import torch._inductor.config as inductor_config
      inductor_config.freezing = True
      infer = torch.compile(model)

    def predict_once():
      with torch.inference_mode():
        infer(x)[0]

    try:
      out["predict"] = common.time_calls(predict_once, warmup=spec["warmup"],
                                         repeats=spec["repeats"])
    except Exception as e:
      out["predict_error"] = f"inference failed: {_short_error(e)}"
    else:
      out["predict"]["images_per_s"] = spec["batch"] / out["predict"]["median_s"]
      out["predict"]["compile_s"] = out["predict"]["first_s"] - out["predict"]["median_s"]
  return out

