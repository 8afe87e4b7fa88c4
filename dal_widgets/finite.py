"""The NaN/inf check of the public API, on concrete values only and where they live."""
import jax
import jax.numpy as jnp
import numpy as np


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
