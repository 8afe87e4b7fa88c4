"""Reading, writing, resampling and validating audio (wav, flac, ogg/vorbis) with soundfile.

Audio in dal_widgets is float32 numpy, shape (time,) for mono or (time, channels), digital units
calibrated by `dal_widgets.audio.calibration` (rms 1.0 = 100 dB SPL).
"""
import io as _io
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

from dal_widgets.atomic import write_atomic
from dal_widgets.errors import AudioError, ParameterError
from dal_widgets.finite import check_not_pcm

MIN_SR = 8000  # Hz; telephone band, the lowest rate CARFAC designs are meaningful at here
MAX_SR = 48000  # Hz; highest common audio rate (CARFAC designs exist up to 48 kHz, 84 channels)
MAX_SECONDS = 600.0  # default longest accepted sound; longer files are almost always a mistake
MAX_RESAMPLE_DENOMINATOR = 1000  # bounds up/down factors of resample_poly for irrational ratios
FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


def _check_max_seconds(max_seconds):
  if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float, np.integer,
                                                                   np.floating)) \
      or not max_seconds > 0:  # NaN fails too (it would turn the limit off)
    raise ParameterError(f"max_seconds: expected seconds > 0 (inf for no limit), "
                         f"got {max_seconds!r}")


def validate(x, sr, *, name="x", mono=True, max_seconds=MAX_SECONDS, full_scale_warning=True,
             silence_warning=True, _stacklevel=2):
  """Checks that `x` is usable audio at rate `sr` and returns it as float32 numpy.

  Args:
    x: Audio, shape (time,) (or (time, channels) when mono=False), digital units.
    sr: Sample rate in Hz, within [MIN_SR, MAX_SR].
    name: Name of the argument, used in messages.
    mono: If True only 1-D audio is accepted; else 1-D or 2-D (time, channels).
    max_seconds: Longest accepted duration in seconds.
    full_scale_warning: Warn about samples beyond +-1. False where the audio stays float (e.g. a
      calibrated sound processed in memory: rms 1.0 is 100 dB SPL, so loud sounds peak above 1).
    silence_warning: Warn about all-zero audio.

  Returns:
    `x` as a float32 numpy array of the same shape.

  Raises:
    ParameterError: wrong number of dimensions, integer PCM counts (e.g. int16 beyond +-1),
      `sr` out of range, or `max_seconds` not a number > 0.
    AudioError: empty, NaN/inf samples, or longer than `max_seconds`.

  Warns:
    UserWarning: samples beyond +-1 (they clip when written as PCM; unless full_scale_warning is
      False), or all-zero audio (unless silence_warning is False).
  """
  _check_max_seconds(max_seconds)
  x = np.asarray(x)
  allowed = (1,) if mono else (1, 2)
  if x.ndim not in allowed:
    want = "1-D (time,)" if mono else "1-D (time,) or 2-D (time, channels)"
    raise ParameterError(f"{name}: expected {want} audio, got shape {x.shape}")
  if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
    raise ParameterError(f"{name}: expected real numbers, got dtype {x.dtype}")
  check_not_pcm(x, name)
  if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)):
    raise ParameterError(f"sr: expected a number in Hz, got {sr!r}")
  if not MIN_SR <= sr <= MAX_SR:
    raise ParameterError(f"sr: expected {MIN_SR}..{MAX_SR} Hz, got {sr}")
  if x.size == 0:
    raise AudioError(f"{name}: audio is empty (shape {x.shape})")
  if x.ndim == 2 and x.shape[1] > x.shape[0]:
    raise ParameterError(f"{name}: shape {x.shape} has more channels than samples: expected "
                         f"(time, channels); transpose (channels, time) audio with x.T")
  if not np.all(np.isfinite(x)):
    raise AudioError(f"{name}: contains {np.count_nonzero(~np.isfinite(x))} NaN or inf samples")
  if x.dtype.kind == "f" and x.dtype.itemsize > 4:
    wide_peak = float(np.max(np.abs(x)))
    if wide_peak > float(np.finfo(np.float32).max):
      raise AudioError(f"{name}: holds samples beyond the float32 range (peak {wide_peak:.3g}); "
                       "digital units: rms 1.0 is 100 dB SPL")
  x = x.astype(np.float32, copy=False)
  peak = float(np.max(np.abs(x)))
  duration_s = x.shape[0] / sr
  if duration_s > max_seconds:
    raise AudioError(f"{name}: too long, {duration_s:.1f} s; at most {max_seconds:g} s (split "
                     "longer recordings)")
  if peak > 1.0 and full_scale_warning:
    warnings.warn(f"{name}: samples exceed +-1 (peak {peak:.3f}), the full scale of integer PCM: "
                  "kept here, but a 16-bit file would clip them", stacklevel=_stacklevel)
  elif peak == 0.0 and silence_warning:
    warnings.warn(f"{name}: audio is digital silence (all samples 0)", stacklevel=_stacklevel)
  return x


