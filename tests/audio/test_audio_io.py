"""Audio I/O: save/load round trips, resampling, atomic writes, validation errors and warnings."""
import io as _io
import warnings

import numpy as np
import pytest
import soundfile as sf

from dal_widgets import atomic
from dal_widgets.audio import calibration, io, stimuli
from dal_widgets.errors import AudioError, ParameterError

PCM16_STEP = 1.0 / 32768  # one 16-bit quantisation step: lossless formats are exact to ~1 step
OGG_LEVEL_TOL_DB = 1.0  # Vorbis is lossy; a steady tone's level survives to well under 1 dB
FREQ_TOL_BINS = 1  # the FFT peak may land one bin off after resampling
TONE_HZ = 1000.0


def _peak_hz(x, sr):
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)], sr / len(x)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
@pytest.mark.parametrize("sr", [16000, 44100])
def test_save_load_round_trip(tmp_path, suffix, sr):
  x = stimuli.tone(TONE_HZ, 0.5, sr, level_db_spl=80.0)
  path = tmp_path / f"tone{suffix}"
  io.save(path, x, sr)
  y, sr_read = io.load(path)
  assert sr_read == sr and y.dtype == np.float32 and y.ndim == 1
  if suffix == ".ogg":
    assert abs(calibration.rms_to_db_spl(calibration.rms(y[: len(x)])) - 80.0) < OGG_LEVEL_TOL_DB
  else:
    np.testing.assert_allclose(y, x, atol=PCM16_STEP)
  # Resampled on load: length scales and the tone keeps its frequency.
  z, sr_z = io.load(path, sr=22050)
  assert sr_z == 22050
  assert abs(len(z) - len(y) * 22050 / sr) <= 1
  peak_hz, bin_hz = _peak_hz(z, sr_z)
  assert abs(peak_hz - TONE_HZ) <= FREQ_TOL_BINS * bin_hz


def test_resample_keeps_frequency_and_length():
  x = stimuli.tone(TONE_HZ, 1.0, 44100)
  y = io.resample(x, 44100, 16000)
  assert y.dtype == np.float32 and len(y) == 16000
  peak_hz, bin_hz = _peak_hz(y, 16000)
  assert abs(peak_hz - TONE_HZ) <= FREQ_TOL_BINS * bin_hz
  assert calibration.rms_to_db_spl(calibration.rms(y[800:-800])) == pytest.approx(60.0, abs=0.05)
  # Non-integer rates use a rational approximation of the ratio.
  assert abs(len(io.resample(x, 44100.0, 16000.5)) - 16000.5) <= 1
  with pytest.raises(ParameterError, match="sr_out"):
    io.resample(x, 44100, 0)


def test_stereo_is_averaged_for_mono(tmp_path):
  left = stimuli.tone(500.0, 0.2, 16000)
  right = stimuli.tone(1500.0, 0.2, 16000)
  io.save(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000)
  mono, _ = io.load(tmp_path / "st.wav")
  np.testing.assert_allclose(mono, (left + right) / 2, atol=PCM16_STEP)
  both, _ = io.load(tmp_path / "st.wav", mono=False)
  assert both.shape == (3200, 2)


def test_save_is_atomic(tmp_path, monkeypatch):
  path = tmp_path / "a.flac"
  old = stimuli.tone(TONE_HZ, 0.1, 16000)
  io.save(path, old, 16000)
  io.save(path, 0.5 * old, 16000)  # overwrite
  assert [p.name for p in tmp_path.iterdir()] == ["a.flac"]
  assert oct(path.stat().st_mode & 0o777) == oct(atomic.NEW_FILE_MODE)

  def broken_write(file, *args, **kwargs):  # writes half a file, then fails
    if isinstance(file, (str, bytes)) or hasattr(file, "__fspath__"):
      file = open(file, "wb")
    file.write(b"RIFF half a header")
    file.flush()
    raise RuntimeError("disk full")
  monkeypatch.setattr(sf, "write", broken_write)
  with pytest.raises(AudioError, match="disk full"):
    io.save(path, old, 16000)
  assert [p.name for p in tmp_path.iterdir()] == ["a.flac"]  # no temp file left behind
  monkeypatch.undo()
  np.testing.assert_allclose(io.load(path)[0], 0.5 * old, atol=PCM16_STEP)  # old content intact


def test_save_errors(tmp_path):
  x = stimuli.tone(TONE_HZ, 0.1, 16000)
  with pytest.raises(ParameterError, match="suffix"):
    io.save(tmp_path / "a.mp4", x, 16000)
  with pytest.raises(AudioError, match="does not exist"):
    io.save(tmp_path / "missing" / "a.wav", x, 16000)
  with pytest.raises(AudioError, match="NaN"):
    io.save(tmp_path / "a.wav", np.full(10, np.nan), 16000)
  with pytest.raises(ParameterError, match="whole number of Hz, got 16000.7"):
    io.save(tmp_path / "a.wav", x, 16000.7)  # a file would store 16000 Hz
  assert list(tmp_path.iterdir()) == []


