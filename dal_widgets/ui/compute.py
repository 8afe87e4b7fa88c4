"""Thin adapters from widgets to the science layers: one lower-layer call each, numpy out.

Widgets take a `compute` object with these functions (this module by default), so tests can pass
fast fakes. Nothing here is science: the adapters pick the app's settings (sample rate, display SAI
design), convert to numpy, and pad inputs to a length quantum so sounds of similar length share
one compiled CARFAC / SAI / SEANet (CARFAC and the SAI are causal, so padding at the end does not
change what comes before it, and the padding is cropped off again).
"""
import functools
import io
import math

import jax
import numpy as np
import soundfile as sf

from dal_widgets import audio
from dal_widgets.aid.wdrc import master_hearing_aid
from dal_widgets.audio import stimuli
from dal_widgets.cochlea import designs, sai
from dal_widgets.errors import AudioError, ParameterError
from dal_widgets.hearing.fit import fit_cochlea
from dal_widgets.hearing.simulator import simulate_hearing_loss

SR = audio.DEFAULT_SR  # Hz; the apps' rate: the bundled clips' rate, 65 CARFAC channels
SPEECH_LEVEL_DB_SPL = 65.0  # conversational speech (DESIGN: speech at ~65 dB SPL)
PAD_QUANTUM_S = 0.25  # inputs are zero-padded to a multiple of this: few compilations per app
SAI_FRAME_MS = 25.0  # display SAI hop: 40 frames/s (as the DAL loss's SAI, loop.config.LossConfig)
SAI_WIDTH_MS = 25.0  # display SAI width: pitch periods down to 50 Hz in the 20 ms of past lags
SAI_FUTURE_MS = 5.0  # a little of the future: the trigger peak is not at the frame's edge
NOISE_KINDS = ("babble", "speech-shaped", "quiet")  # what the sound pickers offer
# Upload rates, Hz: from half the telephone rate (speech up to 2 kHz, vowel formants included)
# to studio recordings (384 kHz); outside, the file holds no speech to hear or is not a recording.
UPLOAD_SR_RANGE_HZ = (4000, 384000)
STIMULI = ("vowel /a/", "vowel /i/", "vowel /u/", "harmonic complex", "click train")
# Formants F1-F3 of adult male vowels, Hz (Peterson & Barney 1952, table II).
VOWEL_FORMANTS_HZ = {"vowel /a/": (730.0, 1090.0, 2440.0), "vowel /i/": (270.0, 2290.0, 3010.0),
                     "vowel /u/": (300.0, 870.0, 2240.0)}


