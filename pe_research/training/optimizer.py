"""Adam with global-norm clipping and a warmup + cosine learning-rate schedule."""

import optax


def make_optimizer(train_config) -> optax.GradientTransformation:
  """clip_by_global_norm(grad_clip) then Adam; the rate warms up linearly for
  `warmup_steps`, then decays by a cosine to 10% at `steps`."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=train_config.learning_rate,
      warmup_steps=min(train_config.warmup_steps, train_config.steps),
      decay_steps=max(train_config.steps, train_config.warmup_steps + 1),
      end_value=0.1 * train_config.learning_rate,
  )
  return optax.chain(optax.clip_by_global_norm(train_config.grad_clip), optax.adam(schedule))
