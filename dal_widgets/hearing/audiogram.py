"""The pure-tone audiogram of one ear, and the one place where dB HL and dB SPL meet.

An audiogram lists hearing thresholds in dB HL (dB re the average threshold of young normal-hearing
listeners) at audiometric frequencies. Signals in dal_widgets are in dB SPL (see
`dal_widgets.audio.calibration`); `hl_to_spl` / `spl_to_hl` below are the only conversion between
the two scales for *human* thresholds (the listening simulator uses it). The CARFAC models do not
use it: simulated audiometry (`hearing.audiometry`) measures a model ear's thresholds in dB SPL
and expresses them in dB HL re the healthy *model's* own thresholds (13 dB SPL at 1 kHz, 60 dB SPL
at 6 kHz for the 16 kHz v3 model), so a fitted loss is a threshold shift of the model, not an
absolute level.

Reference zero: ISO 389-7:2005, reference threshold of hearing under *free-field* listening
conditions (frontal incidence, binaural listening, SPL measured at the position of the centre of the
listener's head with the listener absent). Why this one and not an earphone RETSPL (ISO 389-1 /
ANSI S3.6 for TDH-39, ISO 389-8 for HDA 200): our signals stand for the sound *in the room* that a
listener hears, and our cochlea models have no head, pinna, earphone or coupler. A dB HL value is by
definition transducer-independent (0 dB HL = the normal threshold), so the SPL of a room sound at a
listener's threshold is the free-field reference plus the listener's dB HL. Earphone RETSPLs are
coupler levels (e.g. TDH-39 in an NBS-9A coupler) that never occur in our signal path.
"""
import dataclasses
import math

import numpy as np

from dal_widgets.errors import ParameterError

MIN_FREQ_HZ = 125.0  # lowest standard audiometric frequency (ISO 8253-1)
MAX_FREQ_HZ = 8000.0  # highest frequency of conventional audiometry (ISO 8253-1)
MIN_THRESHOLD_DB_HL = -10.0  # audiometers start at -10 dB HL
MAX_THRESHOLD_DB_HL = 120.0  # audiometer limit; beyond this a threshold is "no response"
EARS = ("left", "right")
DEFAULT_EAR = "right"  # audiologists test the better (often right) ear first; any choice would do
PTA_FREQS_HZ = (500.0, 1000.0, 2000.0, 4000.0)  # 4-frequency pure-tone average (WHO 2021 grades)
AGREE_TOL_DB = 0.5  # thresholds closer than this are one listener's: audiometry steps in 5 dB
MAX_NAME_CHARS = 200  # a label shown in titles and file names, not a document
# Most test frequencies: the one-third-octave grid from 125 Hz to 8 kHz, finer than audiometry's
# octaves and half-octaves (ISO 8253-1); each point costs a simulated audiometry when fitted.
MAX_POINTS = 19

# ISO 389-7:2005 free-field reference threshold of hearing, dB SPL, 125 Hz..8 kHz: the
# one-third-octave frequencies (the same numbers as the threshold T_f of ISO 226:2003) and the
# intermediate audiometric frequencies 750, 1500, 3000 and 6000 Hz, which ISO 389-7 tabulates
# itself (ISO 226 does not; log-frequency interpolation of the one-third-octave values misses them
# by up to 0.23 dB). Other frequencies are interpolated linearly in log-frequency.
RETSPL_FREQS_HZ = (125.0, 160.0, 200.0, 250.0, 315.0, 400.0, 500.0, 630.0, 750.0, 800.0, 1000.0,
                   1250.0, 1500.0, 1600.0, 2000.0, 2500.0, 3000.0, 3150.0, 4000.0, 5000.0, 6000.0,
                   6300.0, 8000.0)
RETSPL_DB_SPL = (22.1, 17.9, 14.4, 11.4, 8.6, 6.2, 4.4, 3.0, 2.4, 2.2, 2.4,
                 3.5, 2.4, 1.7, -1.3, -4.2, -5.8, -6.0, -5.4, -1.5, 4.3,
                 6.0, 12.6)


def _as_float_array(values, name):
  """`values` as a float64 array, or ParameterError naming `name`."""
  try:
    arr = np.asarray(values, dtype=np.float64)
  except (TypeError, ValueError) as err:
    raise ParameterError(f"{name}: expected numbers, got {values!r}") from err
  return arr