def test_save_into_a_read_only_folder_is_an_audio_error(tmp_path, monkeypatch):
  def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied")
  monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)  # as in a folder without write permission
  with pytest.raises(AudioError, match="cannot write audio: Permission denied"):
    io.save(tmp_path / "a.wav", stimuli.tone(TONE_HZ, 0.1, 16000), 16000)


@pytest.mark.parametrize("args, match", [
    ((16000, "8000"), "sr_out: expected a positive sample rate"),
    ((16000, float("nan")), "sr_out: expected a positive sample rate"),
    ((48000, 1), "too far below"),
])
def test_resample_errors(args, match):
  with pytest.raises(ParameterError, match=match):
    io.resample(np.zeros(100, np.float32), *args)
  with pytest.raises(AudioError, match="x: contains 1 NaN or inf samples"):
    io.resample(np.array([0.0, np.nan, 0.0]), 16000, 8000)


def test_unreadable_and_missing_files(tmp_path):
  bad = tmp_path / "notes.wav"
  bad.write_text("this is not audio")
  with pytest.raises(AudioError, match=r"notes\.wav: cannot read audio"):
    io.load(bad)
  with pytest.raises(AudioError, match="not found"):
    io.load(tmp_path / "missing.flac")
  with pytest.raises(AudioError, match="folder"):
    io.load(tmp_path)


def test_load_limits(tmp_path):
  sf.write(tmp_path / "hi.wav", stimuli.tone(TONE_HZ, 2.0, 48000), 96000)  # 1 s at 96 kHz
  with pytest.raises(ParameterError, match="pass sr"):
    io.load(tmp_path / "hi.wav")
  assert io.load(tmp_path / "hi.wav", sr=16000)[0].shape == (16000,)
  with pytest.raises(AudioError, match="too long"):
    io.load(tmp_path / "hi.wav", sr=16000, max_seconds=0.5)
  for bad in (float("nan"), 0, -1):
    with pytest.raises(ParameterError, match="max_seconds"):
      io.load(tmp_path / "hi.wav", sr=16000, max_seconds=bad)
  for bad in (16000.5, "16000"):  # a fractional rate would be reported rounded
    with pytest.raises(ParameterError, match="whole number of Hz"):
      io.load(tmp_path / "hi.wav", sr=bad)


@pytest.mark.parametrize("x, sr, error, match", [
    (np.zeros(0), 16000, AudioError, "empty"),
    (np.array([0.1, np.nan, 0.2]), 16000, AudioError, "NaN"),
    (np.array([0.1, np.inf]), 16000, AudioError, "NaN or inf"),
    (np.ones(100) * 0.1, 4000, ParameterError, r"sr: expected 8000\.\.48000 Hz, got 4000"),
    (np.ones(100) * 0.1, 96000, ParameterError, "48000"),
    (np.ones((10, 2, 2)) * 0.1, 16000, ParameterError, r"1-D .* got shape \(10, 2, 2\)"),
    (np.ones((10, 2)) * 0.1, 16000, ParameterError, "1-D"),
    (np.ones(16000 * 3) * 0.1, 16000, AudioError, "too long"),
    (np.array(["a", "b"]), 16000, ParameterError, "real numbers"),
])
def test_validate_errors(x, sr, error, match):
  with pytest.raises(error, match=match):
    io.validate(x, sr, max_seconds=2.0)


def test_validate_accepts_and_warns():
  out = io.validate([0.1, -0.2], 16000)
  assert out.dtype == np.float32 and out.shape == (2,)
  assert io.validate(np.full((5, 2), 0.1), 16000, mono=False).shape == (5, 2)
  with pytest.warns(UserWarning, match=r"exceed \+-1"):
    io.validate(np.array([0.5, 1.5]), 16000, name="speech")
  with pytest.warns(UserWarning, match="digital silence"):
    io.validate(np.zeros(10), 16000)
  with warnings.catch_warnings():  # audio that stays float need not fit integer PCM
    warnings.simplefilter("error")
    assert io.validate(np.array([0.5, 1.5]), 16000, full_scale_warning=False)[1] == 1.5


