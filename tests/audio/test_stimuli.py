"""Stimuli: frequencies, periods and levels are what was asked for; bad arguments are refused."""
import numpy as np
import pytest

from dal_widgets.audio import calibration, stimuli
from dal_widgets.errors import ParameterError

SR = 16000
LEVEL_TOL_DB = 0.01  # steady parts are exact sums of sines; only float32 rounding remains


def _level_db_spl(x):
  return calibration.rms_to_db_spl(calibration.rms(x.astype(np.float64)))


def _steady(x, ramp_ms=stimuli.DEFAULT_RAMP_MS, sr=SR):
  n = int(round(ramp_ms * 1e-3 * sr))
  return x[n:len(x) - n]


def _spectrum_db(x, sr=SR):
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) + 1e-12
  return np.fft.rfftfreq(len(x), 1 / sr), 20 * np.log10(spectrum / spectrum.max())


def _autocorr_peak_lag(x, min_lag):
  ac = np.correlate(x, x, mode="full")[len(x) - 1:]
  return min_lag + int(np.argmax(ac[min_lag:len(x) // 2]))


def test_tone():
  x = stimuli.tone(1000.0, 0.5, SR, level_db_spl=70.0)
  assert x.dtype == np.float32 and x.shape == (8000,)
  freqs, spec = _spectrum_db(x)
  assert freqs[np.argmax(spec)] == pytest.approx(1000.0, abs=SR / len(x))
  # 1 kHz at 16 kHz: 16 samples per cycle, and the 10 ms ramps leave whole cycles in between.
  assert _level_db_spl(_steady(x)) == pytest.approx(70.0, abs=LEVEL_TOL_DB)
  assert abs(x[0]) < 1e-3 * np.abs(x).max() and abs(x[-1]) < 1e-2 * np.abs(x).max()
  assert np.abs(x).max() == pytest.approx(calibration.tone_amplitude(70.0), rel=1e-3)


def test_two_tone_has_both_components_at_level():
  x = stimuli.two_tone(1000.0, 1500.0, 0.5, SR, level_db_spl=60.0)
  freqs, spec = _spectrum_db(x)
  for f in (1000.0, 1500.0):
    assert spec[np.argmin(np.abs(freqs - f))] > -1.0
  assert _level_db_spl(_steady(x)) == pytest.approx(60.0 + 10 * np.log10(2), abs=LEVEL_TOL_DB)


def test_click_train_period_and_peak():
  x = stimuli.click_train(100.0, 0.5, SR, level_db_spl=80.0, click_width_s=1 / SR)
  onsets = np.flatnonzero(x)
  assert len(onsets) == 50
  np.testing.assert_array_equal(np.diff(onsets), SR // 100)
  assert x.max() == pytest.approx(calibration.tone_amplitude(80.0), rel=1e-6)
  wide = stimuli.click_train(100.0, 0.5, SR)  # default 100 us clicks = 2 samples at 16 kHz
  assert np.count_nonzero(wide) == 100


@pytest.mark.parametrize("phase", ["cosine", "sine", "alternating", "random"])
def test_harmonic_complex(phase):
  f0_hz = 200.0
  x = stimuli.harmonic_complex(f0_hz, 0.5, SR, n_harmonics=10, level_db_spl=65.0, phase=phase,
                               rng=np.random.default_rng(1))
  assert _level_db_spl(_steady(x)) == pytest.approx(65.0, abs=0.05)  # 0.05: ramp edges
  freqs, spec = _spectrum_db(x)
  lines = [spec[np.argmin(np.abs(freqs - k * f0_hz))] for k in range(1, 11)]
  assert min(lines) > -1.0  # all ten harmonics at equal level
  assert spec[np.argmin(np.abs(freqs - 11 * f0_hz))] < -40.0  # nothing above the 10th
  assert spec[np.argmin(np.abs(freqs - 1.5 * f0_hz))] < -40.0  # nothing between harmonics
  assert _autocorr_peak_lag(_steady(x), min_lag=20) == SR / f0_hz


def test_harmonic_complex_fills_to_nyquist_by_default():
  x = stimuli.harmonic_complex(1000.0, 0.2, SR)
  freqs, spec = _spectrum_db(x)
  assert spec[np.argmin(np.abs(freqs - 7000.0))] > -1.0  # 7 harmonics below 8 kHz
  with pytest.raises(ParameterError, match="n_harmonics"):
    stimuli.harmonic_complex(1000.0, 0.2, SR, n_harmonics=8)
  with pytest.raises(ParameterError, match="rng"):
    stimuli.harmonic_complex(100.0, 0.2, SR, phase="random")
  with pytest.raises(ParameterError, match="phase"):
    stimuli.harmonic_complex(100.0, 0.2, SR, phase="schroeder")
  for limit in (50.0, 100.0, -5.0, float("nan")):  # no harmonic of 100 Hz below these
    with pytest.raises(ParameterError, match="max_freq_hz: expected None or a frequency above"):
      stimuli.harmonic_complex(100.0, 0.2, SR, max_freq_hz=limit)
  with pytest.raises(ParameterError, match="n_harmonics: expected a whole number"):
    stimuli.harmonic_complex(100.0, 0.2, SR, n_harmonics=2.5)
  freqs, spec = _spectrum_db(stimuli.harmonic_complex(100.0, 0.2, SR, max_freq_hz=350.0))
  assert spec[np.argmin(np.abs(freqs - 300.0))] > -1.0 > spec[np.argmin(np.abs(freqs - 400.0))] + 30


def test_vowel_pitch_formants_and_level():
  f0_hz = 125.0
  formants_hz = (270.0, 2290.0, 3010.0)  # /i/ of an adult male (Peterson & Barney 1952)
  x = stimuli.vowel(f0_hz, formants_hz, 0.5, SR, level_db_spl=65.0)
  assert x.dtype == np.float32 and x.shape == (8000,)
  assert _level_db_spl(_steady(x)) == pytest.approx(65.0, abs=LEVEL_TOL_DB)
  assert _autocorr_peak_lag(_steady(x), min_lag=40) == SR / f0_hz
  freqs, spec = _spectrum_db(x)

  def band_db(lo_hz, hi_hz):
    return spec[(freqs >= lo_hz) & (freqs < hi_hz)].max()
  # F2 is a clear peak: well above the trough below it and the roll-off above F3.
  assert band_db(2100, 2500) > band_db(1500, 1900) + 10.0
  assert band_db(2100, 2500) > band_db(3300, 4000) + 10.0
  assert band_db(200, 400) == pytest.approx(0.0)  # F1 carries the strongest harmonic


def test_silence():
  x = stimuli.silence(0.25, SR)
  assert x.dtype == np.float32 and x.shape == (4000,) and not np.any(x)


@pytest.mark.parametrize("call, match", [
    (lambda: stimuli.tone(9000.0, 0.1, SR), r"freq_hz: expected 0 < freq_hz < sr/2 = 8000 Hz"),
    (lambda: stimuli.tone(1000.0, 0.0, SR), "dur_s"),
    (lambda: stimuli.tone(1000.0, 0.1, 4000), r"sr: expected 8000\.\.48000 Hz, got 4000"),
    (lambda: stimuli.tone(1000.0, 0.01, SR, ramp_ms=10.0), "ramp_ms"),
    (lambda: stimuli.two_tone(1000.0, -5.0, 0.1, SR), "f2_hz"),
    (lambda: stimuli.click_train(0.0, 0.1, SR), "rate_hz"),
    (lambda: stimuli.click_train(100.0, 0.1, SR, click_width_s=0.01), r"click_width_s.*0\.01\)"),
    (lambda: stimuli.click_train(100.0, 0.1, SR, click_width_s=1e6), "click_width_s"),
    (lambda: stimuli.tone(1000.0, 0.1, SR, level_db_spl=float("nan")), "level_db_spl"),
    (lambda: stimuli.vowel(100.0, (700.0, 9000.0), 0.1, SR), r"formants_hz\[1\]"),
    (lambda: stimuli.vowel(100.0, (700.0, 1200.0), 0.1, SR, bandwidths_hz=(80.0,)), "bandwidths_hz"),
    (lambda: stimuli.silence(-1.0, SR), "dur_s"),
    (lambda: stimuli.tone(1000.0, None, SR), "dur_s: expected a positive duration .* got None"),
    (lambda: stimuli.tone(None, 0.1, SR), "freq_hz: expected .* got None"),
    (lambda: stimuli.tone(1000.0, 0.1, SR, ramp_ms="5"), "ramp_ms"),
    # each gave a silently wrong sound before: all NaN samples, or a numpy broadcast error
    (lambda: stimuli.tone(1000.0, 0.1, SR, phase_rad=float("nan")), "phase_rad: expected a finite"),
    (lambda: stimuli.tone(1000.0, 0.1, SR, phase_rad=np.zeros(3)), "phase_rad"),
    (lambda: stimuli.vowel(100.0, (700.0, 1200.0), 0.1, SR, bandwidths_hz=(np.nan, 90.0)),
     "bandwidths_hz: expected 2 finite positive"),
    (lambda: stimuli.vowel(100.0, "ah", 0.1, SR), "formants_hz: expected a list of Hz"),
    (lambda: stimuli.tone(1000.0, 0.1, SR, level_db_spl=np.array([60.0, 70.0])),
     "level_db_spl: expected one level"),
    (lambda: stimuli.harmonic_complex(100.0, 0.1, SR, level_db_spl=[60.0]), "level_db_spl"),
])
def test_errors(call, match):
  with pytest.raises(ParameterError, match=match):
    call()


def test_numpy_scalars_are_numbers():
  width = np.float32(1e-4)  # e.g. read from an array of settings
  np.testing.assert_array_equal(stimuli.click_train(100.0, 0.1, SR, click_width_s=width),
                                stimuli.click_train(100.0, 0.1, SR, click_width_s=float(width)))
