"""Evaluating hearing-aid systems with the DAL metrics (DESIGN.md, "The DAL loop").

For every system and every clip (noisy, clean, snr_db):

    aided = system(noisy, sr)
    NAP_imp(aided) vs NAP_norm(clean): nap_l1, nap_corr; SAI_imp(aided) vs SAI_norm(clean): sai_l1
    si_sdr_db(aided, clean), stoi / estoi(clean, aided), haspi(clean, aided) when pyclarity exists

then means per system and SNR, and per system over all clips.

Levels are absolute. A system's output goes into the impaired cochlea exactly as the system
made it: nothing is normalised per clip, because amplification is what a hearing aid does and
CARFAC's response depends on level (digital rms 1.0 = 100 dB SPL, dal_widgets.audio.calibration).
The clean reference is heard by the normal cochlea at its own level (65 dB SPL for bundled clips).

Speed: the CARFAC + SAI pass is one jitted `vmap` over a chunk of clips, compiled once per
design, chunk size and padded length; the chunks run on every CPU core (cochlea.batch). Clips are
zero-padded at the end to a multiple of PAD_QUANTUM_S, so clips of similar length share one compilation; CARFAC and the SAI are causal,
so the padding does not change the NAP or SAI frames of the clip itself, which are cropped back.
"""
import csv
import dataclasses
import functools
import io
import math
import warnings
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from dal_widgets import atomic, caught_warnings
from dal_widgets.cochlea import batch, carfac, designs, sai
from dal_widgets.errors import DalError, ParameterError
from dal_widgets.finite import check_not_pcm
from dal_widgets.loop import metrics
from dal_widgets.loop.config import LossConfig

METRICS = ("nap_l1", "nap_corr", "sai_l1", "si_sdr_db", "stoi", "estoi", "haspi")
HIGHER_IS_BETTER = {"nap_l1": False, "nap_corr": True, "sai_l1": False, "si_sdr_db": True,
                    "stoi": True, "estoi": True, "haspi": True}
PAD_QUANTUM_S = 0.5  # clips are padded to a multiple of this: bounds recompilations per length
BATCH_SIZE = 4  # clips per vmapped CARFAC pass; ~4 x 3 s x 65 ch float32 NAPs, tens of MB
ALL_SNRS = "all"  # snr_db label of the per-system mean over every clip
MAX_LISTED = 10  # clip indices named in a warning


@dataclasses.dataclass(frozen=True)
class System:
  """A hearing-aid system under test.

  Attributes:
    name: Label in tables ("unprocessed", "NAL-R+WDRC", "DAL", ...).
    process: Callable (x, sr) -> y: x a float32 waveform of shape [n_samp] in digital units
      (rms 1.0 = 100 dB SPL), y the aided waveform of the same shape and units. It must not
      normalise its output level: the level it produces is the level the listener hears.
  """
  name: str
  process: Callable

  def __call__(self, x, sr):
    return self.process(x, sr)


def unprocessed() -> System:
  """The identity: what the listener hears without a hearing aid."""
  return System("unprocessed", lambda x, sr: np.asarray(x, np.float32))


def master_hearing_aid_system(audiogram, *, name: str = "NAL-R+WDRC") -> System:
  """The prescriptive baseline for `audiogram`: NAL-R then multiband WDRC (aid.wdrc).

  Raises:
    ParameterError: audiogram is not an Audiogram (found here, not in the first evaluation).
  """
  from dal_widgets.aid.wdrc import check_audiogram, master_hearing_aid
  check_audiogram(audiogram)
  return System(name, lambda x, sr: master_hearing_aid(np.asarray(x, np.float32), sr, audiogram))


def dal_system(params, model_cfg, *, condition=None, name: str = "DAL") -> System:
  """A trained DAL hearing aid: `loop.train.enhance(params, model_cfg, x, condition)`.

  Args:
    params: SEANet parameters (from training or a checkpoint).
    model_cfg: The SeanetConfig they were built for.
    condition: FiLM vector of the listener for a conditioned model (aid.seanet
      .condition_from_audiogram), else None.
    name: Label in tables.
  """
  from dal_widgets.loop.train import enhance  # imported late: train is heavy
  return System(name, lambda x, sr: enhance(params, model_cfg, x, condition))


