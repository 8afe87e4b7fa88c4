"""Training checkpoints: params + optimizer state + step + config, msgpack, written atomically.

A checkpoint is one file `ckpt_<step>.msgpack` in the work folder: a msgpack envelope holding a
format tag, the sha256 of the body and the body (flax.serialization msgpack of the train state,
the step and the TrainConfig as JSON). The file is written to a temporary name in the same folder,
flushed to disk and renamed over the final name (os.replace is atomic), so a crash never leaves a
half-written checkpoint under a real name. Only then is the marker `latest.json` (the last good
checkpoint) rewritten the same way; older checkpoints beyond `keep` are then removed. Beside them,
`history.csv` holds the metrics of every step of the run, across resumes (write_history).

We use msgpack + atomic rename rather than orbax: one host, params of a few MB, no extra deps.
"""
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
from flax import serialization

from dal_widgets.atomic import write_atomic, write_text_atomic
from dal_widgets.errors import DalError, ParameterError
from dal_widgets.loop.config import TrainConfig

FORMAT = "dal-checkpoint"
VERSION = 2  # 2: the SEANet options checkerboard_free and dc_block (aid/seanet.py)
# Version-1 aids were trained before those options existed: they read back with both off, as the
# network they were trained as.
LEGACY_SEANET = {1: dict(checkerboard_free=False, dc_block=False)}
MARKER = "latest.json"  # names the last checkpoint written completely
HISTORY = "history.csv"  # the run's metrics, one row per step, rewritten before each checkpoint
PATTERN = re.compile(r"^ckpt_(\d{8})\.msgpack$")
KEEP = 3  # checkpoints kept in a work folder (the newest)


class CheckpointError(DalError):
  """A checkpoint that is missing, truncated, corrupt or not a DAL checkpoint."""


class _Corrupt(CheckpointError):
  """A checkpoint file whose bytes do not decode or do not match their checksum."""


class Checkpoint(NamedTuple):
  """A restored checkpoint.

  Attributes:
    state: The train state: a TrainState when restored with a target, else nested dicts of numpy
      arrays ({"params", "opt_state", "step"}).
    config: The TrainConfig of the run.
    step: The optimizer step it was saved at.
    path: The file.
  """
  state: Any
  config: TrainConfig
  step: int
  path: Path


def _as_path(value, name) -> Path:
  """`value` as a Path, or ParameterError naming the argument (not a TypeError from pathlib)."""
  if not isinstance(value, (str, os.PathLike)):
    raise ParameterError(f"{name}: expected a folder or file path (str or Path), got "
                         f"{type(value).__name__}")
  return Path(value)


def checkpoint_path(workdir, step: int) -> Path:
  """Path of the checkpoint of `step` in `workdir`."""
  return Path(workdir) / f"ckpt_{int(step):08d}.msgpack"


def check_writable(workdir) -> Path:
  """Creates `workdir` if needed and checks that files can be written in it (before a long run).

  Raises:
    ParameterError: the folder cannot be created or written (a file in the way, no permission).
  """
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ParameterError(f"workdir: {str(workdir)!r} is a file, not a folder for checkpoints")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=workdir, prefix=".write-check.", suffix=".tmp")
    os.close(fd)
    os.remove(probe)
  except OSError as err:
    raise ParameterError(f"workdir: cannot write checkpoints in {str(workdir)!r}: "
                         f"{err.strerror or err}") from err
  return workdir


def save(workdir, state, config: TrainConfig, *, keep: int = KEEP) -> Path:
  """Saves a train state and its config as the newest checkpoint of `workdir`.

  Args:
    workdir: Folder (created if missing).
    state: A TrainState (or any pytree with `params`, `opt_state` and `step`).
    config: The TrainConfig of the run (stored as JSON).
    keep: How many of the newest checkpoints to keep (>= 1).

  Returns:
    Path of the file written.

  Raises:
    ParameterError: bad workdir, state, config or keep.
    CheckpointError: the file cannot be written (no permission, disk full, ...).
  """
  workdir = _as_path(workdir, "workdir")
  missing = [field for field in ("params", "opt_state", "step") if not hasattr(state, field)]
  if missing:
    raise ParameterError(f"state: expected a TrainState (with params, opt_state and step), got "
                         f"{type(state).__name__} without {', '.join(missing)}")
  if not isinstance(config, TrainConfig):
    raise ParameterError(f"config: expected a TrainConfig, got {type(config).__name__}")
  if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
    raise ParameterError(f"keep: expected an int >= 1, got {keep!r}")
  step = int(jax.device_get(state.step))
  envelope = encode(serialization.to_state_dict(jax.device_get(state)), step, config)
  path = checkpoint_path(workdir, step)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(envelope))
    write_text_atomic(workdir / MARKER, json.dumps({"file": path.name, "step": step}))
  except OSError as err:
    raise CheckpointError(f"{path}: cannot write the checkpoint: {err.strerror or err}") from err
  for old in _checkpoints(workdir)[:-keep]:
    if old != path:  # a restarted run may save a lower step than older files: keep the newest
      old.unlink(missing_ok=True)
  return path