def _reference_and_levels(freqs_hz, levels, name):
  """(reference threshold at freqs_hz, levels as float64), checked: finite, shapes broadcast."""
  levels = _as_float_array(levels, name)
  if not np.all(np.isfinite(levels)):
    raise ParameterError(f"{name}: expected finite levels, got {levels}")
  reference = reference_threshold_db_spl(freqs_hz)
  try:
    np.broadcast_shapes(reference.shape, levels.shape)
  except ValueError:
    raise ParameterError(f"freqs_hz, {name}: shapes {reference.shape} and {levels.shape} "
                         "do not broadcast") from None
  return reference, levels


def _log_interp(freqs_hz, table_freqs_hz, table_values):
  """Linear interpolation in log-frequency; flat beyond the ends of the table."""
  log_f = np.log(np.clip(freqs_hz, table_freqs_hz[0], table_freqs_hz[-1]))
  return np.asarray(np.interp(log_f, np.log(np.asarray(table_freqs_hz)), np.asarray(table_values)))


def _check_audiometric_freqs(freqs_hz, name):
  if not np.all(np.isfinite(freqs_hz)):
    raise ParameterError(f"{name}: expected finite frequencies in Hz, got {freqs_hz}")
  if np.any((freqs_hz < MIN_FREQ_HZ) | (freqs_hz > MAX_FREQ_HZ)):
    raise ParameterError(
        f"{name}: expected frequencies within {MIN_FREQ_HZ:g}..{MAX_FREQ_HZ:g} Hz, got {freqs_hz}")


def reference_threshold_db_spl(freqs_hz):
  """Free-field reference threshold of hearing (0 dB HL) in dB SPL, ISO 389-7:2005.

  Args:
    freqs_hz: Frequencies in Hz within 125..8000, any shape.

  Returns:
    float64 array of the same shape, dB SPL.

  Raises:
    ParameterError: if a frequency is not finite or outside 125..8000 Hz.
  """
  freqs_hz = _as_float_array(freqs_hz, "freqs_hz")
  _check_audiometric_freqs(freqs_hz, "freqs_hz")
  return _log_interp(freqs_hz, RETSPL_FREQS_HZ, RETSPL_DB_SPL)


def hl_to_spl(freqs_hz, db_hl):
  """Converts hearing level (dB HL) to free-field sound pressure level (dB SPL).

  Args:
    freqs_hz: Frequencies in Hz within 125..8000 (broadcast against `db_hl`).
    db_hl: Levels in dB HL.

  Returns:
    float64 array (broadcast shape), dB SPL: `db_hl` + ISO 389-7:2005 reference threshold.

  Raises:
    ParameterError: if a frequency is out of range or a value is not finite.
  """
  reference, db_hl = _reference_and_levels(freqs_hz, db_hl, "db_hl")
  return reference + db_hl


def spl_to_hl(freqs_hz, db_spl):
  """Converts free-field sound pressure level (dB SPL) to hearing level (dB HL); see `hl_to_spl`.

  Args:
    freqs_hz: Frequencies in Hz within 125..8000 (broadcast against `db_spl`).
    db_spl: Levels in dB SPL.

  Returns:
    float64 array (broadcast shape), dB HL.

  Raises:
    ParameterError: if a frequency is out of range or a value is not finite.
  """
  reference, db_spl = _reference_and_levels(freqs_hz, db_spl, "db_spl")
  return db_spl - reference


def point_problem(freq_hz, threshold_db_hl):
  """Why one audiogram point is invalid, or None if it is fine (shared with audiogram_io).

  Args:
    freq_hz: Frequency in Hz.
    threshold_db_hl: Threshold in dB HL.

  Returns:
    A short message such as "frequency 10000 Hz is outside 125..8000 Hz", or None.
  """
  if not math.isfinite(freq_hz):
    return f"frequency {freq_hz} is not finite"
  if not MIN_FREQ_HZ <= freq_hz <= MAX_FREQ_HZ:
    return f"frequency {freq_hz:g} Hz is outside {MIN_FREQ_HZ:g}..{MAX_FREQ_HZ:g} Hz"
  if not math.isfinite(threshold_db_hl):
    return f"threshold {threshold_db_hl} at {freq_hz:g} Hz is not finite"
  if not MIN_THRESHOLD_DB_HL <= threshold_db_hl <= MAX_THRESHOLD_DB_HL:
    return (f"threshold {threshold_db_hl:g} dB HL at {freq_hz:g} Hz is outside "
            f"{MIN_THRESHOLD_DB_HL:g}..{MAX_THRESHOLD_DB_HL:g} dB HL")
  return None


