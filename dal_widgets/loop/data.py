"""Noisy-speech examples for DAL training and evaluation (DESIGN.md, "The DAL loop").

An example is a random crop of one speech recording (zero-padded when the recording is shorter),
scaled to the calibrated speech level, plus a noise of a randomly chosen kind -- multi-talker
babble made of OTHER talkers' recordings, speech-shaped noise or white noise -- at a random SNR.
Level and SNR are exact over the crop (audio.mix_at_snr). Recordings come from the bundled clips
or a corpus folder, split into train / held-out by a stable hash (audio.corpus.split); the talker
of a recording is its flite voice (bundled) or its top-level sub-folder (corpus, e.g. a
LibriSpeech speaker), or the file itself in a flat folder.

Everything is deterministic: batch `step` of a source uses np.random.default_rng((seed, step)).
"""
import collections
import dataclasses
import warnings
from pathlib import Path

import jax
import numpy as np

from dal_widgets import audio
from dal_widgets.errors import AudioError, ParameterError
from dal_widgets.loop.config import MAX_CLIP_S, MAX_EVAL_CLIPS, DataConfig

SPLITS = ("train", "held_out")
HELD_OUT_STREAM = 1  # rng stream of held-out examples, apart from training steps (stream 0)
CROP_TRIES = 8  # random crop starts tried before taking the loudest one
MIN_CROP_REL_DB = -15.0  # a crop this far below its recording's rms is mostly pause: try again
CACHE_RECORDINGS = 256  # decoded corpus files kept in memory (a few MB each at most)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
  """A batch of examples (a JAX pytree; shard it on the leading axis).

  Attributes:
    noisy: Speech plus noise, shape [batch, n_samp], float32, digital units (rms 1.0 = 100 dB SPL).
    clean: The speech alone, same shape, at the configured speech level.
    snr_db: The SNR of each example, dB, shape [batch], float32.
  """
  noisy: np.ndarray
  clean: np.ndarray
  snr_db: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Recording:
  name: str  # clip name or path relative to the corpus root
  talker: str
  path: Path | None  # None for bundled clips


