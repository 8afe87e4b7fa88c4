"""host_call: host functions inside jitted programs that JAX's persistent cache can keep."""
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import host_call
from dal_widgets.cochlea import native


@pytest.fixture(scope="module", autouse=True)
def installed():
  assert native.library() is not None, "the CARFAC kernel must build here (a C compiler)"
  assert host_call.installed(), "jaxlib ships the XLA FFI headers, so host_call must install"


def _scale(payload, outs, args):
  """outs[0] = args[0] * factor, outs[1] = the sum over the last axis (any leading axes)."""
  outs[0][...] = args[0] * float(payload)
  outs[1][...] = args[0].sum(axis=-1)


host_call.register("test_scale", _scale)


def _scaled(x, factor: float):
  shapes = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(x.shape[:-1], x.dtype))
  return host_call.call("test_scale", repr(factor), shapes, x)


def test_a_handler_writes_its_results_under_jit_and_vmap():
  x = jnp.arange(12.0, dtype=jnp.float32).reshape(3, 4)
  y, s = jax.jit(lambda x: _scaled(x, 2.5))(x)
  np.testing.assert_array_equal(y, 2.5 * np.asarray(x))
  np.testing.assert_array_equal(s, np.asarray(x).sum(-1))
  yb, sb = jax.jit(jax.vmap(lambda row: _scaled(row, -1.0)))(x)  # the handler sees [3, 4]
  np.testing.assert_array_equal(yb, -np.asarray(x))
  np.testing.assert_array_equal(sb, np.asarray(x).sum(-1))


def test_an_error_in_a_handler_reaches_the_caller_with_its_message():
  def broken(payload, outs, args):
    raise ValueError(f"no good: {payload}")

  host_call.register("test_broken", broken)
  shapes = (jax.ShapeDtypeStruct((2,), jnp.float32),)
  with pytest.raises(Exception, match="ValueError: no good: payload 7"):
    jax.block_until_ready(jax.jit(lambda x: host_call.call("test_broken", "payload 7", shapes, x))(
        jnp.zeros(2)))


def test_unknown_handlers_and_bad_names_are_refused():
  with pytest.raises(KeyError, match="no host handler registered as 'nobody'"):
    host_call.call("nobody", "", (jax.ShapeDtypeStruct((1,), jnp.float32),), jnp.zeros(1))
  with pytest.raises(ValueError, match="cannot contain"):
    host_call.register("two\nlines", _scale)


def test_the_buffer_callback_fallback_gives_the_same_nap_and_gradient(monkeypatch):
  """Without jaxlib's FFI headers the kernel runs through jax's buffer_callback: same numbers."""
  model = cf.design_carfac(cf.CarfacParams(sr=16000))
  x = jnp.asarray(0.03 * np.random.default_rng(0).standard_normal(300), jnp.float32)
  nap = lambda x: cf.run(x, *model, native=True, bm=False)[0].nap
  loss = lambda x: jnp.sum(nap(x) ** 2)
  want = jax.jit(nap)(x), jax.jit(jax.grad(loss))(x)
  monkeypatch.setattr(host_call, "installed", lambda: False)
  got = jax.jit(lambda x: nap(x) + 0)(x), jax.jit(jax.grad(lambda x: loss(x) + 0))(x)  # retrace
  for w, g in zip(want, got):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


PROBE = textwrap.dedent("""
    import logging, sys
    import jax, jax.numpy as jnp, numpy as np
    from dal_widgets.cochlea import carfac as cf
    hits = []
    class Hits(logging.Handler):
      def emit(self, record):
        if "cache hit" in record.getMessage():
          hits.append(record.getMessage())
    logger = logging.getLogger("jax._src.compiler")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Hits())
    from dal_widgets import compile_cache
    assert compile_cache.enable(sys.argv[1])  # as the apps and the CLI do
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_raise_persistent_cache_errors", True)
    model = cf.design_carfac(cf.CarfacParams(sr=16000))
    def carfac_probe(x):
      return jax.grad(lambda x: jnp.mean(cf.run(x, *model, native=True, bm=False)[0].nap))(x)
    x = jnp.asarray(0.03 * np.random.default_rng(1).standard_normal(400), jnp.float32)
    g = jax.jit(carfac_probe)(x)
    print(float(jnp.sum(jnp.abs(g))), sum("carfac_probe" in h for h in hits))
""")


def test_a_program_that_runs_the_kernel_is_reused_from_the_cache_by_a_new_process(tmp_path):
  """The CARFAC forward and adjoint inside one jitted gradient: written to JAX's persistent cache
  by one process, loaded (not compiled) by the next, with the same result."""
  runs = [subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True,
                         text=True, timeout=300) for _ in range(2)]
  for r in runs:
    assert r.returncode == 0, r.stderr[-3000:]
  (first, hits1), (second, hits2) = (r.stdout.split() for r in runs)
  assert list(tmp_path.glob("jit_carfac_probe-*")), "the program was not written to the cache"
  assert (hits1, hits2) == ("0", "1")
  assert first == second and float(first) > 0


def test_without_jaxlibs_ffi_headers_the_kernel_builds_without_the_handler(tmp_path, monkeypatch):
  monkeypatch.setenv("DAL_NATIVE_CACHE", str(tmp_path))
  monkeypatch.setattr(native, "_ffi_include", lambda: None)
  native.library.cache_clear()
  try:
    lib = native.library()
    assert lib is not None and hasattr(lib, "carfac_forward_f32")
    assert not hasattr(lib, "dal_host_call")  # so host_call.install(lib) would refuse it
  finally:
    monkeypatch.undo()
    native.library.cache_clear()
  assert hasattr(native.library(), "dal_host_call")
