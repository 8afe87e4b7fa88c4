"""The `dal` command line: long jobs of the Differentiable Auditory Loop without a notebook.

    dal fit-audiogram --preset N3 --out ear.json     fit an impaired CARFAC to an audiogram
    dal train --config widget --steps 40             train (or resume) a DAL hearing aid
    dal enhance in.wav out.wav --checkpoint PATH     run a trained hearing aid on a sound file
    dal evaluate --snr 0 5 --out results.md          compare unprocessed, NAL-R+WDRC and DAL
    dal cochleagram in.wav --out nap.npz             NAP of a sound through a (impaired) cochlea

Every subcommand has --help. Errors in what the user gave (files, values) print one line,
"dal <command>: error: ...", and exit with status 2 (a diverged training run: status 1);
warnings print as one line too. An interrupted run exits with 130; in `dal train` the first
Ctrl-C saves a checkpoint and stops (run the same command again to resume).
Heavy modules (JAX, CARFAC, training) are imported inside the commands, so --help is quick.
Compiled programs are kept for the next run in JAX's persistent cache (DAL_JAX_CACHE_DIR, default
~/.cache/dal_widgets/jax; empty turns it off; see compile_cache.py).
"""
import argparse
import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

from dal_widgets import caught_warnings
from dal_widgets.atomic import write_atomic, write_text_atomic
from dal_widgets.errors import DalError, ParameterError, TrainingError

EXIT_OK = 0
EXIT_FAILED = 1  # a run that failed on its own (training diverged)
EXIT_USAGE = 2  # argparse's status for bad arguments; we use it for every user error
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention
DEFAULT_SR = 16000  # Hz; CARFAC has 65 channels at 16 kHz (DESIGN.md)
DEFAULT_PRESET = "N3"  # Bisgaard moderate sloping loss: the default listener everywhere
DEFAULT_CONFIG = "default"  # training preset of a new run when --config is not given
DEFAULT_WORKDIR = "dal-run"  # training folder when --workdir is not given
DEFAULT_SNRS_DB = (0.0, 5.0)  # evaluation SNRs, within the training range -5..10 dB
DEFAULT_N_CLIPS = 3  # held-out clips per SNR
MIN_EVAL_CLIP_S = 0.4  # s: one 384 ms STOI segment of speech (pystoi), rounded up
PRETRAINED_FOLDER = ("data", "pretrained")  # inside the package: a bundled checkpoint, if any
# Copies of lower-layer names, so that parsing and --help do not import JAX (tests keep them equal):
NOISE_KINDS = ("babble", "speech_shaped", "white")  # loop.config.NOISE_KINDS
CONFIG_NAMES = ("widget", "default", "paper")  # loop.config.PRESETS
# (SEANet size, steps, batch size, clip s) of each of loop.config.PRESETS, for --help
CONFIG_SIZES = {"widget": ("small", 40, 2, 0.5), "default": ("small", 200, 4, 1.0),
                "paper": ("paper", 100_000, 64, 1.0)}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # audio.io.FORMATS
PCM_SUFFIXES = (".wav", ".flac")  # 16-bit integer samples: beyond +-1 is clipped (audio.io.FORMATS)
MAX_EVAL_CLIPS = 1000  # loop.config.MAX_EVAL_CLIPS
FEW_RECORDINGS = 10  # fewer held-out recordings than this: the evaluation says its intervals are wide


class UsageError(DalError):
  """A command-line problem found after parsing (e.g. a missing checkpoint)."""


class _Parser(argparse.ArgumentParser):
  """ArgumentParser whose errors are one line (no usage block) with exit status 2."""

  def error(self, message):
    self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _one_line(message) -> str:
  return " ".join(str(message).split())


# ---------------------------------------------------------------- shared helpers


def _add_listener_args(parser, default, *, with_ear=True):
  """--preset | --audiogram (| --ear): the listener; `default` says who it is when none is given."""
  group = parser.add_mutually_exclusive_group()
  group.add_argument("--preset", default=None, metavar="NAME",
                     help=f"standard audiogram: normal, N1..N7, S1..S3 (default: {default})")
  group.add_argument("--audiogram", type=Path, default=None, metavar="FILE",
                     help="audiogram file (.json or .csv, see dal_widgets.hearing.audiogram_io)")
  if with_ear:
    group.add_argument("--ear", type=Path, default=None, metavar="FILE",
                       help="fitted ear from `dal fit-audiogram --out` (skips the fit)")


def _audiogram(args, default=None):
  """The Audiogram of --audiogram or --preset; else `default`, else the DEFAULT_PRESET."""
  from dal_widgets.hearing import PRESET_NAMES, preset, read_audiogram
  if args.audiogram is not None:
    if args.audiogram.is_dir():
      raise UsageError(f"--audiogram: {str(args.audiogram)!r} is a folder, not an audiogram file")
    if not args.audiogram.is_file():
      raise UsageError(f"--audiogram: no such file {str(args.audiogram)!r}")
    return read_audiogram(args.audiogram)
  if args.preset is None:
    return default if default is not None else preset(DEFAULT_PRESET)
  try:
    return preset(args.preset)
  except DalError as err:
    raise UsageError(f"--preset: expected one of {', '.join(PRESET_NAMES)}, "
                     f"got {args.preset!r}") from err


