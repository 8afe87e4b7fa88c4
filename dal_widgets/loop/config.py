"""Configurations of a DAL training run: loss, data, training (frozen, hashable, JSON round trip).

`TrainConfig` holds everything a run needs (it nests a `LossConfig` and a `DataConfig`), so one
JSON document describes a run: it is stored in every checkpoint and read by the `dal` CLI.
`default_config()` is a short CPU run; `config_for(name)` gives the named presets in PRESETS.
"""
import dataclasses
import math

from dal_widgets.aid.seanet import SEANET_SIZES, SeanetConfig
from dal_widgets.audio.io import MAX_SR, MIN_SR
from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram import Audiogram
from dal_widgets.hearing.presets import PRESET_NAMES

LOSS_KINDS = ("l1", "l2")
COMPRESSIONS = ("log", "power", "none")
NOISE_KINDS = ("babble", "speech_shaped", "white")
DECAYS = ("cosine", "constant")
STYLES = ("v2", "v3")
# Longest example or evaluation clip, s: CARFAC's gradient keeps the whole clip's NAP, and the
# bundled sentences are 2-4 s; a minute is far past any use and still fits in memory.
MAX_CLIP_S = 60.0
# Most (recording, noise) pairs in one evaluation: its clips are held in memory (1000 pairs of 4 s
# sentences at 2 SNRs are 1 GB at 16 kHz) and take hours on a CPU; a standard error of STOI is
# below 0.01 long before that.
MAX_EVAL_CLIPS = 1000
# Largest batch: one step holds the batch's audio and CARFAC's gradient memory for it (batch 64
# x 1 s takes 18.6 GB on an H200, bench/RESULTS.md); 1024 is past any single machine.
MAX_BATCH_SIZE = 1024
# SNRs beyond +-60 dB are quiet or noise alone for every metric used here (speech at 65 dB SPL
# would face noise at 5 or 125 dB SPL).
MAX_SNR_DB = 60.0


def _check_number(name, value, *, low=-math.inf, high=math.inf, low_open=False):
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  if not (ok and (value > low if low_open else value >= low) and value <= high):
    bounds = [f"{'>' if low_open else '>='} {low}"] if low > -math.inf else []
    bounds += [f"<= {high}"] if high < math.inf else []
    raise ParameterError(f"{name}: expected a finite number {' and '.join(bounds)}, got {value!r}")


def _check_int(name, value, *, low=0, high=None):
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ParameterError(f"{name}: expected an int >= {low}, got {value!r}")
  if high is not None and value > high:
    raise ParameterError(f"{name}: expected at most {high}, got {value}")


def _check_choice(name, value, choices):
  if value not in choices:
    raise ParameterError(f"{name}: expected one of {choices}, got {value!r}")


