"""Adam with global-norm clipping, a linear warmup, then a constant or cosine learning rate."""

import optax

# train.schedule -> what the rate does after the warmup.
SCHEDULES = ('constant', 'cosine')


def learning_rate_schedule(train_config) -> optax.Schedule:
  """Linear warmup from 0 over `warmup_steps`, then `learning_rate` held constant
  ('constant': Deletang et al. 2023 and Ruoss et al. 2023 train with a fixed Adam rate), or
  decayed by a cosine to 10% at `steps` ('cosine'). Only the cosine depends on
  `train.steps`, so only a constant rate lets a run be continued to more steps exactly."""
  rate, warmup = train_config.learning_rate, train_config.warmup_steps
  if train_config.schedule == 'constant':
    return optax.join_schedules([optax.linear_schedule(0.0, rate, warmup), optax.constant_schedule(rate)], [warmup])
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=rate,
      warmup_steps=min(warmup, train_config.steps),
      decay_steps=max(train_config.steps, warmup + 1),
      end_value=0.1 * rate,
  )


def make_optimizer(train_config) -> optax.GradientTransformation:
  """clip_by_global_norm(grad_clip) then Adam at `learning_rate_schedule`."""
  return optax.chain(optax.clip_by_global_norm(train_config.grad_clip), optax.adam(learning_rate_schedule(train_config)))