def _listener_given(args) -> bool:
  return args.preset is not None or args.audiogram is not None


def _read_ear(path):
  import json
  from dal_widgets.hearing.fit import ImpairedEar
  try:
    return ImpairedEar.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
  except OSError as err:
    raise UsageError(f"--ear: cannot read {str(path)!r}: {err.strerror or err}") from err
  except (ValueError, KeyError, TypeError) as err:
    why = f"it has no field {err}" if isinstance(err, KeyError) else str(err)
    raise UsageError(f"--ear: {str(path)!r} is not a fitted ear written by "
                     f"`dal fit-audiogram --out` ({why})") from err


def _fitted_ear(args, sr, style="v3", default_audiogram=None):
  """The ImpairedEar of --ear, or a fresh fit of --preset / --audiogram / the default."""
  if getattr(args, "ear", None) is not None:
    return _check_ear(_read_ear(args.ear), sr, style)
  return _fit(_audiogram(args, default_audiogram), sr, style)


def _check_ear(ear, sr, style):
  if ear.sr != float(sr) or ear.style != style:
    raise UsageError(f"--ear: fitted for sr={ear.sr:g} Hz, style={ear.style}; this run needs "
                     f"sr={float(sr):g} Hz, style={style} (fit one for this run with "
                     f"`dal fit-audiogram --sr {float(sr):g} --style {style} --out ear.json`)")
  return ear


def _check_sr(sr, option="--sr"):
  """A model rate CARFAC designs take (audio.MIN_SR..MAX_SR), checked before any work."""
  from dal_widgets.audio.io import MAX_SR, MIN_SR
  if not (MIN_SR <= sr <= MAX_SR and float(sr).is_integer()):  # NaN fails too
    raise UsageError(f"{option}: expected a whole sample rate in {MIN_SR}..{MAX_SR} Hz, got {sr:g}")


def _named_for_options(err, options):
  """`err` with the library argument it names ("batch_size: ...") renamed to its command-line
  option ("--batch-size: ..."); other errors unchanged."""
  field, _, rest = str(err).partition(": ")
  return UsageError(f"{options[field]}: {rest}") if field in options else err


def _set_level(x, level_db_spl, path):
  """audio.set_level for --level-db-spl of the sound `x` read from the file `path`."""
  from dal_widgets import audio
  from dal_widgets.errors import AudioError
  try:
    return audio.set_level(x, level_db_spl)
  except ParameterError as err:
    raise _named_for_options(err, {"level_db_spl": "--level-db-spl"}) from err
  except AudioError as err:  # "x: ..." (e.g. digital silence): the samples of the input file
    raise UsageError(f"--level-db-spl: {path}: {str(err).removeprefix('x: ')}") from err


def _fit(audiogram, sr, style):
  from dal_widgets.hearing import fit
  who = f"audiogram {audiogram.name}" if audiogram.name else "a custom audiogram"
  _status(f"fitting CARFAC ({style}, {float(sr):g} Hz) to {who} "
          f"(up to a minute; keep it with `dal fit-audiogram --out ear.json`, reuse with --ear)")
  ear = fit.fit_cochlea(audiogram, float(sr), style=style)
  hz = lambda freqs: ", ".join(f"{f:g}" for f in freqs)
  skipped = fit.unfitted_freqs_hz(audiogram, ear.freqs_hz)
  if skipped:
    _status(f"note: {hz(skipped)} Hz not fitted: above the tones a {float(sr):g} Hz model can "
            f"test; the model keeps the {ear.freqs_hz[-1]:g} Hz threshold there; a higher sample "
            "rate (up to 48000 Hz) reaches them")
  better = fit.better_than_normal_freqs_hz(audiogram, ear.freqs_hz)
  if better:
    _status(f"note: thresholds better than 0 dB HL at {hz(better)} Hz are fitted as 0 dB HL: "
            "the model's healthy ear is its best")
  return ear


def _status(message):
  print(message, file=sys.stderr, flush=True)


def _checkpoint_dir(args):
  """--checkpoint (a folder or a file), else the bundled pretrained checkpoint, else a
  UsageError."""
  if args.checkpoint is not None:
    _check_checkpoint(args.checkpoint)
    return args.checkpoint
  bundled = _bundled_checkpoint()
  if bundled is None:
    raise UsageError("no checkpoint given and no pretrained one is bundled; train one with "
                     "`dal train --workdir DIR` and pass --checkpoint DIR")
  return bundled


def _bundled_checkpoint():
  import importlib.resources
  folder = importlib.resources.files("dal_widgets").joinpath(*PRETRAINED_FOLDER)
  try:
    if folder.is_dir() and any(folder.iterdir()):
      return Path(str(folder))
  except OSError:
    return None
  return None


def _check_checkpoint(path):
  if not path.exists():
    raise UsageError(f"--checkpoint: no such folder or file {str(path)!r}")


