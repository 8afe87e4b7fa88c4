"""Fitting an impaired CARFAC to a listener's audiogram.

Split rule (documented choice): a loss of L dB HL is attributed up to two thirds to outer hair
cells (OHC), after behavioural estimates of the OHC share of audiometric loss: 60% on average
(Lopez-Poveda & Johannesen 2012, JARO 13:485-504; 18 listeners) and 60-70% at 0.5-6 kHz
(Johannesen, Perez-Gonzalez & Lopez-Poveda 2014, Front. Neurosci. 8:214; 68 listeners); the
OHC + IHC split of a loss in dB follows Moore & Glasberg (2004). It is capped by the most the
model's OHCs can take away at that frequency (its full active gain, 15-50 dB here, measured with
`ohc_health = 0`). The rest is inner-hair-cell / synaptic loss, modelled as a reduced IHC drive
(`ihc_gain`, 1 = healthy). Both are set per channel by log-frequency interpolation of
per-frequency values, then `ihc_gain` is refined by simulated audiometry until the model's
audiogram matches the target (a few fixed-point iterations).
"""
import dataclasses
import functools
import importlib.resources
import json

import numpy as np

from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import designs
from dal_widgets.errors import ParameterError
from dal_widgets.hearing import audiometry
from dal_widgets.hearing.audiogram import Audiogram

OHC_FRACTION = 2.0 / 3.0  # share of a loss given to OHCs (60-70%: Johannesen et al. 2014)
HEALTH_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # uniform OHC health values whose threshold shifts we measure
REFINE_ITERATIONS = 8  # audiometry-and-correct passes on ihc_gain
MIN_IHC_GAIN_DB = -140.0  # floor of the IHC drive; deeper "losses" are no response anyway
TOLERANCE_DB = 1.0  # stop refining once every residual is this small
# Frequencies whose model data (normal thresholds, OHC shift curves, preset fits) ship precomputed in
# dal_widgets/data/hearing_fits.json (regenerate: python scripts/fit_presets.py; a test checks it).
GRID_FREQS_HZ = (250.0, 375.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0)
BUNDLED_FITS = "hearing_fits.json"


EAR_FIELDS = ("audiogram", "sr", "style", "ohc_health", "ihc_gain", "freqs_hz", "target_db_hl",
              "fitted_db_hl")  # the keys of ImpairedEar.to_dict()


@dataclasses.dataclass(frozen=True)
class ImpairedEar:
  """A CARFAC ear fitted to an audiogram.

  Attributes:
    audiogram: the target.
    sr: model sample rate, Hz; style: CARFAC style.
    ohc_health, ihc_gain: per channel, shape [n_ch], in [0, 1].
    freqs_hz: frequencies the fit measured (audiogram frequencies within the model's range).
    target_db_hl, fitted_db_hl: audiogram and simulated audiogram there, dB HL.
  """
  audiogram: Audiogram
  sr: float
  style: str
  ohc_health: np.ndarray
  ihc_gain: np.ndarray
  freqs_hz: tuple
  target_db_hl: tuple
  fitted_db_hl: tuple

  @property
  def residual_db(self) -> np.ndarray:
    """Fitted minus target threshold, dB, per fitted frequency."""
    return np.asarray(self.fitted_db_hl) - np.asarray(self.target_db_hl)

  def weights(self, dtype=np.float32) -> cf.CarfacWeights:
    """CarfacWeights to pass to `carfac.run` with the design `designs.designed(sr, style)`."""
    hypers = designs.designed(self.sr, self.style).hypers
    return cf.make_weights(hypers, ohc_health=self.ohc_health.astype(dtype),
                           ihc_gain=self.ihc_gain.astype(dtype))

  def table(self) -> str:
    """Markdown table: frequency | target dB HL | fitted dB HL | residual dB."""
    lines = ["| freq_hz | target_db_hl | fitted_db_hl | residual_db |", "|---|---|---|---|"]
    for f, t, m in zip(self.freqs_hz, self.target_db_hl, self.fitted_db_hl):
      lines.append(f"| {f:.0f} | {t:.1f} | {m:.1f} | {m - t:+.1f} |")
    return "\n".join(lines)

  def to_dict(self) -> dict:
    return {"audiogram": self.audiogram.to_dict(), "sr": self.sr, "style": self.style,
            "ohc_health": [round(float(v), 6) for v in self.ohc_health],
            "ihc_gain": [float(f"{v:.6g}") for v in self.ihc_gain],
            "freqs_hz": list(self.freqs_hz), "target_db_hl": list(self.target_db_hl),
            "fitted_db_hl": [round(float(v), 3) for v in self.fitted_db_hl]}

  @classmethod
  def from_dict(cls, d: dict) -> "ImpairedEar":
    """Builds an ImpairedEar from the form `to_dict` returns.

    Raises:
      ParameterError: `d` not a dict, or a field missing or of the wrong kind.
    """
    if not isinstance(d, dict):
      raise ParameterError(f"ear: expected a dict (ImpairedEar.to_dict()), got {type(d).__name__}")
    missing = [key for key in EAR_FIELDS if key not in d]
    if missing:
      raise ParameterError(f"ear: has no field {missing[0]!r}; ImpairedEar.to_dict() writes "
                           f"{', '.join(EAR_FIELDS)}")
    try:
      return cls(audiogram=Audiogram.from_dict(d["audiogram"]), sr=float(d["sr"]),
                 style=d["style"], ohc_health=np.asarray(d["ohc_health"], np.float64),
                 ihc_gain=np.asarray(d["ihc_gain"], np.float64), freqs_hz=tuple(d["freqs_hz"]),
                 target_db_hl=tuple(d["target_db_hl"]), fitted_db_hl=tuple(d["fitted_db_hl"]))
    except ParameterError:  # from Audiogram.from_dict: it names its own field
      raise
    except (TypeError, ValueError) as err:  # e.g. sr "16 kHz", or a number where a list goes
      raise ParameterError(f"ear: a field has the wrong kind of value ({err})") from err


