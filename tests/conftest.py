"""Shared test fixtures: the CARFAC golden files (../shared/golden, see its README)."""
import importlib.util
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN_DIR = pathlib.Path(os.environ.get("DAL_GOLDEN_DIR", REPO.parent / "shared" / "golden"))


def _golden_io():
  path = GOLDEN_DIR / "golden_io.py"
  if not path.exists():
    raise FileNotFoundError(f"golden files not found in {GOLDEN_DIR}; set DAL_GOLDEN_DIR")
  spec = importlib.util.spec_from_file_location("golden_io", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="session")
def load_golden():
  """load_golden(name) -> dict of decoded golden arrays (cached per session)."""
  golden_io = _golden_io()
  cache = {}
  def load(name):
    if name not in cache:
      cache[name] = golden_io.load(str(GOLDEN_DIR / name))
    return cache[name]
  return load
