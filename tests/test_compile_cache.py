"""compile_cache: JAX's persistent compilation cache for the apps and the CLI."""
import contextlib
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from dal_widgets import compile_cache


@contextlib.contextmanager
def no_cache_configured():
  before = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", None)
  try:
    yield
  finally:
    jax.config.update("jax_compilation_cache_dir", before)


def test_the_cache_is_switched_on_once_and_never_over_a_configured_one(tmp_path):
  assert not compile_cache.enable("")
  with no_cache_configured():
    assert compile_cache.enable(str(tmp_path / "cache"))
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
    assert jax.config.jax_compilation_cache_max_size == compile_cache.MAX_BYTES
    assert not compile_cache.enable(str(tmp_path / "other"))


def test_a_folder_that_cannot_be_made_warns_and_leaves_the_cache_off(tmp_path):
  (tmp_path / "a_file").write_text("")
  with no_cache_configured():
    with pytest.warns(RuntimeWarning, match="DAL_JAX_CACHE_DIR: cannot use .*not kept"):
      assert not compile_cache.enable(str(tmp_path / "a_file" / "cache"))
    assert jax.config.jax_compilation_cache_dir is None


def test_the_folder_comes_from_the_environment():
  default = compile_cache.default_folder()
  assert default.parent == compile_cache.DEFAULT_DIR and default == compile_cache.default_folder()
  assert compile_cache.folder({}) == str(default)
  assert compile_cache.folder({"DAL_JAX_CACHE_DIR": "/x"}) == "/x"
  assert compile_cache.folder({"DAL_JAX_CACHE_DIR": ""}) == ""


def test_the_command_line_keeps_compiled_programs_in_the_folder_it_is_given(tmp_path):
  sf.write(tmp_path / "tone.wav", 0.01 * np.sin(np.arange(1600) * 0.3), 16000)
  probe = ("import sys, jax; from dal_widgets import cli; "
           "code = cli.main(['cochleagram', sys.argv[1], '--out', sys.argv[2]]); "
           "print(code, jax.config.jax_compilation_cache_dir)")
  for folder, shown in [(tmp_path / "cache", str(tmp_path / "cache")), ("", "None")]:
    env = {**os.environ, "DAL_JAX_CACHE_DIR": str(folder)}
    r = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "tone.wav"),
                        str(tmp_path / "nap.npz")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.stdout.split()[-2:] == ["0", shown], r.stderr[-2000:]