def _restore(checkpoint_dir):
  """(params, TrainConfig, step) of a checkpoint file, or of the latest checkpoint in a folder."""
  from dal_widgets.loop import checkpoint
  if Path(checkpoint_dir).is_file():  # e.g. an aid downloaded from the fine-tune panel
    return checkpoint.restore_params(checkpoint_dir)
  if checkpoint.latest(checkpoint_dir) is None:
    raise UsageError(f"--checkpoint: no checkpoint in {str(checkpoint_dir)!r}; train with "
                     f"`dal train --workdir {checkpoint_dir}` first")
  return checkpoint.restore_params(checkpoint_dir)  # its newest readable checkpoint


PROGRESS_LINES = 10  # without a terminal (a log file, a batch job): a line per tenth of the work


class _ProgressLines(contextlib.AbstractContextManager):
  """Where no terminal shows a progress bar: "dal <desc>: n/total <unit>s (s)" on stderr at each
  tenth of the work (the part of tqdm's interface that the commands use)."""

  def __init__(self, total, desc, unit):
    self.total, self.desc, self.unit, self.n = total, desc, unit, 0
    self._shown, self._t0 = 0, time.monotonic()

  def __exit__(self, *exc):
    return False

  def update(self, k=1):
    self.n += k
    tenth = self.n * PROGRESS_LINES // max(self.total, 1)
    if tenth > self._shown:
      self._shown = tenth
      _status(f"dal {self.desc}: {self.n}/{self.total} {self.unit}s "
              f"({time.monotonic() - self._t0:.0f} s)")


def _tqdm(*, total, desc, unit):
  """A tqdm bar on a terminal, else progress lines (_ProgressLines)."""
  if not sys.stderr.isatty():
    return _ProgressLines(total, desc, unit)
  from tqdm import tqdm
  return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


# ---------------------------------------------------------------- commands


def _check_output(path: Path, option: str, suffixes: tuple, inputs=()) -> None:
  """Raises UsageError before any work when `path` cannot be written (suffix, folder missing or
  read-only, a folder in the way) or would overwrite one of the `inputs`."""
  import tempfile
  if path.suffix.lower() not in suffixes:
    raise UsageError(f"{option}: expected a {' or '.join(suffixes)} file, got {str(path)!r}")
  if not path.parent.is_dir():
    raise UsageError(f"{option}: folder {str(path.parent)!r} does not exist")
  if path.is_dir():
    raise UsageError(f"{option}: {str(path)!r} is a folder, not a file")
  same = [p for p in inputs if p is not None and p.exists() and p.resolve() == path.resolve()]
  if same:
    raise UsageError(f"{option}: {str(path)!r} is also the input; it would be overwritten")
  try:
    fd, probe = tempfile.mkstemp(dir=path.parent, prefix=".write-check.", suffix=".tmp")
    os.close(fd)
    os.remove(probe)
  except OSError as err:
    raise UsageError(f"{option}: cannot write in {str(path.parent)!r}: "
                     f"{err.strerror or err}") from err


def cmd_fit_audiogram(args):
  import json
  _check_sr(args.sr)
  if args.out is not None:
    _check_output(args.out, "--out", (".json",), inputs=(args.audiogram,))
  audiogram = _audiogram(args)
  ear = _fit(audiogram, args.sr, args.style)
  print(ear.table())
  if args.out is not None:
    text = json.dumps(ear.to_dict(), indent=1) + "\n"
    write_text_atomic(args.out, text)
    _status(f"wrote {args.out}")
  return EXIT_OK


