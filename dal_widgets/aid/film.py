"""FiLM: feature-wise linear modulation of conv features by a conditioning vector.

Perez et al. 2018, "FiLM: Visual Reasoning with a General Conditioning Layer" (AAAI):
features h are mapped to gamma(c) * h + beta(c), with gamma and beta affine in the condition c.
Here c is a listener description (e.g. audiogram thresholds / 100), so one SEANet can serve
many listeners.
"""
import flax.linen as nn
import jax.numpy as jnp


class Film(nn.Module):
  """Scales and shifts features per channel from a condition vector.

  The Dense layer starts at zero (kernel and bias), and gamma = 1 + Dense(c)[:channels],
  beta = Dense(c)[channels:], so at initialisation the layer is the identity for every
  condition.

  Attributes:
    channels: Number of feature channels C to modulate.
  """
  channels: int

  @nn.compact
  def __call__(self, h: jnp.ndarray, condition: jnp.ndarray) -> jnp.ndarray:
    """Modulates `h`.

    Args:
      h: Features, shape [batch, time, channels].
      condition: Conditioning vector, shape [batch, film_dim].

    Returns:
      gamma * h + beta, shape [batch, time, channels].
    """
    out = nn.Dense(2 * self.channels, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.zeros, name="film_dense")(condition)
    gamma = 1.0 + out[:, None, :self.channels]
    beta = out[:, None, self.channels:]
    return gamma * h + beta