def set_aside(workdir) -> Path | None:
  """Moves the checkpoints of `workdir` (and its marker) into a new subfolder
  `replaced_<UTC time>`, so that a fresh run there neither mixes its checkpoints with an earlier
  run's nor deletes them. Returns that folder, or None when there was nothing to move.

  Raises:
    CheckpointError: the files cannot be moved.
  """
  workdir = Path(workdir)
  found = _checkpoints(workdir)
  if not found:
    return None
  stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
  aside = workdir / f"replaced_{stamp}"
  n = 1
  while aside.exists():
    n += 1
    aside = workdir / f"replaced_{stamp}_{n}"
  try:
    aside.mkdir()
    for path in found + [p for p in (workdir / MARKER, workdir / HISTORY) if p.exists()]:
      path.rename(aside / path.name)
  except OSError as err:
    raise CheckpointError(f"{workdir}: cannot move the earlier checkpoints aside: "
                          f"{err.strerror or err}") from err
  return aside


def write_history(workdir, rows) -> Path:
  """Writes the metrics of a run's steps (dicts with a "step", as TrainResult.history) to
  `workdir`/HISTORY, atomically. Training writes it just before each checkpoint, so that it never
  lacks a step of the checkpoint; rows past the checkpoint are dropped on resume (read_history).

  Raises:
    OSError: the file cannot be written.
  """
  columns = list(dict.fromkeys(key for row in rows for key in ["step", *row]))
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  return write_text_atomic(Path(workdir) / HISTORY, buffer.getvalue())


def read_history(workdir, last_step: int) -> list:
  """The rows of `workdir`/HISTORY up to `last_step` (the checkpoint a run resumes), as dicts
  ("step" an int, "finite" a bool, the rest floats); [] when there is no such file, and with a
  warning when it cannot be read."""
  path = Path(workdir) / HISTORY
  if not path.is_file():
    return []
  parse = {"step": int, "finite": lambda v: v == "True"}
  try:
    with open(path, encoding="utf-8", newline="") as f:
      rows = [{k: parse.get(k, float)(v) for k, v in row.items() if v not in ("", None)}
              for row in csv.DictReader(f)]
  except (OSError, ValueError, TypeError) as err:
    warnings.warn(f"{path}: unreadable ({err}); the history of the steps before this run is "
                  "not kept", stacklevel=2)
    return []
  return [row for row in rows if row.get("step", last_step + 1) <= last_step]


def encode(state: dict, step: int, config: TrainConfig) -> bytes:
  """The bytes of a checkpoint file (what `save` writes) of a state dict of host arrays."""
  body = serialization.msgpack_serialize({"state": state, "step": int(step),
                                          "config": json.dumps(config.to_dict())})
  return serialization.msgpack_serialize({
      "format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(body).hexdigest(),
      "body": body})


def aid_bytes(params, config: TrainConfig, step: int) -> bytes:
  """A checkpoint file of a trained aid's parameters alone (no optimizer state), e.g. for a
  download from a widget: `dal enhance` and `dal evaluate` read it; `dal train` cannot resume it.

  Raises:
    ParameterError: config is not a TrainConfig.
  """
  if not isinstance(config, TrainConfig):
    raise ParameterError(f"config: expected a TrainConfig, got {type(config).__name__}")
  params = serialization.to_state_dict(jax.device_get(params))
  return encode({"params": params, "opt_state": {}, "step": int(step)}, step, config)


def _checkpoints(workdir: Path) -> list:
  """Checkpoint files of `workdir`, oldest step first."""
  found = [p for p in workdir.iterdir() if PATTERN.match(p.name)] if workdir.is_dir() else []
  return sorted(found, key=lambda p: int(PATTERN.match(p.name).group(1)))


def latest(workdir) -> Path | None:
  """The last good checkpoint of `workdir`, or None when it has none (or does not exist).

  Reads the marker; if the marker is missing, unreadable or names a missing file, falls back to
  the checkpoint file with the highest step (with a warning when the marker was bad).

  Raises:
    ParameterError: workdir not a str or Path.
  """
  workdir = _as_path(workdir, "workdir")
  if not workdir.is_dir():
    return None
  marker = workdir / MARKER
  if marker.exists():
    try:
      name = json.loads(marker.read_text())["file"]
      path = workdir / name
      if PATTERN.match(name) and path.is_file():  # a bare file name: never outside workdir
        return path
      problem = f"names {name!r}, which is not a checkpoint file of this folder"
    except (OSError, ValueError, KeyError, TypeError) as err:
      problem = f"is unreadable ({err})"
    warnings.warn(f"{marker} {problem}; using the newest checkpoint file instead", stacklevel=2)
  found = _checkpoints(workdir)
  return found[-1] if found else None