def unfitted_freqs_hz(audiogram: Audiogram, fitted_freqs_hz) -> tuple:
  """Audiogram frequencies, Hz, that a fit left out (above the tones its model's rate can test)
  and whose threshold differs from what the model has there: the loss of the highest fitted
  frequency, spread flat to the channels above it (negative thresholds count as 0 dB HL)."""
  points = dict(zip(audiogram.freqs_hz, audiogram.thresholds_db_hl))
  fitted = tuple(fitted_freqs_hz)
  if not fitted:
    return ()
  top = max(points[fitted[-1]], 0.0)
  return tuple(f for f, t in points.items() if f not in fitted and max(t, 0.0) != top)


def better_than_normal_freqs_hz(audiogram: Audiogram, fitted_freqs_hz) -> tuple:
  """Fitted frequencies, Hz, whose threshold is better than 0 dB HL: the model's healthy ear is
  its best, so the fit takes them as 0 dB HL."""
  return tuple(f for f, t in zip(audiogram.freqs_hz, audiogram.thresholds_db_hl)
               if t < 0 and f in tuple(fitted_freqs_hz))


@functools.lru_cache(maxsize=1)
def bundled() -> dict:
  """The precomputed model data: {"<sr>/<style>": {freqs_hz, shift_curves_db, presets}}."""
  path = importlib.resources.files("dal_widgets") / "data" / BUNDLED_FITS
  return json.loads(path.read_text()) if path.is_file() else {}


def measure_shift_curves(freqs_hz: tuple, sr: float, style: str = "v3") -> np.ndarray:
  """Threshold shift (dB) of uniform OHC health HEALTH_GRID[i] at each frequency: [n_health, n_freqs]."""
  hypers = designs.designed(sr, style).hypers
  return np.stack([audiometry.model_audiogram_db_hl(freqs_hz, sr, cf.make_weights(hypers, ohc_health=h),
                                                    style=style) for h in HEALTH_GRID])


@functools.lru_cache(maxsize=16)
def ohc_shift_curves(freqs_hz: tuple, sr: float, style: str = "v3") -> np.ndarray:
  """measure_shift_curves, read from the bundled data when it holds these frequencies."""
  entry = bundled().get(f"{sr:.0f}/{style}")
  if entry and set(freqs_hz) <= set(entry["freqs_hz"]):
    columns = [entry["freqs_hz"].index(f) for f in freqs_hz]
    return np.asarray(entry["shift_curves_db"])[:, columns]
  return measure_shift_curves(freqs_hz, sr, style)


def _per_channel(freqs_hz, values, cf_hz) -> np.ndarray:
  """Per-frequency values spread to channels: linear in log-frequency, flat beyond the ends."""
  return np.interp(np.log(cf_hz), np.log(np.asarray(freqs_hz)), np.asarray(values, np.float64))