def resample(x, sr_in, sr_out):
  """Resamples along the time axis with a polyphase anti-aliasing filter.

  Args:
    x: Audio, shape (time,) or (time, channels).
    sr_in: Sample rate of `x` in Hz (> 0).
    sr_out: Wanted sample rate in Hz (> 0).

  Returns:
    float32 numpy array, shape (round(time * sr_out / sr_in), ...) up to rounding of the ratio.

  Raises:
    ParameterError: a rate that is not a positive number, or `x` that is not real 1-D or 2-D
      (time, channels) audio (more channels than samples: transpose (channels, time) with x.T).
    AudioError: NaN or inf samples.
  """
  for arg, value in (("sr_in", sr_in), ("sr_out", sr_out)):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
        or not np.isfinite(value) or value <= 0:
      raise ParameterError(f"{arg}: expected a positive sample rate in Hz, got {value!r}")
  x = np.asarray(x)
  if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] > x.shape[0]):
    raise ParameterError(f"x: expected 1-D (time,) or 2-D (time, channels) audio, got shape "
                         f"{x.shape}" + ("; transpose (channels, time) audio with x.T"
                                         if x.ndim == 2 else ""))
  if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
    raise ParameterError(f"x: expected real numbers, got dtype {x.dtype}")
  x = x.astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise AudioError(f"x: contains {np.count_nonzero(~np.isfinite(x))} NaN or inf samples")
  if sr_in == sr_out:
    return x.copy()
  if float(sr_in).is_integer() and float(sr_out).is_integer():
    ratio = Fraction(int(sr_out), int(sr_in))
  else:
    ratio = Fraction(sr_out / sr_in)
  ratio = ratio.limit_denominator(MAX_RESAMPLE_DENOMINATOR)
  if ratio.numerator == 0:
    raise ParameterError(f"sr_out: {sr_out} Hz is too far below sr_in = {sr_in} Hz to resample to")
  y = scipy.signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=0)
  return y.astype(np.float32)


def _check_whole_hz(sr, name="sr"):
  """Audio files store whole-Hz rates: a fractional one would be silently rounded."""
  if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)) \
      or not np.isfinite(sr) or float(sr) != int(sr):
    raise ParameterError(f"{name}: expected a whole number of Hz, got {sr!r}")


def _decode(source, label, *, sr, mono, max_seconds, warn=True):
  """Reads `source` (path or file object) with soundfile; `label` names it in errors; `warn` as
  in `from_bytes`."""
  if sr is not None:
    _check_whole_hz(sr)
  _check_max_seconds(max_seconds)
  try:
    info = sf.info(source)
    if info.frames / info.samplerate > max_seconds:
      raise AudioError(f"{label}: too long, {info.frames / info.samplerate:.2f} s; at most "
                       f"{max_seconds:g} s (split longer recordings)")
    if hasattr(source, "seek"):
      source.seek(0)
    x, file_sr = sf.read(source, dtype="float32", always_2d=True)
  except AudioError:
    raise
  except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as e:
    why = str(e).replace(repr(source), "the data")  # not "<_io.BytesIO object at 0x...>"
    raise AudioError(f"{label}: cannot read audio: {why}") from e
  if mono:
    x = x.mean(axis=1)  # average the channels
  if sr is None and not MIN_SR <= file_sr <= MAX_SR:
    raise ParameterError(f"{label}: sample rate {file_sr} Hz is outside {MIN_SR}..{MAX_SR} Hz; "
                         f"pass sr=... to resample while loading")
  if sr is not None and sr != file_sr:
    x = resample(x, file_sr, sr)
    file_sr = sr
  x = validate(x, file_sr, name=label, mono=mono, max_seconds=max_seconds,
               full_scale_warning=warn, silence_warning=warn, _stacklevel=4)
  return x, int(file_sr)