def test_wav_bytes_round_trip_and_clipping():
  x = stimuli.tone(TONE_HZ, 0.1, 16000, level_db_spl=90.0)
  data = io.to_wav_bytes(x, 16000)
  assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
  y, sr = io.from_bytes(data)
  assert sr == 16000
  np.testing.assert_allclose(y, x, atol=PCM16_STEP)
  with pytest.warns(UserWarning, match="clip"):
    loud = io.to_wav_bytes(np.array([0.5, 2.0, -3.0]), 16000)
  np.testing.assert_allclose(io.from_bytes(loud)[0], [0.5, 1.0, -1.0], atol=PCM16_STEP)


def test_from_bytes_can_leave_silence_and_peaks_to_its_caller():
  def wav(x, subtype):
    buffer = _io.BytesIO()
    sf.write(buffer, np.asarray(x, np.float32), 16000, format="WAV", subtype=subtype)
    return buffer.getvalue()

  silent, loud = wav(np.zeros(100), "PCM_16"), wav([0.5, 2.0], "FLOAT")
  with pytest.warns(UserWarning, match="digital silence"):
    io.from_bytes(silent)
  with pytest.warns(UserWarning, match="would clip"):
    io.from_bytes(loud)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert not np.any(io.from_bytes(silent, warn=False)[0])
    assert io.from_bytes(loud, warn=False)[0][1] == 2.0


def test_samples_beyond_float32_are_named_as_such():
  with pytest.raises(AudioError, match=r"beyond the float32 range \(peak 1e\+300\)"):
    io.validate(np.array([0.0, 1e300]), 16000)
  with pytest.raises(AudioError, match="contains 1 NaN or inf samples"):
    io.validate(np.array([0.0, np.inf]), 16000)
  with pytest.warns(UserWarning, match="kept here, but a 16-bit file would clip them"):
    assert io.validate(np.array([0.0, 2.0]), 16000)[1] == 2.0


def test_wav_bytes_refuse_channels_first_audio_and_fractional_rates(tmp_path):
  with pytest.raises(ParameterError, match=r"shape \(2, 1000\) has more channels than samples"):
    io.to_wav_bytes(np.zeros((2, 1000)), 16000)
  with pytest.raises(ParameterError, match=r"more channels than samples"):
    io.save(tmp_path / "x.wav", np.zeros((2, 1000)), 16000)
  with pytest.raises(ParameterError, match="sr: expected a whole number of Hz, got 16000.5"):
    io.to_wav_bytes(np.full(100, 0.1), 16000.5)
  stereo = np.full((1000, 2), 0.1)  # (time, channels) is fine, averaged on load
  assert io.from_bytes(io.to_wav_bytes(stereo, 16000))[0].shape == (1000,)


def test_from_bytes_errors():
  with pytest.raises(AudioError, match=r"uploaded audio \(9 bytes\): cannot read"):
    io.from_bytes(b"not audio")
  with pytest.raises(AudioError, match="no bytes"):
    io.from_bytes(b"")
  with pytest.raises(ParameterError, match="expected bytes"):
    io.from_bytes("a string")
  with pytest.raises(AudioError, match="^me.wav: cannot read audio: Error opening the data: "):
    io.from_bytes(b"RIFF0000WAVEjunk", name="me.wav")  # no "<_io.BytesIO object at 0x...>"
  long = io.to_wav_bytes(np.full(16160, 0.1, np.float32), 16000)
  with pytest.raises(AudioError, match=r"me.wav: too long, 1.01 s; at most 1 s \(split longer recordings\)$"):
    io.from_bytes(long, max_seconds=1.0, name="me.wav")


@pytest.mark.parametrize("x, match", [
    # (channels, time) was resampled along its 2 channels: shape (1, 16000) of garbage
    (np.zeros((2, 1600), np.float32), r"x: expected 1-D .* got shape \(2, 1600\); transpose"),
    (np.float32(0.5), r"x: expected 1-D .* got shape \(\)"),  # an IndexError inside scipy
    (np.zeros((4, 4, 4)), r"got shape \(4, 4, 4\)"),
    (np.zeros(100) + 1j, "x: expected real numbers, got dtype complex128"),  # imaginary part dropped
    (np.array(["a", "b"]), "x: expected real numbers"),
])
def test_resample_refuses_what_is_not_time_first_real_audio(x, match):
  with pytest.raises(ParameterError, match=match):
    io.resample(x, 16000, 8000)


def test_validate_checks_max_seconds_and_load_checks_the_path_type():
  x = np.zeros(1600, np.float32)
  x[0] = 0.1
  for bad in ("10", float("nan"), -1.0, None):  # NaN turned the limit off, "10" a TypeError
    with pytest.raises(ParameterError, match="max_seconds: expected seconds > 0"):
      io.validate(x, 16000, max_seconds=bad)
  for bad in (None, 5, b"a.wav"):  # TypeError from pathlib before
    with pytest.raises(ParameterError, match="path: expected a file path"):
      io.load(bad)