@dataclasses.dataclass(frozen=True)
class EvaluationTable:
  """Results of `evaluate`.

  Attributes:
    rows: Means, one dict per (system, snr_db) and one per system with snr_db == "all";
      keys "system", "snr_db", "n_clips" and one per metric in `metrics` (the mean over the
      clips with a finite value: STOI is NaN for a clip with too little speech, HASPI for one
      whose clean speech is below its threshold).
    clip_rows: One dict per (system, clip): "system", "clip" (index), "snr_db", "source" (the
      clip's recording, or its index when the clip names none), metrics.
    metrics: Metric names present, in METRICS order ("haspi" only when pyclarity is installed).
  """
  rows: tuple
  clip_rows: tuple
  metrics: tuple

  @property
  def systems(self) -> tuple:
    """System names in evaluation order."""
    return tuple(dict.fromkeys(row["system"] for row in self.rows))

  def value(self, system: str, metric: str, snr_db=ALL_SNRS) -> float:
    """The mean of `metric` for `system` at `snr_db` ("all" for every clip)."""
    self._check_metric(metric)
    for row in self.rows:
      if row["system"] == system and row["snr_db"] == snr_db:
        return row[metric]
    raise ParameterError(f"system, snr_db: no row for system={system!r}, snr_db={snr_db!r}; "
                         f"systems are {list(self.systems)}")

  def best(self, metric: str, snr_db=ALL_SNRS) -> str:
    """Name of the system with the best mean `metric` (lowest for L1 distances, else highest)."""
    self._check_metric(metric)
    candidates = [row for row in self.rows
                  if row["snr_db"] == snr_db and not math.isnan(row[metric])]
    if not candidates:
      raise ParameterError(f"snr_db: no finite {metric} at snr_db={snr_db!r}")
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    return max(candidates, key=lambda row: sign * row[metric])["system"]

  def _check_metric(self, metric):
    if metric not in self.metrics:
      raise ParameterError(f"metric: expected one of {list(self.metrics)}, got {metric!r}")

  @property
  def columns(self) -> tuple:
    return ("system", "snr_db", "n_clips") + self.metrics

  def to_markdown(self) -> str:
    """The mean rows as a GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(self.columns) + " |",
             "|" + "|".join("---" if c == "system" else "---:" for c in self.columns) + "|"]
    for row in self.rows:
      lines.append("| " + " | ".join(_format(row[c]) for c in self.columns) + " |")
    return "\n".join(lines) + "\n"

  def to_csv(self, path, *, clips: bool = False) -> Path:
    """Writes the mean rows as CSV, atomically (dal_widgets.atomic); with `clips`, the per-clip
    rows instead (system, clip, snr_db, source and every metric: for other statistics).

    Returns:
      The destination as a Path.
    Raises:
      ParameterError: if the file cannot be written.
    """
    columns = ("system", "clip", "snr_db", "source") + self.metrics if clips else self.columns
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", restval="",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(self.clip_rows if clips else self.rows)
    return write_text_atomic(path, buffer.getvalue())


def write_text_atomic(path, text: str) -> Path:
  """Writes `text` (UTF-8) to `path` atomically (dal_widgets.atomic).

  Raises:
    ParameterError: the file cannot be written (missing or read-only folder, full disk, ...).
  """
  try:
    return atomic.write_text_atomic(path, text)
  except OSError as err:
    raise ParameterError(f"path: cannot write {str(path)!r}: {err.strerror or err}") from err


def _format(value) -> str:
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4g}"
  return str(value)


def default_sai_params(sr: float, n_ch: int) -> sai.SaiParams:
  """The SAI design of the default DAL loss (LossConfig: 25 ms frames, 20 ms wide) at `sr`."""
  return sai.sai_params_for(sr, n_ch, frame_ms=LossConfig.sai_frame_ms,
                            width_ms=LossConfig.sai_width_ms)


@functools.lru_cache(maxsize=8)
def _nap_and_sai_fn(hypers: carfac.CarfacHypers, sai_params: sai.SaiParams):
  """Jitted [batch, n_samp] -> (nap [batch, n_samp, n_ch], sai [batch, n_frames, n_ch, width])."""
  def one(x, coeffs, weights, state):
    out, _ = carfac.run(x, hypers, coeffs, weights, state, bm=False)
    return out.nap, sai.sai_frames(out.nap, sai_params)
  return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)),
                 compiler_options=carfac.compiler_options())


def _auditory(model: carfac.Carfac, sai_params, signals):
  """NAPs and SAI frames of equal-length `signals` [batch, n_samp] through `model` (numpy)."""
  hypers, coeffs, weights, state = model
  return batch.map_chunks(_nap_and_sai_fn(hypers, sai_params), signals, coeffs, weights, state)


def _padded(signals, length):
  out = np.zeros((len(signals), length), np.float32)
  for i, x in enumerate(signals):
    out[i, :x.shape[0]] = x
  return out


def _check_clips(clips, min_samples):
  if not isinstance(clips, (list, tuple)) or not clips:
    got = "an empty list" if isinstance(clips, (list, tuple)) else type(clips).__name__
    raise ParameterError(f"clips: expected a non-empty list of (noisy, clean, snr_db[, source]), "
                         f"got {got}")
  checked = []
  for i, clip in enumerate(clips):
    if not isinstance(clip, (list, tuple)) or len(clip) not in (3, 4):
      what = f"length {len(clip)}" if isinstance(clip, (list, tuple)) else type(clip).__name__
      raise ParameterError(f"clips[{i}]: expected a tuple (noisy, clean, snr_db[, source]), got "
                           f"{what}")
    for part, name in ((clip[0], "noisy"), (clip[1], "clean")):
      check_not_pcm(part, f"clips[{i}] {name}")
    noisy, clean = np.asarray(clip[0], np.float32), np.asarray(clip[1], np.float32)
    if noisy.ndim != 1 or noisy.shape != clean.shape:
      raise ParameterError(f"clips[{i}]: expected 1-D noisy and clean of equal length, got shapes "
                           f"{noisy.shape} and {clean.shape}")
    if noisy.shape[0] < min_samples:
      raise ParameterError(f"clips[{i}]: expected at least {min_samples} samples (one SAI "
                           f"frame), got {noisy.shape[0]}")
    if not (np.all(np.isfinite(noisy)) and np.all(np.isfinite(clean))):
      raise ParameterError(f"clips[{i}]: expected finite samples, got NaN or inf")
    if np.ptp(clean) == 0:  # found here, not by si_sdr after every CARFAC pass
      raise ParameterError(f"clips[{i}]: expected clean speech, got a constant (silent) signal "
                           "(SI-SDR, STOI and HASPI are undefined)")
    try:  # a string or None is not an SNR (float("5") would pass)
      snr_db = math.nan if isinstance(clip[2], (str, bytes, bool)) else float(clip[2])
    except (TypeError, ValueError):
      snr_db = math.nan
    if not math.isfinite(snr_db):
      raise ParameterError(f"clips[{i}]: expected a finite snr_db, got {clip[2]!r}")
    source = clip[3] if len(clip) == 4 else i
    if not isinstance(source, (str, int, np.integer)) or isinstance(source, bool):
      raise ParameterError(f"clips[{i}]: expected a source name (str) or number, got "
                           f"{type(source).__name__}")
    checked.append((noisy, clean, snr_db, source))
  return checked


def _check_systems(systems):
  if not isinstance(systems, (list, tuple)) or not systems:
    got = "an empty list" if isinstance(systems, (list, tuple)) else type(systems).__name__
    raise ParameterError(f"systems: expected a non-empty list of System, got {got}")
  for i, system in enumerate(systems):
    if not isinstance(system, System):
      raise ParameterError(f"systems[{i}]: expected a System, got {type(system).__name__}")
  names = [system.name for system in systems]
  if len(set(names)) != len(names):
    raise ParameterError(f"systems: expected distinct names, got {names}")


def _run_system(system, noisy, sr, index):
  aided = np.asarray(system(noisy, sr), np.float32)
  if aided.shape != noisy.shape or not np.all(np.isfinite(aided)):
    raise DalError(f"system {system.name!r} returned shape {aided.shape} with "
                   f"{'finite' if np.all(np.isfinite(aided)) else 'non-finite'} samples for "
                   f"clips[{index}] of shape {noisy.shape}; expected the same shape, finite")
  return aided


def _noting(category, index, noted, fn, *args, **kwargs):
  """fn(*args, **kwargs), with a warning of `category` turned into `index` added to the set
  `noted` (evaluate reports each set once, not for every clip and system); others pass on."""
  with caught_warnings.recorded() as caught:
    value = fn(*args, **kwargs)
  for w in caught:
    if issubclass(w.category, category):
      noted.add(index)
    else:
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  return value


def _stoi_pair(clean, aided, sr, index, too_short):
  """{"stoi", "estoi"} of one clip; a clip too short for STOI joins the set `too_short`."""
  return {name: _noting(metrics.StoiTooShortWarning, index, too_short, metrics.stoi, clean,
                        aided, sr, extended=extended)
          for name, extended in (("stoi", False), ("estoi", True))}


def _haspi(clean, aided, sr, audiogram, index, too_quiet):
  """HASPI v2 of one clip; a clip whose clean speech is below HASPI's threshold joins `too_quiet`."""
  return _noting(metrics.HaspiBelowThresholdWarning, index, too_quiet, metrics.haspi_v2, clean,
                 aided, sr, audiogram)