class SpeechSource:
  """The recordings of one split of the configured speech, and examples made from them.

  Args:
    cfg: DataConfig (sample rate, clip length, SNRs, noise kinds, corpus, split, seed).
    split: "train" or "held_out".

  Raises:
    ParameterError: bad split, or the split holds no recording (change held_out_fraction or seed).
  """

  def __init__(self, cfg: DataConfig, split: str = "train"):
    if not isinstance(cfg, DataConfig):
      raise ParameterError(f"cfg: expected a DataConfig, got {type(cfg).__name__}")
    if split not in SPLITS:
      raise ParameterError(f"split: expected one of {SPLITS}, got {split!r}")
    self.cfg, self.split = cfg, split
    self._all = _recordings(cfg)
    chosen = _split(self._all, cfg)[SPLITS.index(split)]
    if not chosen:
      raise ParameterError(f"split: the {split!r} split of {len(self._all)} recordings is empty "
                           f"with held_out_fraction={cfg.held_out_fraction}, seed={cfg.seed}; "
                           "change either")
    self.recordings = tuple(chosen)
    self._cache = collections.OrderedDict()
    self._unusable = {}  # name -> why (found when first loaded; skipped from then on)

  @property
  def names(self) -> tuple:
    """Names of the recordings of this split."""
    return tuple(r.name for r in self.recordings)

  def load(self, recording: _Recording) -> np.ndarray:
    """The waveform of a recording at cfg.sr, float32 (cached).

    Raises:
      AudioError: unreadable, invalid or digitally silent audio (naming the file).
    """
    if recording.name not in self._cache:
      if recording.path is None:
        x, _ = audio.load_clip(recording.name, sr=self.cfg.sr)
      else:
        x, _ = audio.load(recording.path, sr=self.cfg.sr)
      if not np.any(x):
        raise AudioError(f"{recording.path or recording.name}: the recording is digital silence")
      self._cache[recording.name] = x
      if len(self._cache) > CACHE_RECORDINGS:
        self._cache.popitem(last=False)
    self._cache.move_to_end(recording.name)
    return self._cache[recording.name]

  def _usable(self, recording: _Recording):
    """The recording's waveform, or None when it cannot be used (warned about once)."""
    if recording.name in self._unusable:
      return None
    try:
      return self.load(recording)
    except AudioError as err:
      self._unusable[recording.name] = str(err)
      warnings.warn(f"skipping a recording of the corpus: {err}", stacklevel=3)
      return None

  def _draw(self, rng: np.random.Generator):
    """A random usable recording of this split and its waveform; unusable ones are redrawn (the
    draws stay a function of the rng, whether or not a bad file was met before).

    Raises:
      AudioError: no recording of the split can be used.
    """
    while not set(self.names) <= self._unusable.keys():
      recording = self.recordings[rng.integers(len(self.recordings))]
      x = self._usable(recording)
      if x is not None:
        return recording, x
    raise AudioError(f"none of the {len(self.recordings)} recordings of the {self.split!r} split "
                     f"can be used, e.g. {next(iter(self._unusable.values()))}")

  def babble_pool(self, talker: str) -> list:
    """Recordings babble may use against `talker`: other talkers of this split, else of any split.

    Raises:
      ParameterError: no recording of another talker exists.
    """
    for pool in (self.recordings, self._all):
      others = [r for r in pool if r.talker != talker]
      if others:
        return others
    raise ParameterError(f"noise_kinds: babble needs recordings of at least two talkers, but "
                         f"every recording is by {talker!r}; drop 'babble' or add talkers")

  def make_batch(self, rng, batch_size: int) -> Batch:
    """A batch of random examples.

    Args:
      rng: A step number (int >= 0; uses np.random.default_rng((cfg.seed, rng))) or a numpy
        Generator.
      batch_size: Examples in the batch.

    Returns:
      Batch with noisy and clean of shape [batch_size, cfg.n_samples].
    """
    rng = _generator(rng, self.cfg.seed)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
        or batch_size < 1:
      raise ParameterError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    low, high = self.cfg.snr_db_range
    examples = [self.example(rng, (float(rng.uniform(low, high)),)) for _ in range(batch_size)]
    return _stack([e[0] for e in examples])

  def example(self, rng: np.random.Generator, snrs_db, *, n_samples=None, noise_kind=None,
              pad: bool = True):
    """One speech crop and one noise, mixed at each SNR of `snrs_db` (paired examples).

    Args:
      rng: numpy Generator.
      snrs_db: SNRs in dB.
      n_samples: Crop length; cfg.n_samples by default, 0 for the whole recording.
      noise_kind: One of cfg.noise_kinds to use; drawn with cfg.noise_probs when None.
      pad: Zero-pad a recording shorter than the crop (equal lengths, for batches); False uses
        the whole recording instead (evaluation: padding silence would change the metrics).

    Returns:
      List of (noisy, clean, snr_db), one per SNR, float32 waveforms of equal length.

    Recordings that cannot be read (or are digital silence) are skipped with a warning.

    Raises:
      AudioError: no recording of the split (or, for babble, of another talker) can be used.
    """
    return self._mix(rng, snrs_db, n_samples, noise_kind, pad)[1]

  def _mix(self, rng, snrs_db, n_samples, noise_kind, pad, recording=None):
    """(recording name, `example`'s list); from `recording` when given and usable."""
    cfg = self.cfg
    x = None if recording is None else self._usable(recording)
    if x is None:
      recording, x = self._draw(rng)
    n = cfg.n_samples if n_samples is None else (n_samples or x.size)
    n = n if pad else min(n, x.size)
    speech = _crop(x, n, rng)
    if noise_kind is None:
      probs = np.asarray(cfg.noise_probs, float)
      noise_kind = cfg.noise_kinds[rng.choice(len(probs), p=probs / probs.sum())]
    if noise_kind == "white":
      noise = audio.white_noise(n, rng)
    elif noise_kind == "speech_shaped":
      noise = audio.speech_shaped_noise(n, cfg.sr, rng)
    else:
      pool = self.babble_pool(recording.talker)
      talkers = [x for x in map(self._usable, pool) if x is not None]
      if not talkers:
        raise AudioError(f"noise_kinds: no usable recording of another talker for babble "
                         f"against {recording.talker!r}")
      noise = audio.babble(talkers, n, rng, n_talkers=min(cfg.babble_talkers, len(talkers)))
    out = []
    for snr_db in snrs_db:
      noisy, clean, _ = audio.mix_at_snr(speech, noise, float(snr_db),
                                         speech_level_db_spl=cfg.speech_level_db_spl)
      out.append((noisy.astype(np.float32), clean.astype(np.float32), float(snr_db)))
    return recording.name, out


def _generator(rng, seed):
  if isinstance(rng, np.random.Generator):
    return rng
  if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)) or rng < 0:
    raise ParameterError(f"rng: expected a step number (int >= 0) or a numpy Generator, "
                         f"got {rng!r}")
  return np.random.default_rng((seed, int(rng)))


def _recordings(cfg):
  if cfg.corpus is None:
    return [_Recording(c.name, c.voice, None) for c in audio.list_clips()]
  root = Path(cfg.corpus)
  out = []
  for path in audio.find_audio(root):
    parts = path.relative_to(root).parts
    out.append(_Recording(path.relative_to(root).as_posix(),
                          parts[0] if len(parts) > 1 else path.stem, path))
  return out


def _split(recordings, cfg):
  by_name = {r.name: r for r in recordings}
  train, held_out = audio.split([r.name for r in recordings],
                                held_out_fraction=cfg.held_out_fraction, seed=cfg.seed)
  return ([by_name[p.as_posix()] for p in train], [by_name[p.as_posix()] for p in held_out])