def _as_tuple(config, name):
  """Stores a list field as a tuple (JSON gives lists; dataclasses must stay hashable)."""
  value = getattr(config, name)
  if isinstance(value, list):
    object.__setattr__(config, name, tuple(value))


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The DAL loss (see losses.py): weights of its terms and how NAPs are compared.

  Attributes:
    w_nap: Weight of the NAP term L(NAP_imp(aided), NAP_norm(clean)).
    w_sai: Weight of the SAI term on the stabilized auditory images of both NAPs.
    kind: "l1" (mean absolute error) or "l2" (mean squared error).
    compress: Applied to NAP and SAI values before comparing: "log" -> log1p(v / scale),
      "power" -> (v + POWER_EPS)**power - POWER_EPS**power, "none" -> v (negative values are
      clipped to 0 for "log" and "power").
    compress_scale: NAP value at which "log" compression bends (NAP units).
    compress_power: Exponent of "power" compression, in (0, 1].
    sai_frame_ms: Hop between SAI frames, ms.
    sai_width_ms: Width of an SAI frame (all lags), ms.
    level_ceiling_db_spl: Output rms level above which the level regulariser acts, dB SPL.
    w_level: Weight of the level regulariser ((excess dB / 10 dB)^2 per clip).
    w_spectral: Weight of the multi-resolution STFT magnitude L1 between aided and clean.
    spectral_fft_sizes: FFT sizes of that term (Hann windows, hop = size / 4).
    spectral_ignore_fixed_gain: Remove each bin's mean log-magnitude difference over time before
      the L1, so the term penalises noise and envelope distortion but not a fixed gain.
  """
  w_nap: float = 1.0
  w_sai: float = 0.5  # our choice: SAI values are blends of NAP values, same scale; NAP leads
  kind: str = "l1"  # robust to the large onsets of NAPs
  compress: str = "log"
  compress_scale: float = 0.1  # ~ mean NAP of speech at 65 dB SPL (measured: 0.13, v3, 16 kHz)
  compress_power: float = 0.3  # Stevens-like loudness exponent
  sai_frame_ms: float = 25.0  # 40 frames per second: several per syllable
  sai_width_ms: float = 20.0  # covers pitch periods down to 50 Hz (DESIGN / golden SAI)
  level_ceiling_db_spl: float = 85.0  # our choice: 20 dB above conversational speech (65)
  w_level: float = 1.0
  w_spectral: float = 0.0  # off by default: the DAL objective is the auditory one
  spectral_fft_sizes: tuple = (128, 256, 512, 1024)  # 8..64 ms at 16 kHz
  spectral_ignore_fixed_gain: bool = True  # a hearing aid must be free to apply gain

  def __post_init__(self):
    _as_tuple(self, "spectral_fft_sizes")
    for name in ("w_nap", "w_sai", "w_level", "w_spectral"):
      _check_number(name, getattr(self, name), low=0.0)
    _check_choice("kind", self.kind, LOSS_KINDS)
    _check_choice("compress", self.compress, COMPRESSIONS)
    _check_number("compress_scale", self.compress_scale, low=0.0, low_open=True)
    _check_number("compress_power", self.compress_power, low=0.0, high=1.0, low_open=True)
    _check_number("sai_frame_ms", self.sai_frame_ms, low=0.0, low_open=True)
    _check_number("sai_width_ms", self.sai_width_ms, low=0.0, low_open=True)
    _check_number("level_ceiling_db_spl", self.level_ceiling_db_spl, low=0.0, high=140.0)
    if not self.spectral_fft_sizes or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 8 for n in self.spectral_fft_sizes):
      raise ParameterError(f"spectral_fft_sizes: expected a non-empty tuple of ints >= 8, "
                           f"got {self.spectral_fft_sizes!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Noisy-speech training data (see data.py).

  Attributes:
    sr: Sample rate, Hz.
    clip_s: Length of each training example, s.
    snr_db_range: (low, high) SNR in dB, drawn uniformly per example.
    speech_level_db_spl: rms level of the speech in each example, dB SPL.
    noise_kinds: Noise types to draw from, any of NOISE_KINDS.
    noise_probs: Probability of each entry of noise_kinds (normalised).
    babble_talkers: Recordings summed into one babble (fewer if fewer other talkers exist).
    corpus: Folder of speech files (searched recursively), or None for the bundled clips.
    held_out_fraction: Fraction of recordings kept out of training, for evaluation.
    seed: Seeds the train / held-out split and every batch.
  """
  sr: int = 16000  # DAL default: CARFAC has 65 channels at 16 kHz
  clip_s: float = 1.0
  snr_db_range: tuple = (-5.0, 10.0)  # DESIGN: SNR -5..10 dB
  speech_level_db_spl: float = 65.0  # conversational speech
  noise_kinds: tuple = NOISE_KINDS
  noise_probs: tuple = (0.5, 0.3, 0.2)  # our choice: mostly the cocktail party
  babble_talkers: int = 4
  corpus: str | None = None
  held_out_fraction: float = 0.25  # 3 of the 12 bundled clips on average
  seed: int = 0

  def __post_init__(self):
    for name in ("snr_db_range", "noise_kinds", "noise_probs"):
      _as_tuple(self, name)
      if not isinstance(getattr(self, name), tuple):  # len(None) below was a TypeError
        raise ParameterError(f"{name}: expected a tuple or list, got {getattr(self, name)!r}")
    _check_int("sr", self.sr, low=MIN_SR, high=MAX_SR)  # the rates CARFAC is designed for
    _check_number("clip_s", self.clip_s, low=0.0, high=MAX_CLIP_S, low_open=True)
    if (len(self.snr_db_range) != 2 or self.snr_db_range[0] > self.snr_db_range[1]):
      raise ParameterError(f"snr_db_range: expected (low, high) with low <= high, "
                           f"got {self.snr_db_range!r}")
    for i, v in enumerate(self.snr_db_range):
      _check_number(f"snr_db_range[{i}]", v, low=-MAX_SNR_DB, high=MAX_SNR_DB)
    _check_number("speech_level_db_spl", self.speech_level_db_spl, low=0.0, high=120.0)
    if not self.noise_kinds or any(k not in NOISE_KINDS for k in self.noise_kinds):
      raise ParameterError(f"noise_kinds: expected a non-empty tuple of {NOISE_KINDS}, "
                           f"got {self.noise_kinds!r}")
    if len(self.noise_probs) != len(self.noise_kinds):
      raise ParameterError(f"noise_probs: expected {len(self.noise_kinds)} values (one per noise "
                           f"kind), got {len(self.noise_probs)}")
    for i, p in enumerate(self.noise_probs):
      _check_number(f"noise_probs[{i}]", p, low=0.0)
    if sum(self.noise_probs) <= 0:
      raise ParameterError(f"noise_probs: expected a positive sum, got {self.noise_probs!r}")
    _check_int("babble_talkers", self.babble_talkers, low=1)
    if self.corpus is not None and not isinstance(self.corpus, str):
      raise ParameterError(f"corpus: expected a folder path (str) or None, got {self.corpus!r}")
    _check_number("held_out_fraction", self.held_out_fraction, low=0.0, high=1.0)
    _check_int("seed", self.seed)

  @property
  def n_samples(self) -> int:
    """Samples per example, round(clip_s * sr)."""
    return int(round(self.clip_s * self.sr))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """A whole DAL training run.

  Attributes:
    model: SEANet size name (a key of aid.seanet.SEANET_SIZES) or a SeanetConfig.
    audiogram: Listener: a preset name (hearing.presets.PRESET_NAMES) or an Audiogram.
    style: CARFAC style of both ears, "v3" (synapse) or "v2".
    steps: Optimizer steps in total (a resumed run continues up to this number).
    batch_size: Examples per step (over all devices; must divide by the device count).
    learning_rate: Peak learning rate of AdamW.
    warmup_steps: Steps of linear warm-up to learning_rate (the first at learning_rate /
      warmup_steps).
    decay: "cosine" (to final_lr_fraction * learning_rate at `steps`) or "constant".
    final_lr_fraction: End of the cosine decay, as a fraction of learning_rate.
    weight_decay: AdamW decoupled weight decay.
    clip_norm: Gradients are clipped to this global norm.
    seed: Seeds the parameters and the per-step keys (data has its own seed).
    checkpoint_every: Save a checkpoint every this many steps (0: only at the end).
    log_every: Log / update the progress bar every this many steps.
    max_bad_steps: Consecutive non-finite steps tolerated before TrainingError.
    loss: LossConfig.
    data: DataConfig.
  """
  model: str | SeanetConfig = "small"
  audiogram: str | Audiogram = "N3"  # Bisgaard moderate flat/sloping loss
  style: str = "v3"
  steps: int = 200
  batch_size: int = 4
  learning_rate: float = 1e-3  # our choice; fine for the zero-started residual of SEANet
  warmup_steps: int = 10
  decay: str = "cosine"
  final_lr_fraction: float = 0.1
  weight_decay: float = 1e-4
  clip_norm: float = 1.0
  seed: int = 0
  checkpoint_every: int = 100
  log_every: int = 10
  max_bad_steps: int = 5
  loss: LossConfig = LossConfig()
  data: DataConfig = DataConfig()

  def __post_init__(self):
    if isinstance(self.model, str):
      _check_choice("model", self.model, tuple(SEANET_SIZES))
    elif not isinstance(self.model, SeanetConfig):
      raise ParameterError(f"model: expected a size name {tuple(SEANET_SIZES)} or a SeanetConfig, "
                           f"got {self.model!r}")
    if isinstance(self.audiogram, str):
      _check_choice("audiogram", self.audiogram, PRESET_NAMES)
    elif not isinstance(self.audiogram, Audiogram):
      raise ParameterError(f"audiogram: expected a preset name {PRESET_NAMES} or an Audiogram, "
                           f"got {self.audiogram!r}")
    _check_choice("style", self.style, STYLES)
    _check_int("steps", self.steps, low=1)
    _check_int("batch_size", self.batch_size, low=1, high=MAX_BATCH_SIZE)
    _check_number("learning_rate", self.learning_rate, low=0.0, low_open=True)
    _check_int("warmup_steps", self.warmup_steps)
    _check_choice("decay", self.decay, DECAYS)
    _check_number("final_lr_fraction", self.final_lr_fraction, low=0.0, high=1.0)
    _check_number("weight_decay", self.weight_decay, low=0.0)
    _check_number("clip_norm", self.clip_norm, low=0.0, low_open=True)
    _check_int("seed", self.seed)
    _check_int("checkpoint_every", self.checkpoint_every)
    _check_int("log_every", self.log_every, low=1)
    _check_int("max_bad_steps", self.max_bad_steps, low=1)
    if not isinstance(self.loss, LossConfig):
      raise ParameterError(f"loss: expected a LossConfig, got {type(self.loss).__name__}")
    if not isinstance(self.data, DataConfig):
      raise ParameterError(f"data: expected a DataConfig, got {type(self.data).__name__}")

  @property
  def model_config(self) -> SeanetConfig:
    """The SEANet architecture: SEANET_SIZES[model] or the SeanetConfig given."""
    return SEANET_SIZES[self.model] if isinstance(self.model, str) else self.model

  def replace(self, **changes) -> "TrainConfig":
    """A copy with some fields changed (validated again)."""
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    """Plain-JSON form (lists, numbers, strings, None); inverse of `from_dict`."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    if isinstance(self.model, SeanetConfig):
      out["model"] = _plain(dataclasses.asdict(self.model))
    if isinstance(self.audiogram, Audiogram):
      out["audiogram"] = self.audiogram.to_dict()
    out["loss"] = _plain(dataclasses.asdict(self.loss))
    out["data"] = _plain(dataclasses.asdict(self.data))
    return out

  @classmethod
  def from_dict(cls, data: dict) -> "TrainConfig":
    """Builds a TrainConfig from `to_dict` output (missing fields take their defaults).

    Raises:
      ParameterError: unknown field names or invalid values, naming the field.
    """
    if not isinstance(data, dict):
      raise ParameterError(f"config: expected a dict, got {type(data).__name__}")
    data = dict(data)
    _check_fields("config", data, cls)
    if isinstance(data.get("model"), dict):
      _check_fields("model", data["model"], SeanetConfig)
      model = {k: tuple(v) if isinstance(v, list) else v for k, v in data["model"].items()}
      data["model"] = SeanetConfig(**model)
    if isinstance(data.get("audiogram"), dict):
      data["audiogram"] = Audiogram.from_dict(data["audiogram"])
    for name, sub in (("loss", LossConfig), ("data", DataConfig)):
      if name in data:
        if not isinstance(data[name], dict):
          raise ParameterError(f"{name}: expected a dict, got {type(data[name]).__name__}")
        _check_fields(name, data[name], sub)
        data[name] = sub(**data[name])
    return cls(**data)


def _plain(d: dict) -> dict:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _check_fields(where, data, cls):
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - known)
  if unknown:
    raise ParameterError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(known)}")


# Warm-up of a run cut shorter than its preset's warm-up (e.g. `dal train --config paper --steps
# 400`: the paper preset warms up over 1000 steps, so the rate would never reach its peak nor
# decay): a twentieth of the run, as the short GPU runs in bench/RESULTS.md were trained.
SHORT_RUN_WARMUP_SHARE = 1 / 20


def short_run_warmup(steps: int) -> int:
  """Warm-up steps for a run of `steps` steps: SHORT_RUN_WARMUP_SHARE of them, at least 1."""
  return max(1, int(steps * SHORT_RUN_WARMUP_SHARE))


def fitting_warmup(warmup_steps: int, steps: int) -> int:
  """`warmup_steps`, or short_run_warmup(steps) when they do not fit a run of `steps` steps."""
  return warmup_steps if warmup_steps < steps else short_run_warmup(steps)


def default_config() -> TrainConfig:
  """A short run of the small SEANet for the N3 listener (minutes on a laptop CPU)."""
  return TrainConfig()


PRESETS = {
    # A visible fine-tune inside a notebook on a 2-core CPU: ~40 steps of two 0.5 s examples.
    "widget": TrainConfig(model="small", steps=40, batch_size=2, learning_rate=2e-3,
                          warmup_steps=4, checkpoint_every=20, log_every=1,
                          data=DataConfig(clip_s=0.5)),
    # The default CPU run.
    "default": TrainConfig(),
    # Research scale on a GPU: the SEANet paper architecture, 1 s examples, long cosine schedule.
    # Batch 64: CARFAC's time scan makes a step latency-bound, so a larger batch is nearly free
    # (measured on one H100: batch 16 0.78 s/step, batch 64 1.08 s/step = 59 s of audio per s).
    # A short run that already beats NAL-R+WDRC for N3 and S2 (bench/RESULTS.md): steps=400,
    # learning_rate=2e-3, warmup_steps=20, loss.w_spectral=0.1.
    "paper": TrainConfig(model="paper", steps=100_000, batch_size=64, learning_rate=3e-4,
                         warmup_steps=1000, checkpoint_every=2000, log_every=100,
                         data=DataConfig(clip_s=1.0)),
}

# Peak learning rate of a "widget" fine-tune that continues the bundled (already trained) aid.
# The preset's 2e-3 suits a fresh, identity-started SEANet; on the bundled N3 aid, 20 steps at
# 2e-3 raised the training loss (0.44 -> 0.52) and lowered a clip's NAP correlation
# (0.68 -> 0.60), while 2e-4 lowered the loss (0.46) and raised the correlation (0.69).
WIDGET_CONTINUE_LEARNING_RATE = 2e-4

def config_for(name: str) -> TrainConfig:
  """A named preset configuration (see PRESETS: "widget", "default", "paper").

  Raises:
    ParameterError: unknown name.
  """
  if name not in PRESETS:
    raise ParameterError(f"name: expected one of {tuple(PRESETS)}, got {name!r}")
  return PRESETS[name]
