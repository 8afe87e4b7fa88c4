"""A DC blocker: the first-order high-pass H(z) = (1 - z^-1) / (1 - p z^-1) that hearing aids put
before their receiver, so that no constant offset reaches the ear.

CARFAC does not respond to a constant input (its BM filters pass no DC), so the DAL loss cannot
see an offset in an aid's output: a trained network may add one freely, wasting the receiver's
headroom. With the blocker as the network's last step, the output has none by construction.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from dal_widgets.errors import ParameterError

# Pole of the blocker. Its -3 dB corner is (1 - p) fs / (2 pi): 12.7 Hz at 16 kHz, 35 Hz at 44.1
# kHz, below the lowest audiometric frequency (125 Hz) at every rate the package supports.
DC_BLOCK_POLE = 0.995
SETTLED_DB = 60.0  # a transient counts as gone once it has decayed by this much


def _check_pole(pole) -> None:
  """ParameterError unless `pole` is a number in [0, 1) (a traced pole is left to the caller):
  at 1 or above the blocker is unstable and its output grows to inf, then NaN."""
  if isinstance(pole, jax.core.Tracer):
    return
  if isinstance(pole, bool) or not isinstance(pole, (int, float, np.integer, np.floating)) \
      or not 0.0 <= pole < 1.0:  # NaN fails too
    raise ParameterError(f"pole: expected a number in [0, 1), got {pole!r}")


def settle_samples(pole: float = DC_BLOCK_POLE) -> int:
  """Samples for the blocker's transient (a pole ** n decay, pole in [0, 1)) to fall by
  SETTLED_DB."""
  _check_pole(pole)
  if pole == 0.0:
    return 1  # no memory: the transient is over after the first sample
  return math.ceil(SETTLED_DB / 20 * math.log(10) / -math.log(pole))


def dc_block(x: jnp.ndarray, pole: float = DC_BLOCK_POLE) -> jnp.ndarray:
  """High-pass `x` along its last axis (time, samples): y[n] = x[n] - x[n-1] + pole y[n-1],
  starting in the steady state of x[0] (as if x had always been x[0]), so that a constant offset
  gives no thump at the start. Differentiable; a parallel scan, so fast on a GPU too.

  Args:
    x: Waveforms, shape [..., time], float (an integer array would truncate the pole to 0).
    pole: In [0, 1); the corner is (1 - pole) sr / (2 pi) Hz.
  Returns:
    y, same shape and dtype as x.
  Raises:
    ParameterError: x not a float array of at least 1-D, or a (concrete) pole outside [0, 1).
  """
  _check_pole(pole)
  if not isinstance(x, (jax.Array, np.ndarray)) or not jnp.issubdtype(x.dtype, jnp.floating) \
      or x.ndim < 1:
    what = f"dtype {x.dtype}, shape {x.shape}" if hasattr(x, "dtype") else type(x).__name__
    raise ParameterError(f"x: expected a float array [..., time], got {what}")
  step = x - jnp.concatenate([x[..., :1], x[..., :-1]], axis=-1)

  def combine(earlier, later):  # composition of the maps y -> a y + b
    return earlier[0] * later[0], later[0] * earlier[1] + later[1]

  return jax.lax.associative_scan(combine, (jnp.full_like(x, pole), step), axis=-1)[1]
