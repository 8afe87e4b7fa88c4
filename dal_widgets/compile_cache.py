"""JAX's persistent compilation cache for the apps and the `dal` command line.

Compiled programs are kept in a folder, so that a new process loads them instead of compiling
them again: a fine-tune step takes about 13 s to compile on a 2-core CPU and under 1 s to load.
Programs that run the CARFAC CPU kernel are cacheable through cochlea/host_call.py.
"""
import hashlib
import os
import warnings
from pathlib import Path

import jax
import jaxlib.version

from dal_widgets import cpu_cores

DEFAULT_DIR = Path.home() / ".cache" / "dal_widgets" / "jax"
ENV_VAR = "DAL_JAX_CACHE_DIR"  # a folder; "" turns the cache off
# Cache every program that took this long to compile. The hearing-aid lab compiles 44 programs
# at load, 4 of them between 0.1 and 0.5 s (SAI, NAL-R response, CARFAC); keeping those too brings
# its load with a warm cache from 6.4-7.2 to 4.7-4.9 s (10 entries, 0.26 MB; bench/RESULTS.md).
MIN_COMPILE_S = 0.1
# JAX drops the least recently used programs beyond this; a fine-tune step takes 0.7 MB, a session
# of the hearing-aid lab about 1 MB in all (bench/RESULTS.md).
MAX_BYTES = 1 << 30


def default_folder() -> Path:
  """DEFAULT_DIR/<this CPU and jaxlib>: XLA:CPU compiles for the CPU it runs on, so a home folder
  shared by machines of other CPUs (a cluster) gets one cache per CPU type, and an upgraded jaxlib
  starts a new one."""
  key = hashlib.sha256(f"{cpu_cores.cpu_signature()}\0{jaxlib.version.__version__}".encode())
  return DEFAULT_DIR / key.hexdigest()[:16]


def folder(environ=None) -> str:
  """The cache folder `ENV_VAR` names, default_folder() when unset, "" when turned off."""
  environ = os.environ if environ is None else environ
  return environ[ENV_VAR] if ENV_VAR in environ else str(default_folder())


def enable(cache_dir: str) -> bool:
  """Keeps JAX's compiled programs in `cache_dir` unless a cache is already configured.

  Returns:
    True if this call turned the cache on (False, with a warning, when the folder cannot be
    made).
  """
  if not cache_dir or jax.config.jax_compilation_cache_dir:
    return False
  try:
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
  except OSError as err:  # a read-only home: everything still works, only compiles again
    warnings.warn(f"{ENV_VAR}: cannot use {cache_dir!r} ({err.strerror or err}); compiled "
                  f"programs are not kept", RuntimeWarning, stacklevel=2)
    return False
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return True