def load(path, *, sr=None, mono=True, max_seconds=MAX_SECONDS):
  """Reads an audio file (wav, flac, ogg, or anything libsndfile reads).

  Args:
    path: File path (str or Path).
    sr: If given, resample to this rate in Hz; None keeps the file's rate.
    mono: If True, average the channels and return shape (time,); else (time, channels).
    max_seconds: Longest accepted duration in seconds (checked before decoding).

  Returns:
    (x, sr): float32 audio and its sample rate in Hz.

  Raises:
    AudioError: the file is missing, unreadable, empty, non-finite or too long.
    ParameterError: `path` not a str or Path, or the (resulting) sample rate is outside
      MIN_SR..MAX_SR.
  """
  if not isinstance(path, (str, Path)):  # os.PathLike: any pathlib path is a Path
    raise ParameterError(f"path: expected a file path (str or Path), got {type(path).__name__}")
  path = Path(path)
  if not path.exists():
    raise AudioError(f"{path}: cannot read audio: file not found")
  if path.is_dir():
    raise AudioError(f"{path}: cannot read audio: is a folder, not a file")
  return _decode(str(path), str(path), sr=sr, mono=mono, max_seconds=max_seconds)


def from_bytes(data, *, sr=None, mono=True, max_seconds=MAX_SECONDS, name=None, warn=True):
  """Decodes an encoded sound held in memory (e.g. a browser upload).

  Args:
    data: The encoded file contents (bytes).
    sr, mono, max_seconds: As for `load`.
    name: What errors call the data (e.g. the uploaded file's name); default its size.
    warn: Warn about digital silence and samples beyond +-1 (as `validate`). False for callers
      that check those themselves (an app's upload, which must not swap the process's warning
      filters to hide them: see dal_widgets/caught_warnings.py).

  Returns:
    (x, sr): float32 audio and its sample rate in Hz.

  Raises:
    AudioError: the bytes are empty or not a readable sound.
  """
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise ParameterError(f"data: expected bytes, got {type(data).__name__}")
  if len(data) == 0:
    raise AudioError("data: cannot read audio: no bytes")
  label = str(name) if name else f"uploaded audio ({len(data)} bytes)"
  return _decode(_io.BytesIO(bytes(data)), label, sr=sr, mono=mono, max_seconds=max_seconds,
                 warn=warn)


def save(path, x, sr, *, subtype=None):
  """Writes audio atomically: to a temporary file in the same folder, then renamed over `path`.

  A reader never sees a half-written file, and a failed write leaves the old file intact.

  Args:
    path: Destination; the suffix picks the format (.wav PCM_16, .flac PCM_16, .ogg Vorbis).
    x: Audio, shape (time,) or (time, channels), digital units (|x| <= 1 to avoid clipping).
    sr: Sample rate in Hz.
    subtype: Optional soundfile subtype overriding the default of the format (e.g. "FLOAT").

  Raises:
    ParameterError: unknown suffix, or invalid audio shape / rate.
    AudioError: invalid samples, or the file cannot be written.
  """
  path = Path(path)
  suffix = path.suffix.lower()
  if suffix not in FORMATS:
    raise ParameterError(f"path: expected a suffix in {sorted(FORMATS)}, got {path.name!r}")
  x = validate(x, sr, mono=False, max_seconds=float("inf"), _stacklevel=3)
  _check_whole_hz(sr)
  file_format, default_subtype = FORMATS[suffix]
  if not path.parent.is_dir():
    raise AudioError(f"{path}: cannot write audio: folder {path.parent} does not exist")
  encode = lambda f: sf.write(f, x, int(sr), format=file_format,
                              subtype=subtype or default_subtype)
  try:
    write_atomic(path, encode)
  except OSError as e:
    raise AudioError(f"{path}: cannot write audio: {e.strerror or e}") from e
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
    raise AudioError(f"{path}: cannot write audio: {e}") from e


def to_wav_bytes(x, sr):
  """Encodes audio as a 16-bit PCM wav file in memory (e.g. for `ipywidgets.Audio`).

  Args:
    x: Audio, shape (time,) or (time, channels), digital units. Samples beyond +-1 are clipped,
      with a warning.
    sr: Sample rate in Hz.

  Returns:
    The bytes of a wav file.
  """
  x = validate(x, sr, mono=False, max_seconds=float("inf"), _stacklevel=3)
  _check_whole_hz(sr)
  buffer = _io.BytesIO()
  sf.write(buffer, np.clip(x, -1.0, 1.0), int(sr), format="WAV", subtype="PCM_16")
  return buffer.getvalue()