def _padded(x: np.ndarray, quantum: int) -> np.ndarray:
  n = quantum * max(1, math.ceil(x.shape[0] / quantum))
  return np.pad(x, [(0, n - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def cf_hz(sr: float = SR) -> np.ndarray:
  """Channel CFs of the CARFAC design at `sr`, Hz, shape [n_ch], highest first."""
  return np.asarray(designs.cf_hz(float(sr)))


def clips() -> list:
  """The bundled speech clips (audio.list_clips): ClipInfo with name, voice, text, duration_s."""
  return audio.list_clips()


def load_clip(name: str, sr: int = SR) -> np.ndarray:
  """A bundled clip as float32 [n_samp] at `sr` (65 dB SPL rms)."""
  return audio.load_clip(name, sr=sr)[0]


def decode(data: bytes, *, max_seconds: float, sr: int = SR, name: str | None = None):
  """Decodes an uploaded sound file (audio.from_bytes), mixes it to mono and resamples it to `sr`
  Hz: (float32 [n_samp], the file's own rate in Hz, its number of channels). `name` names the
  file in errors. Silence and samples beyond +-1 raise no warning: the caller checks them.

  Raises:
    AudioError, ParameterError: unreadable, empty, too long, or a rate outside UPLOAD_SR_RANGE_HZ.
  """
  data = bytes(data)
  try:
    info = sf.info(io.BytesIO(data))
  except Exception:  # noqa: BLE001 - unreadable: from_bytes below says why, in its own words
    info = None
  low, high = UPLOAD_SR_RANGE_HZ
  if info is not None and not low <= info.samplerate <= high:
    raise AudioError(f"{name or 'the file'}: a sample rate of {info.samplerate} Hz is outside the "
                     f"{low}..{high} Hz of sound recordings")
  # checks everything; silence and peaks are the caller's to report (SoundPicker.load_upload)
  x, _ = audio.from_bytes(data, sr=sr, max_seconds=max_seconds, name=name, warn=False)
  info = info or sf.info(io.BytesIO(data))  # readable: from_bytes has just read it
  return x, int(info.samplerate), int(info.channels)


def noise(kind: str, n: int, sr: int, *, talkers=(), seed: int = 0) -> np.ndarray:
  """A masker of `n` samples: "babble" of `talkers` (audio.babble) or "speech-shaped" noise.

  Raises:
    ParameterError: unknown kind (including "quiet", which has no noise).
  """
  rng = np.random.default_rng(seed)
  if kind == "babble":
    return audio.babble(list(talkers), n, rng, n_talkers=min(4, len(talkers)))
  if kind == "speech-shaped":
    return audio.speech_shaped_noise(n, sr, rng)
  raise ParameterError(f"kind: expected 'babble' or 'speech-shaped', got {kind!r}")


def mix(speech: np.ndarray, masker: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
  """(noisy, clean): speech at SPEECH_LEVEL_DB_SPL plus the masker at `snr_db` (audio.mix_at_snr)."""
  noisy, clean, _ = audio.mix_at_snr(speech, masker, snr_db, speech_level_db_spl=SPEECH_LEVEL_DB_SPL)
  return np.asarray(noisy, np.float32), np.asarray(clean, np.float32)


def at_speech_level(x: np.ndarray) -> np.ndarray:
  """x scaled to SPEECH_LEVEL_DB_SPL rms (audio.set_level)."""
  return np.asarray(audio.set_level(x, SPEECH_LEVEL_DB_SPL), np.float32)


def stimulus(kind: str, f0_hz: float, dur_s: float, sr: int = SR) -> np.ndarray:
  """A test sound of audio.stimuli at 65 dB SPL: one of STIMULI, with pitch / rate `f0_hz`."""
  if kind in VOWEL_FORMANTS_HZ:
    return stimuli.vowel(f0_hz, VOWEL_FORMANTS_HZ[kind], dur_s, sr, level_db_spl=SPEECH_LEVEL_DB_SPL)
  if kind == "harmonic complex":
    return stimuli.harmonic_complex(f0_hz, dur_s, sr, level_db_spl=SPEECH_LEVEL_DB_SPL)
  if kind == "click train":
    return stimuli.click_train(f0_hz, dur_s, sr, level_db_spl=SPEECH_LEVEL_DB_SPL)
  raise ParameterError(f"kind: expected one of {STIMULI}, got {kind!r}")


def fit_ear(audiogram, sr: float = SR, *, refine: bool = False):
  """ImpairedEar fitted to `audiogram` (hearing.fit.fit_cochlea): fast open loop, or refined."""
  return fit_cochlea(audiogram, float(sr), refine=refine)


def nap(x: np.ndarray, sr: float = SR, ear=None) -> np.ndarray:
  """NAP of x through the normal CARFAC, or through `ear` (an ImpairedEar) when given.

  Returns:
    float32 [n_samp, n_ch], channel 0 = highest CF.
  """
  x = np.asarray(x, np.float32)
  weights = {} if ear is None else dict(style=ear.style, ohc_health=ear.ohc_health,
                                        ihc_gain=ear.ihc_gain)
  out = designs.cochleagram(_padded(x, int(PAD_QUANTUM_S * sr)), float(sr), bm=False, **weights)
  return np.asarray(out.nap[:x.shape[0]], np.float32)


def sai_params(sr: float = SR, n_ch: int = 65) -> sai.SaiParams:
  """The display SAI design (SAI_FRAME_MS hop, SAI_WIDTH_MS wide, SAI_FUTURE_MS future lags)."""
  return sai.sai_params_for(float(sr), n_ch, frame_ms=SAI_FRAME_MS, width_ms=SAI_WIDTH_MS,
                            future_ms=SAI_FUTURE_MS)


def sai_lags_ms(params: sai.SaiParams, sr: float = SR) -> np.ndarray:
  """Lag of each SAI column, ms, shape [sai_width]."""
  return 1000.0 * sai.sai_lags_s(params, float(sr))


@functools.lru_cache(maxsize=4)
def _jitted_sai(params: sai.SaiParams):
  return jax.jit(functools.partial(sai.sai_frames, params=params))


def sai_frames(nap_: np.ndarray, params: sai.SaiParams) -> np.ndarray:
  """SAI frames of a NAP (cochlea.sai.sai_frames, jitted per design), float32
  [n_frames, n_ch, sai_width]; frame i has seen NAP samples [0, (i + 1) * hop)."""
  n_frames = nap_.shape[0] // params.input_segment_width
  if n_frames == 0:
    raise ParameterError(f"nap: expected at least {params.input_segment_width} samples (one SAI "
                         f"frame), got {nap_.shape[0]}")
  padded = _padded(np.asarray(nap_, np.float32), params.input_segment_width * 10)
  return np.asarray(_jitted_sai(params)(padded))[:n_frames]


def heard(x: np.ndarray, sr: float, audiogram) -> np.ndarray:
  """x as the listener of `audiogram` hears it (hearing.simulate_hearing_loss), float32.

  Aided signals may exceed digital full scale (rms 1.0 = 100 dB SPL: a loud aid is not an error in
  the model); the simulator does not warn about it, and the player flags clipping itself.
  """
  return simulate_hearing_loss(x, sr, audiogram)


def nalr(x: np.ndarray, sr: float, audiogram) -> np.ndarray:
  """x through the prescriptive baseline, NAL-R + WDRC (aid.wdrc.master_hearing_aid), float32."""
  return np.asarray(master_hearing_aid(np.asarray(x, np.float32), sr, audiogram), np.float32)


def dal(aid, x: np.ndarray) -> np.ndarray:
  """x through a trained DAL hearing aid (loop.train.enhance); `aid` has params, model_config."""
  from dal_widgets.loop.train import enhance  # heavy import: only once a model exists
  x = np.asarray(x, np.float32)
  y = enhance(aid.params, aid.model_config, _padded(x, int(PAD_QUANTUM_S * SR)))
  return y[:x.shape[0]]


def evaluation(noisy: np.ndarray, clean: np.ndarray, snr_db: float, sr: float, ear, aided: dict):
  """EvaluationTable (loop.evaluate.evaluate) of one clip for already computed system outputs,
  without HASPI v2: it would make this last stage about ten times longer (4.6 instead of 0.4 s for
  three systems on a 2 s clip, 2-core CPU), and a new picture waits for the stage to end.

  Args:
    noisy, clean: The clip, float32 [n_samp].
    snr_db: Its SNR (a label in the table).
    sr: Sample rate in Hz.
    ear: The ImpairedEar listening.
    aided: {system name: aided waveform [n_samp]} (e.g. "unaided": noisy itself).
  """
  from dal_widgets.loop import evaluate
  systems = [evaluate.System(name, lambda x, sr, y=y: y) for name, y in aided.items()]
  return evaluate.evaluate([(noisy, clean, snr_db)], sr, ear, systems, haspi=False)


def train(cfg, *, ear, on_progress, should_stop, init_params=None):
  """A DAL fine-tune in memory (loop.train.train); returns its TrainResult."""
  from dal_widgets.loop.train import train as train_loop
  return train_loop(cfg, ear=ear, on_progress=on_progress, should_stop=should_stop,
                    init_params=init_params)


def pretrained_aid():
  """(params, SeanetConfig, audiogram name, steps) of the bundled model, or None."""
  from dal_widgets.loop.pretrained import load_pretrained
  from dal_widgets.loop.train import listener_audiogram
  found = load_pretrained()
  if found is None:
    return None
  params, cfg, step = found
  return params, cfg.model_config, listener_audiogram(cfg), step
