"""The speech clips shipped with the package (dal_widgets/data/clips; see its README.md).

Twelve Harvard sentences spoken by four flite voices, 16 kHz, 65 dB SPL rms, made by
scripts/make_clips.py.
"""
import dataclasses
import functools
import importlib.resources
import json

from dal_widgets.audio import io
from dal_widgets.errors import ParameterError

DEFAULT_SR = 16000  # Hz; rate the clips are stored at (CARFAC has 65 channels at 16 kHz)
CLIPS_INDEX = "clips.json"


@dataclasses.dataclass(frozen=True)
class ClipInfo:
  """One bundled clip.

  Attributes:
    name: Short name to pass to `load_clip`, e.g. "slt_04".
    file: File name inside the package data folder.
    voice: flite voice that spoke it.
    text: The sentence.
    duration_s: Duration in seconds.
  """
  name: str
  file: str
  voice: str
  text: str
  duration_s: float


def _clips_folder():
  return importlib.resources.files("dal_widgets") / "data" / "clips"


@functools.cache
def _index():
  index = json.loads((_clips_folder() / CLIPS_INDEX).read_text(encoding="utf-8"))
  return tuple(ClipInfo(name=entry["file"].rsplit(".", 1)[0], file=entry["file"], voice=entry["voice"],
                        text=entry["text"], duration_s=float(entry["duration_s"]))
               for entry in index["clips"])


def list_clips():
  """All bundled clips, in the order of clips.json.

  Returns:
    List of ClipInfo (a fresh list on every call).
  """
  return list(_index())


def load_clip(name, *, sr=DEFAULT_SR):
  """Loads a bundled clip.

  Args:
    name: Clip name ("slt_04") or file name ("slt_04.flac"); see `list_clips()`.
    sr: Wanted sample rate in Hz (resampled from 16 kHz when different).

  Returns:
    (x, sr): float32 audio, shape (time,), at 65 dB SPL rms, and its sample rate in Hz.

  Raises:
    ParameterError: unknown clip name.
  """
  by_name = {clip.name: clip for clip in list_clips()}
  by_name.update({clip.file: clip for clip in list_clips()})
  if name not in by_name:
    raise ParameterError(f"name: expected one of {sorted(c.name for c in list_clips())}, got {name!r}")
  with importlib.resources.as_file(_clips_folder() / by_name[name].file) as path:
    return io.load(path, sr=sr)
