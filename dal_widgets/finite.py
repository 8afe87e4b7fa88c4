"""The value checks of the public API (NaN/inf, integer PCM), on concrete values only and where
they live."""
import jax
import jax.numpy as jnp
import numpy as np

from dal_widgets.errors import ParameterError


def has_nonfinite(x) -> bool:
  """True when the concrete array `x` holds a NaN or inf.

  False for traced values (under jit, grad or vmap the values are unknown; the eager call at the
  public API is where they are checked). A jax array is checked on its own device, also when it
  is a constant that a function being traced closes over.
  """
  if isinstance(x, jax.core.Tracer):
    return False
  if isinstance(x, jax.Array):
    with jax.ensure_compile_time_eval():
      return not bool(jnp.all(jnp.isfinite(x)))
  return not bool(np.all(np.isfinite(x)))


def overflows(x, dtype) -> bool:
  """True when the concrete, finite array `x` holds values beyond the range of the float `dtype`
  (they would become inf when cast to it); False for traced values, as in `has_nonfinite`."""
  if isinstance(x, jax.core.Tracer):
    return False
  limit = float(np.finfo(dtype).max)
  if isinstance(x, jax.Array):
    with jax.ensure_compile_time_eval():
      return bool(jnp.max(jnp.abs(x)) > limit)
  return bool(np.max(np.abs(x)) > limit)


def check_not_pcm(x, name="x") -> None:
  """Raises ParameterError when the concrete array `x` holds integers beyond +-1: PCM counts
  (e.g. int16 from a wav reader), not the float digital units of dal_widgets (rms 1.0 is
  100 dB SPL, so a 16-bit peak of 32767 would be a 190 dB SPL sound). Integers within +-1 (an
  impulse written [0, 1, 0]), floats, and traced values pass.
  """
  dtype = np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
  if dtype.kind not in "iu" or isinstance(x, jax.core.Tracer) or np.size(x) == 0:
    return
  peak = int(np.max(np.abs(np.asarray(x, np.int64))))
  if peak > 1:
    half = 2 ** (8 * dtype.itemsize - 1)  # full scale of signed PCM; unsigned is offset by it
    convert = f"x / {half}" if dtype.kind == "i" else f"(x - {half}) / {half}"
    raise ParameterError(f"{name}: expected float samples in digital units (rms 1.0 is 100 dB "
                         f"SPL), got {dtype.name} integers up to {peak}, PCM counts; convert "
                         f"with {convert}")