def cmd_train(args):
  from dal_widgets.loop import checkpoint
  from dal_widgets.loop import train as train_lib
  from dal_widgets.loop.config import config_for, fitting_warmup
  # no --config: continue the run's own config (its steps, learning rate, clip length, ...), as
  # its listener below; else the named preset, "default" for a new run
  resumed = None
  if not args.fresh and checkpoint.latest(args.workdir) is not None:
    try:
      resumed = checkpoint.restore_params(args.workdir)[1]
    except checkpoint.CheckpointError as err:  # no readable checkpoint left there
      raise UsageError(f"{err} (--fresh starts afresh there, moving its checkpoints into a "
                       "subfolder)") from err
  if args.config is None and resumed is not None:
    cfg = resumed
  else:
    cfg = config_for(args.config or DEFAULT_CONFIG)
  changes, ear, notes = {}, None, []  # notes: said once the run is sure to start
  if args.steps is not None:
    changes["steps"] = args.steps
    changes["warmup_steps"] = fitting_warmup(cfg.warmup_steps, args.steps)
    if changes["warmup_steps"] != cfg.warmup_steps:  # e.g. the paper preset's 1000 in 400 steps
      notes.append(f"note: the config's warm-up of {cfg.warmup_steps} steps does not fit "
                   f"{args.steps} steps; warming up over {changes['warmup_steps']}")
  if args.batch_size is not None:
    changes["batch_size"] = args.batch_size
  if args.ear is not None:
    ear = _read_ear(args.ear)
    changes["audiogram"] = _config_audiogram(ear.audiogram)
  elif _listener_given(args):
    changes["audiogram"] = _config_audiogram(_audiogram(args))
  elif resumed is not None:
    # no listener given: continue the run's own (as enhance and evaluate do)
    changes["audiogram"] = resumed.audiogram
  if changes:
    try:
      cfg = cfg.replace(**changes)
    except ParameterError as err:
      raise _named_for_options(err, {"steps": "--steps", "batch_size": "--batch-size"}) from err
  if ear is not None:
    _check_ear(ear, cfg.data.sr, cfg.style)  # before the work folder is made
  found = None if args.fresh else train_lib.resumable(args.workdir, cfg)  # before the fit
  if found is not None and found.step >= cfg.steps:
    print(f"nothing to do: {found.path} is at step {found.step}, --steps is {cfg.steps} "
          f"(ask for more steps to continue, or --fresh to start again)")
    return EXIT_OK
  if found is not None:
    _status(f"resuming {found.path} at step {found.step}/{cfg.steps}")
  checkpoint.check_writable(args.workdir)  # before the fit and the training, not after
  if args.fresh:
    aside = checkpoint.set_aside(args.workdir)
    if aside is not None:
      _status(f"note: --fresh: moved the earlier run's checkpoints to {aside}")
  for note in notes:
    _status(note)
  if ear is None:
    ear = _fit(train_lib.listener_audiogram(cfg), cfg.data.sr, cfg.style)
  stop = threading.Event()
  bar = sys.stderr.isatty()  # a progress bar on a terminal; log lines in files and pipes
  with _stop_on_interrupt(stop), _log_lines(train_lib.logger, enabled=not bar):
    result = train_lib.train(cfg, args.workdir, ear=ear, should_stop=stop.is_set,
                             resume=not args.fresh, progress=bar)
  state = "stopped at" if result.stopped_early else "finished"
  again = ""
  if result.stopped_early:  # the checkpoint holds the config and listener; not a fitted --ear
    command = ["dal", "train", "--workdir", str(args.workdir)]
    command += ["--ear", str(args.ear)] if args.ear is not None else []
    again = f" (`{shlex.join(command)}` continues it)"
  skipped = (f" ({result.skipped_steps} non-finite step{'s' if result.skipped_steps != 1 else ''}"
             " skipped: the parameters kept their last good values)"
             if result.skipped_steps else "")
  print(f"{state} step {result.steps_done}/{cfg.steps}, mean loss of the last steps "
        f"{result.loss:.4g}{skipped}; checkpoint {result.checkpoint}{again}")
  return EXIT_INTERRUPTED if result.stopped_early else EXIT_OK


def _config_audiogram(audiogram):
  """A preset's name when `audiogram` is that preset (compact configs), else the Audiogram."""
  from dal_widgets.hearing import PRESET_NAMES, preset
  if audiogram.name in PRESET_NAMES and preset(audiogram.name, ear=audiogram.ear) == audiogram:
    return audiogram.name
  return audiogram


@contextlib.contextmanager
def _log_lines(logger, *, enabled):
  """Shows `logger`'s INFO lines (e.g. training steps every log_every) on stderr."""
  import logging
  if not enabled:
    yield
    return
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("dal train: %(message)s"))
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  try:
    yield
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)


# Ctrl-C, `kill` (SIGTERM: also docker stop, batch-queue time limits) and a closed terminal
# (SIGHUP) all stop a command the same way.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


@contextlib.contextmanager
def _handling(handler, *, after=None):
  """`handler` for every STOP_SIGNALS inside the block (main thread only); then the previous
  handlers, or `after()`'s handler when it returns one."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
  for sig in STOP_SIGNALS:
    signal.signal(sig, handler)
  try:
    yield
  finally:
    late = after() if after is not None else None
    for sig, old in previous.items():
      signal.signal(sig, late or old)


# Set by a second stop signal during training: main() then ends the process at once. A normal
# exit would wait for the step running inside XLA (JAX finishes it before the interpreter ends),
# which on a CPU can take minutes; the unwinding has already removed temporary files.
_ABORTED = threading.Event()


def _interrupt(signum, frame):
  raise KeyboardInterrupt  # unwinds: atomic writes remove their temporary files


@contextlib.contextmanager
def _stop_on_interrupt(stop):
  """The first stop signal sets `stop` (training saves and returns); a second one interrupts.
  Once stopped, signals that arrive late (during a step) are ignored rather than hitting the
  process's exit."""
  def handler(signum, frame):
    if stop.is_set():
      _ABORTED.set()
      raise KeyboardInterrupt
    stop.set()
    _status("dal train: stopping after this step and saving a checkpoint (Ctrl-C again to abort)")

  with _handling(handler, after=lambda: signal.SIG_IGN if stop.is_set() else None):
    yield