def _read(path) -> dict:
  """The contents of a checkpoint file, or of a folder's newest readable one: a corrupt newest
  file (damaged outside this code, which writes atomically) gives way to the one before it, with
  a warning, so that no run is lost to one bad file."""
  path = _as_path(path, "path")
  if not path.is_dir():
    return _read_file(path)
  found = latest(path)
  if found is None:
    raise CheckpointError(f"path: no checkpoint in the folder {str(path)!r}")
  older = [p for p in reversed(_checkpoints(path)) if p != found]
  skipped = []
  for candidate in [found, *older]:
    try:
      contents = _read_file(candidate)
    except _Corrupt as err:
      skipped.append(err)
      continue
    if skipped:
      warnings.warn(f"{'; '.join(map(str, skipped))}; using {candidate.name} instead (delete the "
                    "bad file, or start afresh with `dal train --fresh`)", stacklevel=3)
    return contents
  raise skipped[0]


def _read_file(path) -> dict:
  if not path.is_file():
    raise CheckpointError(f"path: checkpoint {str(path)!r} does not exist")
  try:
    envelope = serialization.msgpack_restore(path.read_bytes())
  except Exception as err:  # garbage can fail msgpack decoding in many ways; all mean "corrupt"
    problem = f"{path}: not a readable checkpoint (truncated or corrupt: {err})"
    raise _Corrupt(problem) from err
  if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
    raise CheckpointError(f"{path}: not a DAL checkpoint (no {FORMAT!r} header)")
  version = envelope.get("version")
  if version != VERSION and version not in LEGACY_SEANET:
    raise CheckpointError(f"{path}: checkpoint version {version!r}, this code reads versions "
                          f"{sorted({VERSION, *LEGACY_SEANET})}")
  body = envelope.get("body")
  if not isinstance(body, bytes) or hashlib.sha256(body).hexdigest() != envelope.get("sha256"):
    raise _Corrupt(f"{path}: checksum mismatch: the checkpoint is corrupt")
  contents = serialization.msgpack_restore(body)
  if not isinstance(contents, dict) or not {"state", "step", "config"} <= contents.keys():
    raise CheckpointError(f"{path}: the checkpoint lacks its state, step or config")
  return dict(contents, path=path, version=version)


def restore(path, target=None) -> Checkpoint:
  """Reads a checkpoint.

  Args:
    path: A checkpoint file, or a work folder (its `latest` checkpoint).
    target: Optional template train state (e.g. `train.create_train_state(...)`); when given the
      state is restored into its structure (TrainState, optax states), else as nested dicts.

  Returns:
    Checkpoint(state, config, step, path).

  Raises:
    ParameterError: path not a str or Path.
    CheckpointError: missing, truncated, corrupt or foreign file, or a target of another shape.
  """
  contents = _read(path)
  try:
    config = TrainConfig.from_dict(json.loads(contents["config"]))
    if contents["version"] in LEGACY_SEANET:
      legacy = LEGACY_SEANET[contents["version"]]
      config = config.replace(model=dataclasses.replace(config.model_config, **legacy))
  except (ValueError, TypeError, KeyError) as err:  # ParameterError is a ValueError
    raise CheckpointError(f"{contents['path']}: its training config is unreadable ({err})") from err
  state = contents["state"]
  if target is not None:
    try:
      state = serialization.from_state_dict(target, state)
    except (ValueError, KeyError, TypeError) as err:
      raise CheckpointError(f"{contents['path']}: does not fit the target state ({err})") from err
    mismatched = [
        jax.tree_util.keystr(k) for (k, a), b in zip(
            jax.tree_util.tree_flatten_with_path(target)[0], jax.tree_util.tree_leaves(state))
        if getattr(a, "shape", None) != getattr(b, "shape", None)]
    if mismatched:
      raise CheckpointError(f"{contents['path']}: array shapes differ from the target at "
                            f"{mismatched[:3]} (another model size?)")
  return Checkpoint(state=state, config=config, step=int(contents["step"]), path=contents["path"])


def restore_params(path):
  """(params, TrainConfig, step) of a checkpoint file or of a work folder's latest checkpoint.

  Raises:
    ParameterError, CheckpointError: as `restore`.
  """
  ckpt = restore(path)
  return ckpt.state["params"], ckpt.config, ckpt.step
