"""The Binder (repo2docker) configuration in binder/ agrees with pyproject.toml and the repository."""
import os
import pathlib
import re
import tomllib

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian package name syntax (Debian Policy 5.6.1)
VOILA_APP = ROOT / "apps" / "hearing_aid_lab.ipynb"  # the app the README's Binder link opens


def _pyproject() -> dict:
  with open(ROOT / "pyproject.toml", "rb") as f:
    return tomllib.load(f)


def _lines(path: pathlib.Path) -> list:
  """Non-empty lines of a file with comments removed."""
  lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
  return [line for line in lines if line]


def _by_name(requirements) -> dict:
  """{canonical name: (sorted extras, specifier set, marker text)} of parsed requirements."""
  out = {}
  for req in requirements:
    key = canonicalize_name(req.name)
    if key in out:
      raise AssertionError(f"{req.name} is listed twice")
    out[key] = (sorted(req.extras), req.specifier, str(req.marker or ""))
  return out


def binder_requirements() -> list:
  parsed = []
  for line in _lines(BINDER / "requirements.txt"):
    try:
      parsed.append(Requirement(line))
    except InvalidRequirement as err:  # e.g. "-e ." or a URL: not a plain dependency
      raise AssertionError(f"binder/requirements.txt: {line!r} is not a plain requirement ({err})")
  return parsed


def test_binder_requirements_equal_pyproject_dependencies():
  declared = _by_name(Requirement(dep) for dep in _pyproject()["project"]["dependencies"])
  binder = _by_name(binder_requirements())
  assert sorted(binder) == sorted(declared), (
      f"only in binder: {sorted(set(binder) - set(declared))}; "
      f"only in pyproject: {sorted(set(declared) - set(binder))}")
  for name, (extras, specifier, marker) in declared.items():
    assert binder[name] == (extras, specifier, marker), (
        f"{name}: binder has {binder[name]}, pyproject has {(extras, specifier, marker)}")


def test_binder_requirements_leave_the_package_to_postbuild():
  # A local reference ("." or "-e .") would make repo2docker copy the whole repository before
  # installing, so every edit would rebuild the dependency layer; postBuild installs the package.
  names = {canonicalize_name(req.name) for req in binder_requirements()}
  assert canonicalize_name(_pyproject()["project"]["name"]) not in names


def test_runtime_is_a_python_the_package_supports():
  lines = _lines(BINDER / "runtime.txt")
  assert len(lines) == 1 and re.fullmatch(r"python-3\.\d+", lines[0]), lines
  version = Version(lines[0].removeprefix("python-"))
  assert version in SpecifierSet(_pyproject()["project"]["requires-python"])


def test_postbuild_installs_the_package_without_dependencies():
  post_build = BINDER / "postBuild"
  assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
  text = post_build.read_text(encoding="utf-8")
  assert text.startswith("#!/bin/bash\n")
  assert "set -euo pipefail" in text
  commands = [line for line in _lines(post_build) if "pip install" in line]
  assert len(commands) == 1
  assert "--no-deps" in commands[0].split() and commands[0].split()[-2:] == ["-e", "."]


def test_apt_packages_are_package_names():
  packages = _lines(BINDER / "apt.txt")
  assert packages, "apt.txt lists no package"
  assert [p for p in packages if not APT_NAME.match(p)] == []


@pytest.mark.parametrize("path", [VOILA_APP, ROOT / "notebooks" / "01_cochlea_filter_cascade.ipynb"])
def test_binder_link_targets_exist(path):
  assert path.is_file(), f"the README's Binder links open {path.relative_to(ROOT)}"