def cmd_enhance(args):
  from dal_widgets import audio
  import numpy as np
  _check_output(args.output, "output", AUDIO_SUFFIXES, inputs=(args.input,))
  params, cfg = _restore(_checkpoint_dir(args))[:2]
  from dal_widgets.loop import train as train_lib
  condition = _condition(args, cfg)
  x, sr = audio.load(args.input, sr=cfg.data.sr)
  _note_channels(args.input)
  if args.level_db_spl is not None:
    x = _set_level(x, args.level_db_spl, args.input)
  y = train_lib.enhance(params, cfg.model_config, x, condition)
  peak = float(np.max(np.abs(y))) if y.size else 0.0
  suffix = args.output.suffix.lower()
  subtype = "FLOAT" if peak > 1.0 and suffix == ".wav" else None
  clipped = peak > 1.0 and suffix in PCM_SUFFIXES and subtype is None
  with caught_warnings.ignored(UserWarning, r".*samples exceed \+-1"):  # reported below
    audio.save(args.output, y, sr, subtype=subtype)
  written = np.clip(y, -1.0, 1.0) if clipped else y  # what the file holds
  _status(f"wrote {args.output} at {sr} Hz{_resampled(args.input, sr)}: "
          f"{audio.rms_to_db_spl(float(audio.rms(x))):.1f} dB SPL in, "
          f"{audio.rms_to_db_spl(float(audio.rms(written))):.1f} dB SPL out")
  if peak > 1.0:
    kept = {".wav": "written as 32-bit float WAV, so nothing is clipped",
            ".ogg": "Ogg Vorbis keeps it, but players may clip it; write a .wav for float samples"}
    _status(f"note: the output peaks at {peak:.2f}, above digital full scale (1.0 = "
            f"{audio.rms_to_db_spl(1.0):.0f} dB SPL); "
            + (f"{suffix} clips it (the level above is after clipping); write a .wav for float "
               "samples" if clipped else kept[suffix]))
  return EXIT_OK


def _resampled(path, sr):
  """" (resampled from N Hz)" when the audio file at `path` (just loaded) is not at `sr` Hz."""
  import soundfile
  file_sr = soundfile.info(str(path)).samplerate  # readable: it has just been loaded
  return f" (resampled from the input's {file_sr} Hz)" if file_sr != sr else ""


def _note_channels(path):
  """Says when a file's channels were averaged into the one the model hears."""
  import soundfile
  channels = soundfile.info(str(path)).channels  # readable: it has just been loaded
  if channels > 1:
    _status(f"note: {path} has {channels} channels; the model hears their average (mono)")


def _condition(args, cfg):
  """FiLM vector of the listener for a conditioned model (None for an unconditioned one)."""
  from dal_widgets.aid.seanet import condition_from_audiogram
  from dal_widgets.loop.train import listener_audiogram
  if not cfg.model_config.film_dim:
    if _listener_given(args):
      _status("note: this model is not conditioned on a listener; --preset/--audiogram ignored")
    return None
  return condition_from_audiogram(_audiogram(args, listener_audiogram(cfg)))


def cmd_evaluate(args):
  from dal_widgets.loop import evaluate as ev
  import math
  from dal_widgets.loop.config import MAX_CLIP_S, MAX_SNR_DB
  if not 1 <= args.n_clips <= MAX_EVAL_CLIPS:
    raise UsageError(f"--n-clips: expected 1 to {MAX_EVAL_CLIPS}, got {args.n_clips}")
  if args.clip_s is not None and not MIN_EVAL_CLIP_S <= args.clip_s <= MAX_CLIP_S:  # NaN too
    raise UsageError(f"--clip-s: expected seconds in [{MIN_EVAL_CLIP_S:g}, {MAX_CLIP_S:g}] (STOI "
                     f"needs one 384 ms segment of speech), got {args.clip_s:g}")
  bad_snr = [v for v in args.snr if not (math.isfinite(v) and abs(v) <= MAX_SNR_DB)]
  if bad_snr:
    raise UsageError(f"--snr: expected dB values within +-{MAX_SNR_DB:g}, got {bad_snr[0]:g}")
  if len(set(args.snr)) != len(args.snr):
    raise UsageError(f"--snr: expected each SNR once (a repeat would count its clips twice), "
                     f"got {' '.join(f'{v:g}' for v in args.snr)}")
  out = args.out
  if out is not None:
    _check_output(out, "--out", (".md", ".csv"))
    if out.suffix.lower() == ".csv":  # and the per-clip file written beside it
      _check_output(_clips_csv(out), "--out", (".csv",))
  from dal_widgets.loop.train import listener_audiogram
  aids = _restore_aids(args.checkpoint)
  cfg = aids[0][1] if aids else None
  sr = cfg.data.sr if cfg is not None else DEFAULT_SR
  style = cfg.style if cfg is not None else "v3"
  listener = listener_audiogram(cfg) if cfg is not None else None
  ear = _fitted_ear(args, sr, style, listener)
  clips = _evaluation_clips(sr, args.snr, args.n_clips, args.clip_s, args.noise, cfg)
  systems = [ev.unprocessed(), ev.master_hearing_aid_system(ear.audiogram)]
  if aids:
    from dal_widgets.aid.seanet import condition_from_audiogram
    for name, (params, aid_cfg) in zip(_aid_names(args.checkpoint, aids), aids):
      condition = (condition_from_audiogram(ear.audiogram) if aid_cfg.model_config.film_dim
                   else None)
      trained_for = listener_audiogram(aid_cfg)
      if condition is None and trained_for != ear.audiogram:
        _status(f"note: {name} was trained for {trained_for.name or 'another audiogram'}, not "
                f"for the listener evaluated here ({ear.audiogram.name or 'custom audiogram'})")
      systems.append(ev.dal_system(params, aid_cfg.model_config, condition=condition, name=name))
  else:
    _status("no checkpoint: evaluating unprocessed and NAL-R+WDRC only (train with `dal train`)")
  with _tqdm(total=len(clips) * len(systems), desc="evaluate", unit="clip") as bar:
    table = ev.evaluate(clips, sr, ear, systems,
                        on_progress=lambda done, total: bar.update(done - bar.n))
  text = _evaluation_text(table)
  print(text, end="")
  if out is not None:
    if out.suffix.lower() == ".csv":
      table.to_csv(out)
      per_clip = table.to_csv(_clips_csv(out), clips=True)
      _status(f"wrote {out} (means) and {per_clip} (each clip)")
    else:
      ev.write_text_atomic(out, text)
      _status(f"wrote {out}")
  return EXIT_OK