def _health_for_shift(shift_db, curves_at_f) -> float:
  """OHC health giving `shift_db` at one frequency (shift falls monotonically with health)."""
  shifts = np.maximum.accumulate(np.asarray(curves_at_f)[::-1])[::-1]  # guard monotonicity
  return float(np.interp(-shift_db, -shifts, np.asarray(HEALTH_GRID)))


def fit_cochlea(audiogram: Audiogram, sr: float = 16000.0, *, style: str = "v3",
                refine: bool = True, use_bundled: bool = True) -> ImpairedEar:
  """Fits per-channel OHC health and IHC gain so the model's audiogram matches `audiogram`.

  Args:
    audiogram: target thresholds in dB HL.
    sr: model sample rate in Hz (the ear is for `designs.designed(sr, style)`).
    refine: run simulated audiometry and correct ihc_gain (seconds). False gives the open-loop
      first guess from the shift curves alone (milliseconds; `fitted_db_hl` then repeats the
      target, unmeasured): what interactive widgets use while a slider moves.
    use_bundled: return the shipped fit when `audiogram` equals a preset fitted for this sr.
  Returns:
    ImpairedEar; its `residual_db` says how well each frequency was matched.
  Raises:
    ParameterError: a sample rate CARFAC is not designed for, or no audiogram frequency lies
      within the model's range.
  """
  if not isinstance(audiogram, Audiogram):
    raise ParameterError(f"audiogram must be an Audiogram, got {type(audiogram).__name__}")
  designs.designed(sr, style)  # checks sr and style first (cached)
  sr = float(sr)
  entry = bundled().get(f"{sr:.0f}/{style}") if use_bundled else None
  for fitted_preset in (entry or {}).get("presets", {}).values():
    if refine and fitted_preset["audiogram"]["points"] == audiogram.to_dict()["points"]:
      return dataclasses.replace(ImpairedEar.from_dict(fitted_preset), audiogram=audiogram)
  freqs_all = np.asarray(audiogram.freqs_hz)
  mask = audiometry.measurable_freqs(freqs_all, sr)
  if not mask.any():
    top = audiometry.MAX_TONE_FRACTION_OF_NYQUIST * sr / 2
    raise ParameterError(f"audiogram: no frequency within the range of a {sr:.0f} Hz model (tones "
                         f"up to {top:.0f} Hz); a higher sample rate reaches "
                         f"{min(audiogram.freqs_hz):g} Hz")
  freqs = tuple(float(f) for f in freqs_all[mask])
  target = np.maximum(np.asarray(audiogram.thresholds_db_hl)[mask], 0.0)  # better than normal: no loss
  hypers, coeffs, _, _ = designs.designed(sr, style)
  cf_hz = np.asarray(coeffs.pole_hz)
  curves = ohc_shift_curves(freqs, sr, style)
  ohc_db = np.minimum(OHC_FRACTION * target, curves[0])
  health_f = np.array([_health_for_shift(s, curves[:, i]) for i, s in enumerate(ohc_db)])
  ihc_db = -(target - ohc_db)
  ohc_health = np.clip(_per_channel(freqs, health_f, cf_hz), 0.0, 1.0)
  fitted = target
  for _ in range(REFINE_ITERATIONS if refine else 1):
    ihc_gain = 10 ** (_per_channel(freqs, ihc_db, cf_hz) / 20)
    if not refine:
      break
    weights = cf.make_weights(hypers, ohc_health=ohc_health, ihc_gain=ihc_gain)
    fitted = audiometry.model_audiogram_db_hl(freqs, sr, weights, style=style)
    error = fitted - target
    if np.all(np.abs(error) <= TOLERANCE_DB):
      break
    ihc_db = ihc_db + error
    # Where the OHC part alone already overshoots, give the excess back to the OHCs.
    excess = np.maximum(ihc_db, 0.0)
    if excess.any():
      ohc_db = np.maximum(ohc_db - excess, 0.0)
      health_f = np.array([_health_for_shift(s, curves[:, i]) for i, s in enumerate(ohc_db)])
      ohc_health = np.clip(_per_channel(freqs, health_f, cf_hz), 0.0, 1.0)
    ihc_db = np.clip(ihc_db, MIN_IHC_GAIN_DB, 0.0)
  return ImpairedEar(audiogram=audiogram, sr=sr, style=style, ohc_health=ohc_health,
                     ihc_gain=ihc_gain, freqs_hz=freqs,
                     target_db_hl=tuple(float(t) for t in target),
                     fitted_db_hl=tuple(float(v) for v in fitted))
