"""Optax optimizer and learning-rate schedule from `config.train`."""

import ml_collections as mlc
import optax


def make_schedule(train_config: mlc.ConfigDict, total_steps: int) -> optax.Schedule:
  """constant | cosine | poly (power 0.9), with optional linear warm-up."""
  lr, warmup = train_config.lr, int(train_config.warmup_steps)
  decay_steps = max(1, total_steps - warmup)
  if train_config.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif train_config.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps)
  elif train_config.schedule == "poly":
    main = optax.polynomial_schedule(lr, 0.0, power=0.9, transition_steps=decay_steps)
  else:
    raise ValueError(f"Unknown --config.train.schedule={train_config.schedule!r}; "
                     "use one of: constant, cosine, poly.")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(train_config: mlc.ConfigDict,
                   total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimizer, schedule). Adam with the config's lr is the paper's choice."""
  schedule = make_schedule(train_config, total_steps)
  name = train_config.optimizer
  if name == "adam":
    opt = optax.adam(schedule)
    if train_config.weight_decay:
      # L2 added to the gradient, like torch.optim.Adam(weight_decay=...).
      opt = optax.chain(optax.add_decayed_weights(train_config.weight_decay), opt)
  elif name == "adamw":
    opt = optax.adamw(schedule, weight_decay=train_config.weight_decay)
  elif name == "sgd":
    opt = optax.chain(optax.add_decayed_weights(train_config.weight_decay),
                      optax.sgd(schedule, momentum=0.9))
  else:
    raise ValueError(f"Unknown --config.train.optimizer={name!r}; use one of: adam, adamw, sgd.")
  if train_config.grad_clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm), opt)
  return opt, schedule