def _clips_csv(out):
  """The per-clip table written beside the means of `evaluate --out NAME.csv`."""
  return out.with_name(f"{out.stem}_clips{out.suffix}")


def _restore_aids(paths):
  """[(params, TrainConfig)] of each --checkpoint (default: the bundled aid, if any); they must
  share a sample rate and CARFAC style, since one evaluation runs one pair of model ears."""
  if paths is None:
    bundled = _bundled_checkpoint()
    paths = [] if bundled is None else [bundled]
  for path in paths:
    _check_checkpoint(Path(path))
  if len({_checkpoint_file(p) for p in paths}) != len(paths):
    raise UsageError("--checkpoint: the same checkpoint is given twice (a folder means its "
                     "latest checkpoint)")
  restored = [_restore(path) for path in paths]  # (params, cfg, step)
  for path, (_, cfg, _) in zip(paths[1:], restored[1:]):
    first = restored[0][1]
    if (cfg.data.sr, cfg.style) != (first.data.sr, first.style):
      raise UsageError(f"--checkpoint: {path} runs at {cfg.data.sr:g} Hz, CARFAC {cfg.style}; "
                       f"{paths[0]} at {first.data.sr:g} Hz, CARFAC {first.style}: compare aids "
                       "of one rate and style")
  for path, (_, _, step) in zip(paths, restored):
    _status(f"DAL model: {path}, step {step}")
  return [(params, cfg) for params, cfg, _ in restored]


def _checkpoint_file(path):
  """The file a --checkpoint names: itself, or a folder's latest checkpoint (resolved)."""
  from dal_widgets.loop import checkpoint
  path = Path(path)
  found = checkpoint.latest(path) if path.is_dir() else path
  return (found or path).resolve()


def _aid_names(paths, aids):
  """Table names of the aids: "DAL" for one, "DAL <file or folder name>" for several."""
  if len(aids) == 1:
    return ["DAL"]
  names = [f"DAL {Path(p).stem if Path(p).is_file() else Path(p).name}" for p in paths]
  return names if len(set(names)) == len(names) else [f"DAL {p}" for p in paths]


def _evaluation_text(table):
  """The mean table, then the last system (DAL when there is one) minus each other system, clip
  by clip, with confidence intervals (loop.paired)."""
  from dal_widgets.loop import paired
  text = table.to_markdown()
  if len(table.systems) < 2:
    return text
  system = table.systems[-1]
  diffs = paired.differences(table, system)
  n = max(diff.n for diff in diffs)
  few = (f" Only {n} held-out recording{'s' if n != 1 else ''}: the intervals are wide; a corpus "
         "with more held-out recordings gives firmer answers." if n < FEW_RECORDINGS else "")
  return (f"{text}\n{system} minus each other system, per held-out recording (its crops and SNRs "
          f"averaged first; {paired.CONFIDENCE:.0%} intervals; an interval that holds 0 means no "
          f"clear difference).{few}\n\n{paired.to_markdown(diffs)}")


def _evaluation_clips(sr, snrs_db, n_clips, clip_s, noise, cfg):
  """(noisy, clean, snr_db) for held-out speech at each SNR (loop.data)."""
  from dal_widgets.loop import data
  from dal_widgets.loop.config import DataConfig
  data_cfg = cfg.data if cfg is not None else DataConfig(sr=int(sr))
  if noise is not None and noise not in data_cfg.noise_kinds:
    data_cfg = dataclasses.replace(data_cfg, noise_kinds=(noise,), noise_probs=(1.0,))
  return data.evaluation_clips(data_cfg, snrs_db=tuple(snrs_db), n_clips=n_clips, clip_s=clip_s,
                               noise_kind=noise)