def _crop(x, n, rng):
  """n samples of x: a random crop that is not mostly pause, or x zero-padded at a random offset."""
  if x.size <= n:
    out = np.zeros(n, np.float32)
    offset = rng.integers(n - x.size + 1)
    out[offset:offset + x.size] = x
    return out
  floor = audio.rms(x) * 10.0 ** (MIN_CROP_REL_DB / 20.0)
  best, best_rms = None, -1.0
  for _ in range(CROP_TRIES):
    start = rng.integers(x.size - n + 1)
    level = audio.rms(x[start:start + n])
    if level >= floor:
      return x[start:start + n]
    if level > best_rms:
      best, best_rms = start, level
  return x[best:best + n]


def _stack(examples) -> Batch:
  return Batch(noisy=np.stack([e[0] for e in examples]),
               clean=np.stack([e[1] for e in examples]),
               snr_db=np.asarray([e[2] for e in examples], np.float32))


def _held_out_examples(cfg, snrs_db, n, n_samples, noise_kind, pad=True, source=False):
  if not isinstance(cfg, DataConfig):
    raise ParameterError(f"cfg: expected a DataConfig, got {type(cfg).__name__}")
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ParameterError(f"n: expected an int >= 1, got {n!r}")
  if not snrs_db:
    raise ParameterError(f"snrs_db: expected at least one SNR, got {snrs_db!r}")
  if noise_kind is not None and noise_kind not in cfg.noise_kinds:
    raise ParameterError(f"noise_kind: expected None or one of {cfg.noise_kinds}, "
                         f"got {noise_kind!r}")
  speech = SpeechSource(cfg, "held_out")
  # With sources (evaluation), crops take the recordings in turn, in an order fixed by the seed,
  # so that n crops cover min(n, recordings) of them: each is one unit of loop.paired's test.
  order = np.random.default_rng((cfg.seed, HELD_OUT_STREAM)).permutation(len(speech.recordings))
  out = []
  for i in range(n):
    rng = np.random.default_rng((cfg.seed, HELD_OUT_STREAM, i))
    turn = speech.recordings[order[i % len(order)]] if source else None
    name, examples = speech._mix(rng, snrs_db, n_samples, noise_kind, pad, turn)
    out.extend((*e, name) if source else e for e in examples)
  return out


def held_out_set(cfg: DataConfig, snrs=(0.0, 5.0), n: int = 4, *, noise_kind=None) -> Batch:
  """A fixed evaluation batch from held-out recordings: n crops, each mixed at every SNR.

  The same crop and noise are used at every SNR (paired), and the set depends only on cfg.

  Args:
    cfg: DataConfig.
    snrs: SNRs in dB.
    n: Number of (crop, noise) pairs.
    noise_kind: Fix the noise kind (one of cfg.noise_kinds); drawn per pair when None.

  Returns:
    Batch of n * len(snrs) examples of cfg.n_samples samples, ordered pair-major.
  """
  return _stack(_held_out_examples(cfg, tuple(snrs), n, cfg.n_samples, noise_kind))


def evaluation_clips(cfg: DataConfig, *, snrs_db=(0.0, 5.0), n_clips: int = 4, clip_s=None,
                     noise_kind=None) -> list:
  """Held-out (noisy, clean, snr_db, recording) clips for loop.evaluate (paired over SNRs, as
  held_out_set); `recording` names the held-out recording each crop comes from, so that
  loop.paired counts each recording once.

  Args:
    cfg: DataConfig.
    snrs_db: SNRs in dB.
    n_clips: Number of (recording, noise) pairs, at most MAX_EVAL_CLIPS.
    clip_s: Crop length in seconds (at most MAX_CLIP_S); None keeps whole recordings. Shorter
      recordings are used whole, not padded (lengths then differ).
    noise_kind: Fix the noise kind; drawn per pair when None.

  Returns:
    List of n_clips * len(snrs_db) tuples (noisy [n_samp], clean [n_samp], snr_db, recording).
  """
  if clip_s is not None and not (isinstance(clip_s, (int, float)) and not isinstance(clip_s, bool)
                                 and 0 < clip_s <= MAX_CLIP_S):  # NaN fails too
    raise ParameterError(f"clip_s: expected None or seconds in (0, {MAX_CLIP_S:g}], got {clip_s!r}")
  if isinstance(n_clips, (int, np.integer)) and n_clips > MAX_EVAL_CLIPS:
    raise ParameterError(f"n_clips: expected at most {MAX_EVAL_CLIPS} (recording, noise) pairs, "
                         f"got {n_clips}")
  n_samples = 0 if clip_s is None else int(round(clip_s * cfg.sr))
  return _held_out_examples(cfg, tuple(snrs_db), n_clips, n_samples, noise_kind, pad=False,
                            source=True)
