"""Standard audiograms: normal hearing and the Bisgaard et al. (2010) set N1..N7, S1..S3.

Source: N. Bisgaard, M. S. M. G. Vlaming and M. Dahlquist (2010), "Standard audiograms for the
IEC 60118-15 measurement procedure", Trends in Amplification 14(2), 113-120. They summarise a large
database of audiograms with 10 typical shapes: N1..N7 are flat / moderately sloping losses of
increasing degree, S1..S3 are steeply sloping (high-frequency) losses.
"""
from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram import DEFAULT_EAR, Audiogram

# Frequencies at which Bisgaard et al. (2010) define the standard audiograms, Hz.
BISGAARD_FREQS_HZ = (250.0, 375.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 6000.0)

# Thresholds in dB HL at BISGAARD_FREQS_HZ (Bisgaard, Vlaming & Dahlquist 2010; as in DESIGN.md).
BISGAARD_THRESHOLDS_DB_HL = {
    "N1": (10, 10, 10, 10, 10, 10, 15, 20, 30, 40),
    "N2": (20, 20, 20, 22.5, 25, 30, 35, 40, 45, 50),
    "N3": (35, 35, 35, 35, 40, 45, 50, 55, 60, 65),
    "N4": (55, 55, 55, 55, 55, 60, 65, 70, 75, 80),
    "N5": (65, 67.5, 70, 72.5, 75, 80, 80, 80, 80, 80),
    "N6": (75, 77.5, 80, 82.5, 85, 90, 90, 95, 100, 100),
    "N7": (90, 92.5, 95, 100, 105, 105, 105, 105, 105, 105),
    "S1": (10, 10, 10, 10, 10, 10, 15, 30, 55, 70),
    "S2": (20, 20, 20, 22.5, 25, 35, 55, 75, 95, 95),
    "S3": (30, 30, 35, 47.5, 60, 70, 75, 80, 80, 85),
}

NORMAL = Audiogram(BISGAARD_FREQS_HZ, (0.0,) * len(BISGAARD_FREQS_HZ), name="normal")

# Display order: normal first, then the flat/moderately sloping set by degree, then the steep set.
PRESET_NAMES = ("normal",) + tuple(BISGAARD_THRESHOLDS_DB_HL)

_PRESETS = {"normal": NORMAL}
_PRESETS.update({name: Audiogram(BISGAARD_FREQS_HZ, values, name=name)
                 for name, values in BISGAARD_THRESHOLDS_DB_HL.items()})


def preset(name, *, ear=DEFAULT_EAR):
  """A standard audiogram by name.

  Args:
    name: One of PRESET_NAMES ("normal", "N1".."N7", "S1".."S3"), case-insensitive.
    ear: "left" or "right" (the presets are the same for both ears).

  Returns:
    Audiogram at BISGAARD_FREQS_HZ, its name set to the canonical preset name.

  Raises:
    ParameterError: if `name` is not a preset (the message lists the valid names) or `ear` is bad.
  """
  key = str(name).strip()
  key = key.lower() if key.lower() == "normal" else key.upper()
  if key not in _PRESETS:
    raise ParameterError(f"name: expected one of {', '.join(PRESET_NAMES)}, got {name!r}")
  audiogram = _PRESETS[key]
  if ear == audiogram.ear:
    return audiogram
  return Audiogram(audiogram.freqs_hz, audiogram.thresholds_db_hl, ear=ear, name=audiogram.name)