def cmd_cochleagram(args):
  import numpy as np
  from dal_widgets import audio
  from dal_widgets.cochlea import designs
  _check_output(args.out, "--out", (".npz",), inputs=(args.input,))
  if args.sr is not None:
    _check_sr(args.sr)
  x, sr = audio.load(args.input, sr=args.sr)
  _note_channels(args.input)
  if args.level_db_spl is not None:
    x = _set_level(x, args.level_db_spl, args.input)
  ohc_health = ihc_gain = 1.0
  if args.ear is not None or _listener_given(args):
    ear = _fitted_ear(args, sr, args.style)
    ohc_health, ihc_gain = ear.ohc_health, ear.ihc_gain
  out = designs.cochleagram(x, sr, style=args.style, ohc_health=ohc_health, ihc_gain=ihc_gain,
                            bm=args.bm)
  arrays = {"nap": np.asarray(out.nap), "cf_hz": designs.cf_hz(sr), "sr": np.asarray(float(sr)),
            "ohc_health": np.broadcast_to(np.asarray(ohc_health, np.float32), out.nap.shape[1:]),
            "ihc_gain": np.broadcast_to(np.asarray(ihc_gain, np.float32), out.nap.shape[1:])}
  if args.bm:
    arrays["bm"] = np.asarray(out.bm)
  write_atomic(args.out, lambda f: np.savez_compressed(f, **arrays))
  _status(f"wrote {args.out}: nap {arrays['nap'].shape} (time, channel) at {sr:g} Hz"
          f"{_resampled(args.input, sr)}, channel 0 = {arrays['cf_hz'][0]:.0f} Hz")
  return EXIT_OK


# ---------------------------------------------------------------- parser and main


def build_parser():
  parser = _Parser(prog="dal", description="Differentiable Auditory Loop: CARFAC hearing-aid "
                                           "training and evaluation from the command line.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
  sub.required = True

  p = sub.add_parser("fit-audiogram", help="fit an impaired CARFAC to an audiogram",
                     description="Fit per-channel OHC health and IHC gain of CARFAC to an "
                                 "audiogram and print target vs fitted thresholds.")
  _add_listener_args(p, DEFAULT_PRESET, with_ear=False)
  p.add_argument("--sr", type=float, default=DEFAULT_SR,
                 help="model sample rate, Hz (default %(default)s)")
  p.add_argument("--style", choices=("v3", "v2"), default="v3",
                 help="CARFAC style (default %(default)s)")
  p.add_argument("--out", type=Path, default=None, metavar="FILE",
                 help="write the fitted ear (.json), to reuse with --ear")
  p.set_defaults(run=cmd_fit_audiogram)

  p = sub.add_parser("train", help="train (or resume) a DAL hearing aid",
                     description="Train SEANet so the impaired cochlea hearing its output matches "
                                 "a normal cochlea hearing clean speech. Resumes from the latest "
                                 "checkpoint in --workdir; Ctrl-C saves and stops.")
  sizes = "; ".join(f"{name}: {size} SEANet, {steps} steps of {batch} x {clip_s:g} s clips"
                    for name, (size, steps, batch, clip_s) in CONFIG_SIZES.items())
  p.add_argument("--config", default=None, choices=CONFIG_NAMES,
                 help=f"preset configuration ({sizes}); when not given: the config of the run it "
                      f"resumes, else {DEFAULT_CONFIG}")
  _add_listener_args(p, "the listener of the run it resumes, else the config's, N3")
  p.add_argument("--steps", type=int, default=None,
                 help="total optimizer steps (overrides the config)")
  p.add_argument("--batch-size", type=int, default=None,
                 help="examples per step (overrides the config)")
  p.add_argument("--workdir", type=Path, default=Path(DEFAULT_WORKDIR),
                 help="folder for the checkpoints and history.csv, the metrics of every step "
                      "(default %(default)s)")
  p.add_argument("--fresh", action="store_true",
                 help="start from scratch; checkpoints (and history) already in --workdir are "
                 "moved into a subfolder replaced_<time> (nothing is deleted)")
  p.set_defaults(run=cmd_train)

  p = sub.add_parser("enhance", help="run a trained hearing aid on a sound file",
                     description="Process a sound file with a trained DAL hearing aid. Levels "
                                 "are absolute: digital rms 1.0 = 100 dB SPL.")
  p.add_argument("input", type=Path, help="input sound file (wav, flac, ogg)")
  p.add_argument("output", type=Path, help="output sound file (.wav, .flac or .ogg)")
  p.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                 help="training folder or checkpoint file (default: the bundled pretrained "
                      "model, if any)")
  _add_listener_args(p, "the checkpoint's listener; only for conditioned models", with_ear=False)
  p.add_argument("--level-db-spl", type=float, default=None, metavar="DB",
                 help="set the input to this rms level first (default: keep the file's level)")
  p.set_defaults(run=cmd_enhance)

  p = sub.add_parser("evaluate", help="compare unprocessed, NAL-R+WDRC and DAL on held-out speech",
                     description="Evaluate hearing-aid systems on held-out noisy speech: NAP L1 "
                                 "and correlation, SAI L1, SI-SDR, STOI, ESTOI (and HASPI v2 "
                                 "when pyclarity is installed): the mean per system, then the "
                                 "last system (DAL) minus each other one, per held-out "
                                 "recording, with 95% confidence intervals.")
  p.add_argument("--checkpoint", type=Path, action="append", default=None, metavar="PATH",
                 help="training folder or checkpoint file of a DAL model (default: the "
                      "bundled one, if any); repeat it to compare aids: the last one is "
                      "compared with every other system")
  _add_listener_args(p, f"the (first) checkpoint's listener, else {DEFAULT_PRESET}")
  p.add_argument("--snr", type=float, nargs="+", default=list(DEFAULT_SNRS_DB), metavar="DB",
                 help="SNRs in dB (default %(default)s)")
  p.add_argument("--n-clips", type=int, default=DEFAULT_N_CLIPS, metavar="K",
                 help=f"held-out clips per SNR, at most {MAX_EVAL_CLIPS} (default %(default)s)")
  p.add_argument("--clip-s", type=float, default=None, metavar="S",
                 help="cut each clip to this many seconds (default: whole clips)")
  p.add_argument("--noise", choices=NOISE_KINDS, default=None,
                 help="noise type (default: drawn per clip as in training)")
  p.add_argument("--out", type=Path, default=None, metavar="FILE",
                 help="write the tables (.md), or the means (.csv) and each clip's values "
                      "(<name>_clips.csv beside it)")
  p.set_defaults(run=cmd_evaluate)

  p = sub.add_parser("cochleagram", help="write the NAP of a sound file (.npz)",
                     description="Run CARFAC on a sound file and write nap [time, channel], "
                                 "cf_hz [channel] (channel 0 is the highest CF), sr, and the "
                                 "ear's ohc_health and ihc_gain [channel] to .npz. Levels are "
                                 "absolute: digital rms 1.0 = 100 dB SPL.")
  p.add_argument("input", type=Path, help="input sound file (wav, flac, ogg)")
  p.add_argument("--out", type=Path, required=True, metavar="FILE", help="output .npz file")
  p.add_argument("--sr", type=int, default=DEFAULT_SR,
                 help="model sample rate, Hz; the input is resampled (default %(default)s)")
  p.add_argument("--style", choices=("v3", "v2"), default="v3",
                 help="CARFAC style (default %(default)s)")
  _add_listener_args(p, "normal hearing")
  p.add_argument("--level-db-spl", type=float, default=None, metavar="DB",
                 help="set the input to this rms level first (default: keep the file's level)")
  p.add_argument("--bm", action="store_true", help="also write basilar-membrane motion")
  p.set_defaults(run=cmd_cochleagram)
  return parser