def order_problem(previous_freq_hz, freq_hz):
  """Why `freq_hz` may not follow `previous_freq_hz`, or None (frequencies strictly increase)."""
  if freq_hz == previous_freq_hz:
    return f"frequency {freq_hz:g} Hz is duplicated"
  if freq_hz < previous_freq_hz:
    return (f"frequency {freq_hz:g} Hz comes after {previous_freq_hz:g} Hz; "
            "frequencies must be strictly increasing")
  return None


def _to_tuple(values, name):
  if any(isinstance(v, (bool, np.bool_)) for v in np.ravel(np.asarray(values, dtype=object))):
    raise ParameterError(f"{name}: expected numbers, got booleans in {values!r}")  # as from_dict
  arr = _as_float_array(values, name)
  if arr.ndim != 1:
    raise ParameterError(f"{name}: expected a 1-D sequence of numbers, got shape {arr.shape}")
  return tuple(float(v) for v in arr)


@dataclasses.dataclass(frozen=True)
class Audiogram:
  """Pure-tone air-conduction thresholds of one ear.

  Attributes:
    freqs_hz: Test frequencies in Hz, strictly increasing, each within 125..8000.
    thresholds_db_hl: Thresholds in dB HL, one per frequency, each within -10..120.
    ear: "left" or "right".
    name: Optional label (e.g. "N3" or a listener id).

  Lists and numpy arrays are accepted and stored as tuples of floats, so an Audiogram is
  immutable and hashable. Invalid values raise ParameterError; nothing is clipped silently.
  """
  freqs_hz: tuple[float, ...]
  thresholds_db_hl: tuple[float, ...]
  ear: str = DEFAULT_EAR
  name: str | None = None

  def __post_init__(self):
    freqs = _to_tuple(self.freqs_hz, "freqs_hz")
    thresholds = _to_tuple(self.thresholds_db_hl, "thresholds_db_hl")
    if not freqs:
      raise ParameterError("freqs_hz: expected at least one frequency, got an empty sequence")
    if len(freqs) > MAX_POINTS:
      raise ParameterError(f"freqs_hz: expected at most {MAX_POINTS} test frequencies (one per "
                           f"third octave from 125 Hz to 8 kHz), got {len(freqs)}")
    if len(freqs) != len(thresholds):
      raise ParameterError(f"thresholds_db_hl: expected {len(freqs)} values (one per frequency in "
                           f"freqs_hz), got {len(thresholds)}")
    for i, (freq, threshold) in enumerate(zip(freqs, thresholds)):
      problem = point_problem(freq, threshold)
      if problem is not None:
        field = "freqs_hz" if problem.startswith("frequency") else "thresholds_db_hl"
        raise ParameterError(f"{field}[{i}]: {problem}")
      if i > 0:
        problem = order_problem(freqs[i - 1], freq)
        if problem is not None:
          raise ParameterError(f"freqs_hz[{i}]: {problem}")
    if self.ear not in EARS:
      raise ParameterError(f"ear: expected one of {EARS}, got {self.ear!r}")
    if self.name is not None and not isinstance(self.name, str):
      raise ParameterError(f"name: expected a string or None, got {self.name!r}")
    if self.name is not None and len(self.name) > MAX_NAME_CHARS:
      raise ParameterError(f"name: expected at most {MAX_NAME_CHARS} characters, got "
                           f"{len(self.name)}")
    object.__setattr__(self, "freqs_hz", freqs)
    object.__setattr__(self, "thresholds_db_hl", thresholds)

  def at(self, freqs_hz):
    """Thresholds in dB HL at any frequencies.

    Linear interpolation in log-frequency between the measured points; flat extrapolation
    (the nearest measured threshold) below the lowest and above the highest frequency.

    Args:
      freqs_hz: Frequencies in Hz (> 0), scalar or any shape.

    Returns:
      float64 array of the same shape as `freqs_hz`, dB HL.

    Raises:
      ParameterError: if a frequency is not finite or not positive.
    """
    freqs_hz = _as_float_array(freqs_hz, "freqs_hz")
    if not np.all(np.isfinite(freqs_hz)) or np.any(freqs_hz <= 0):
      raise ParameterError(f"freqs_hz: expected finite positive frequencies in Hz, got {freqs_hz}")
    return _log_interp(freqs_hz, self.freqs_hz, self.thresholds_db_hl)

  def agrees_with(self, other: "Audiogram", tol_db: float = AGREE_TOL_DB) -> bool:
    """True when `other`, read at this audiogram's frequencies (`other.at`), gives these
    thresholds within `tol_db`: e.g. a preset shown at an editor's eight frequencies agrees with
    the preset's own ten. Ears and names are not compared."""
    if not isinstance(other, Audiogram):
      raise ParameterError(f"other: expected an Audiogram, got {type(other).__name__}")
    return bool(np.all(np.abs(other.at(self.freqs_hz) - np.asarray(self.thresholds_db_hl))
                       <= tol_db))

  def with_threshold(self, freq_hz, value_db_hl):
    """A new Audiogram with the threshold at `freq_hz` set (replaced, or inserted in order).

    Args:
      freq_hz: Frequency in Hz within 125..8000.
      value_db_hl: Threshold in dB HL within -10..120.

    Returns:
      A new Audiogram with the same ear and name.

    Raises:
      ParameterError: if the frequency or the threshold is invalid.
    """
    points = dict(zip(self.freqs_hz, self.thresholds_db_hl))
    try:
      points[float(freq_hz)] = float(value_db_hl)
    except (TypeError, ValueError) as err:
      raise ParameterError(f"with_threshold: expected numbers, got freq_hz={freq_hz!r}, "
                           f"value_db_hl={value_db_hl!r}") from err
    freqs = sorted(points)
    return dataclasses.replace(self, freqs_hz=freqs, thresholds_db_hl=[points[f] for f in freqs])

  @property
  def pta_db_hl(self):
    """Pure-tone average in dB HL: mean threshold at 0.5, 1, 2 and 4 kHz (interpolated)."""
    return float(np.mean(self.at(PTA_FREQS_HZ)))

  def to_dict(self):
    """Plain-Python form: {"ear", "name", "points": [{"freq_hz", "threshold_db_hl"}, ...]}."""
    return {"ear": self.ear, "name": self.name,
            "points": [{"freq_hz": f, "threshold_db_hl": t}
                       for f, t in zip(self.freqs_hz, self.thresholds_db_hl)]}

  @classmethod
  def from_dict(cls, data):
    """Builds an Audiogram from the form `to_dict` returns ("ear" and "name" may be absent).

    Args:
      data: Mapping with "points" (a list of {"freq_hz": number, "threshold_db_hl": number}),
        optional "ear" ("left"/"right", default "right") and optional "name" (string or None).

    Returns:
      Audiogram.

    Raises:
      ParameterError: naming the field at fault, e.g. "points[2].threshold_db_hl: ...".
    """
    if not isinstance(data, dict):
      raise ParameterError(f"audiogram: expected an object/dict, got {type(data).__name__}")
    unknown = sorted(set(data) - {"ear", "name", "points"})
    if unknown:
      raise ParameterError(f"audiogram: unknown field(s) {unknown}; expected ear, name, points")
    if "points" not in data:
      raise ParameterError("audiogram: missing field 'points'")
    points = data["points"]
    if not isinstance(points, list):
      raise ParameterError(f"points: expected a list, got {type(points).__name__}")
    if not points:
      raise ParameterError("points: expected at least one point, got an empty list")
    freqs, thresholds = [], []
    for i, point in enumerate(points):
      if not isinstance(point, dict):
        raise ParameterError(f"points[{i}]: expected an object with freq_hz and threshold_db_hl, "
                             f"got {point!r}")
      for key, out in (("freq_hz", freqs), ("threshold_db_hl", thresholds)):
        if key not in point:
          raise ParameterError(f"points[{i}]: missing field '{key}'")
        value = point[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
          raise ParameterError(f"points[{i}].{key}: {value!r} is not a number")
        out.append(float(value))
      problem = point_problem(freqs[-1], thresholds[-1])
      if problem is None and i > 0:
        problem = order_problem(freqs[-2], freqs[-1])
      if problem is not None:
        raise ParameterError(f"points[{i}]: {problem}")
    ear = data.get("ear", DEFAULT_EAR)
    ear = ear.lower() if isinstance(ear, str) else ear  # "Left" as in the CSV comment
    if ear not in EARS:
      raise ParameterError(f"ear: expected one of {EARS}, got {data.get('ear')!r}")
    return cls(freqs, thresholds, ear=ear, name=data.get("name"))