def _index_list(indices, shown=MAX_LISTED):
  ordered = sorted(indices)
  more = f", ... ({len(ordered) - shown} more)" if len(ordered) > shown else ""
  return ", ".join(map(str, ordered[:shown])) + more


def _finite_mean(values) -> float:
  """Mean over the finite values (a clip too short for STOI has NaN there), NaN when none is."""
  finite = [v for v in values if math.isfinite(v)]
  return float(np.mean(finite)) if finite else math.nan


def _aggregate(clip_rows, system_names, metric_names):
  rows = []
  for name in system_names:
    mine = [row for row in clip_rows if row["system"] == name]
    groups = [(snr, [r for r in mine if r["snr_db"] == snr])
              for snr in sorted({r["snr_db"] for r in mine})]
    for snr_db, group in groups + [(ALL_SNRS, mine)]:
      row = {"system": name, "snr_db": snr_db, "n_clips": len(group)}
      row.update({m: _finite_mean([r[m] for r in group]) for m in metric_names})
      rows.append(row)
  return tuple(rows)


def evaluate(clips, sr, ear, systems, *, normal_model=None, impaired_model=None, sai_params=None,
             on_progress=None, haspi: bool = True) -> EvaluationTable:
  """Evaluates hearing-aid systems for one impaired ear (module docstring).

  Args:
    clips: List of (noisy, clean, snr_db) or (noisy, clean, snr_db, source): noisy and clean
      float waveforms of shape [n_samp] (clips may differ in length; at least one SAI frame
      long; clean not silent), digital units (rms 1.0 = 100 dB SPL), the SNR in dB the mixture
      was made at, and optionally the name of the recording the speech comes from (crops of one
      recording, and one crop at several SNRs, are then one unit in loop.paired's statistics).
    sr: Sample rate of every clip, Hz.
    ear: The listener, an ImpairedEar (dal_widgets.hearing.fit): its `audiogram` drives HASPI,
      its `weights()` the default impaired model.
    systems: List of System with distinct names.
    normal_model: Carfac (hypers, coeffs, weights, state) of the normal ear; default the design
      `designs.designed(sr, ear.style)` with healthy weights.
    impaired_model: Carfac of the impaired ear; default the normal design with `ear.weights()`.
    sai_params: SaiParams; default `default_sai_params(sr, n_ch)`, the SAI of the default DAL
      loss, kept fixed so tables of different runs compare.
    on_progress: Optional callable(done, total) called after each batch of clips per system;
      counts (system, clip) pairs.
    haspi: Score HASPI v2 when pyclarity is installed. It is the slowest metric by far: about
      1.4 s per 2 s clip and system on a 2-core CPU, against 0.13 s for all the others.

  Returns:
    EvaluationTable.

  Raises:
    ParameterError: bad clips (integer PCM, (time, channels), NaN, silent clean, an SNR that is
      not a finite number), systems, sample rate or models.
    DalError: a system returned audio of another shape or with NaN/inf.
  """
  _check_systems(systems)
  if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)):
    raise ParameterError(f"sr: expected a sample rate in Hz, got {sr!r}")
  style = getattr(ear, "style", "v3")
  if normal_model is None:
    normal_model = designs.designed(float(sr), style)
  if impaired_model is None:
    if not callable(getattr(ear, "weights", None)):
      raise ParameterError(f"ear: expected an ImpairedEar (with weights()) when impaired_model is "
                           f"not given, got {type(ear).__name__}")
    impaired_model = normal_model._replace(weights=ear.weights())
  for label, model in (("normal_model", normal_model), ("impaired_model", impaired_model)):
    if not isinstance(model, carfac.Carfac):
      raise ParameterError(f"{label}: expected a Carfac (hypers, coeffs, weights, state), got "
                           f"{type(model).__name__}")
    if model.hypers.sr != float(sr):
      raise ParameterError(f"sr: expected the {label} design rate {model.hypers.sr} Hz, got {sr}")
  if sai_params is None:
    sai_params = default_sai_params(float(sr), normal_model.hypers.n_ch)
  clips = _check_clips(clips, sai_params.input_segment_width)
  audiogram = getattr(ear, "audiogram", None)
  with_haspi = haspi and audiogram is not None and metrics.haspi_available()
  metric_names = METRICS if with_haspi else METRICS[:-1]
  segment = sai_params.input_segment_width
  quantum = segment * math.ceil(PAD_QUANTUM_S * sr / segment)
  total, done = len(clips) * len(systems), 0
  clip_rows, too_short, too_quiet = [], set(), set()
  for start in range(0, len(clips), BATCH_SIZE):
    chunk = clips[start:start + BATCH_SIZE]
    length = quantum * math.ceil(max(c[0].shape[0] for c in chunk) / quantum)
    nap_norm, sai_norm = _auditory(normal_model, sai_params, _padded([c[1] for c in chunk], length))
    for system in systems:
      aided = [_run_system(system, c[0], sr, start + j) for j, c in enumerate(chunk)]
      nap_imp, sai_imp = _auditory(impaired_model, sai_params, _padded(aided, length))
      for j, ((_, clean, snr_db, source), y) in enumerate(zip(chunk, aided)):
        n, n_frames = clean.shape[0], clean.shape[0] // segment
        row = {"system": system.name, "clip": start + j, "snr_db": snr_db, "source": source,
               "nap_l1": float(metrics.nap_l1(nap_imp[j, :n], nap_norm[j, :n])),
               "nap_corr": float(metrics.nap_correlation(nap_imp[j, :n], nap_norm[j, :n])),
               "sai_l1": float(metrics.sai_l1(sai_imp[j, :n_frames], sai_norm[j, :n_frames])),
               "si_sdr_db": metrics.si_sdr(y, clean),
               **_stoi_pair(clean, y, sr, start + j, too_short)}
        if "haspi" in metric_names:
          row["haspi"] = _haspi(clean, y, sr, audiogram, start + j, too_quiet)
        clip_rows.append(row)
      done += len(chunk)
      if on_progress is not None:
        on_progress(done, total)
  if too_short:
    warnings.warn(f"stoi: {len(too_short)} of {len(clips)} clips have less than one 384 ms segment "
                  f"of speech once silent frames are removed (clips {_index_list(too_short)}); their "
                  "STOI and ESTOI are NaN", stacklevel=2)
  if too_quiet:
    warnings.warn(f"haspi: {len(too_quiet)} of {len(clips)} clips have too little clean speech "
                  f"above HASPI's threshold (clips {_index_list(too_quiet)}); their HASPI is NaN",
                  stacklevel=2)
  names = [system.name for system in systems]
  return EvaluationTable(rows=_aggregate(clip_rows, names, metric_names),
                         clip_rows=tuple(clip_rows), metrics=metric_names)