def _one_line_warning(command):
  """A warnings.showwarning that prints "dal <command>: warning: ..." on one line, each text
  once (e.g. a bad checkpoint marker is read from several places of one command)."""
  shown = set()
  def show(message, category, filename, lineno, file=None, line=None):
    text = f"dal {command}: warning: {_one_line(message)}"
    if text not in shown:
      shown.add(text)
      print(text, file=file or sys.stderr)
  return show


def _out_of_memory(err) -> bool:
  """True for NumPy's and XLA's out-of-memory errors (XLA's without importing JAX here)."""
  return isinstance(err, MemoryError) or (type(err).__name__ == "JaxRuntimeError"
                                          and "RESOURCE_EXHAUSTED" in str(err))


def main(argv=None) -> int:
  """Runs `dal` with `argv` (default sys.argv[1:]); returns the exit status."""
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as stop:  # --help (0) or a usage error (2), already printed
    return stop.code if isinstance(stop.code, int) else EXIT_USAGE
  try:
    with warnings.catch_warnings(), _handling(_interrupt):  # the entry point: no threads yet
      warnings.showwarning = _one_line_warning(args.command)
      from dal_widgets import compile_cache  # JAX: not imported for --help and usage errors
      compile_cache.enable(compile_cache.folder())  # the next run loads what this one compiles
      return args.run(args)
  except TrainingError as err:
    print(f"dal {args.command}: error: {_one_line(err)}", file=sys.stderr)
    return EXIT_FAILED
  except DalError as err:
    print(f"dal {args.command}: error: {_one_line(err)}", file=sys.stderr)
    return EXIT_USAGE
  except OSError as err:  # a path the user named: unwritable folder, full disk, ...
    where = f" {err.filename!r}" if err.filename else ""
    print(f"dal {args.command}: error:{where} {err.strerror or err}", file=sys.stderr)
    return EXIT_USAGE
  except KeyboardInterrupt:
    print(f"dal {args.command}: interrupted", file=sys.stderr)
    if _ABORTED.is_set():
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED
  except Exception as err:  # after OSError: only what no clause above took
    if not _out_of_memory(err):
      raise  # a bug: its traceback is what a report needs
    print(f"dal {args.command}: error: out of memory ({_one_line(err)[:200]}); try shorter "
          "audio or a smaller --batch-size", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
  sys.exit(main())
