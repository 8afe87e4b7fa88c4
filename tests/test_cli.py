"""The `dal` command line: help, one-line user errors (status 2), real runs on tiny inputs."""
import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from dal_widgets import audio, cli
from dal_widgets.audio import load_clip
from dal_widgets.hearing import preset

COMMANDS = ("fit-audiogram", "train", "enhance", "evaluate", "cochleagram")
N_CH = 65  # CARFAC channels at 16 kHz (DESIGN.md)
CLIP = "slt_04"


def _clip_path():
  import importlib.resources
  return importlib.resources.files("dal_widgets") / "data" / "clips" / f"{CLIP}.flac"


@pytest.fixture(autouse=True)
def no_compilation_cache(monkeypatch):
  """The CLI switches on JAX's persistent cache for the whole process: not in tests (as the apps'
  tests do, tests/ui/test_app.py); tests/test_compile_cache.py covers it in subprocesses."""
  monkeypatch.setenv("DAL_JAX_CACHE_DIR", "")


@pytest.fixture(scope="module")
def ear_file(tmp_path_factory):
  """A fitted-ear file without the minute-long fit: uniform OHC and IHC losses."""
  from dal_widgets.hearing.fit import ImpairedEar
  ear = ImpairedEar(audiogram=preset("N3"), sr=16000.0, style="v3",
                    ohc_health=np.full(N_CH, 0.3), ihc_gain=np.full(N_CH, 0.3),
                    freqs_hz=(1000.0,), target_db_hl=(40.0,), fitted_db_hl=(40.0,))
  path = tmp_path_factory.mktemp("ear") / "ear.json"
  path.write_text(json.dumps(ear.to_dict()))
  return path


def _one_line_error(capsys, command):
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert lines[0].startswith(f"dal {command}: error: " if command else "dal: error: ")
  return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
  assert cli.main([command, "--help"]) == 0
  assert capsys.readouterr().out.startswith(f"usage: dal {command}")


def test_top_level_help_lists_every_subcommand(capsys):
  assert cli.main(["--help"]) == 0
  out = capsys.readouterr().out
  assert all(command in out for command in COMMANDS)


def test_no_command_is_a_usage_error(capsys):
  assert cli.main([]) == 2
  _one_line_error(capsys, None)


def test_unknown_option_is_a_one_line_usage_error(capsys):
  assert cli.main(["cochleagram", "x.wav", "--out", "x.npz", "--bogus"]) == 2
  assert "unrecognized arguments: --bogus" in _one_line_error(capsys, None)


def test_missing_input_file_is_exit_2_with_one_line(tmp_path, capsys):
  assert cli.main(["cochleagram", str(tmp_path / "missing.wav"), "--out",
                   str(tmp_path / "nap.npz")]) == 2
  assert "cannot read audio" in _one_line_error(capsys, "cochleagram")
  assert not (tmp_path / "nap.npz").exists()


def test_a_file_that_is_not_audio_is_exit_2(tmp_path, capsys):
  bad = tmp_path / "notes.wav"
  bad.write_text("not a sound\n")
  assert cli.main(["cochleagram", str(bad), "--out", str(tmp_path / "nap.npz")]) == 2
  assert "cannot read audio" in _one_line_error(capsys, "cochleagram")


def test_wrong_output_suffix_is_exit_2(tmp_path, capsys):
  assert cli.main(["cochleagram", str(_clip_path()), "--out", str(tmp_path / "nap.png")]) == 2
  assert "expected a .npz file" in _one_line_error(capsys, "cochleagram")


def test_unknown_preset_is_exit_2(capsys):
  assert cli.main(["fit-audiogram", "--preset", "X9"]) == 2
  assert "--preset: expected one of normal, N1" in _one_line_error(capsys, "fit-audiogram")


def test_missing_audiogram_file_is_exit_2(tmp_path, capsys):
  assert cli.main(["fit-audiogram", "--audiogram", str(tmp_path / "none.json")]) == 2
  assert "--audiogram: no such file" in _one_line_error(capsys, "fit-audiogram")


def test_malformed_ear_file_is_exit_2(tmp_path, capsys):
  bad = tmp_path / "ear.json"
  bad.write_text("{}")
  assert cli.main(["cochleagram", str(_clip_path()), "--out", str(tmp_path / "n.npz"),
                   "--ear", str(bad)]) == 2
  assert "is not a fitted ear" in _one_line_error(capsys, "cochleagram")


def test_enhance_without_checkpoint_says_to_train_first(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(cli, "_bundled_checkpoint", lambda: None)  # as in a package without a model
  assert cli.main(["enhance", str(_clip_path()), str(tmp_path / "out.wav")]) == 2
  assert "dal train" in _one_line_error(capsys, "enhance")


def test_enhance_with_an_empty_checkpoint_folder_is_exit_2(tmp_path, capsys):
  assert cli.main(["enhance", str(_clip_path()), str(tmp_path / "out.wav"),
                   "--checkpoint", str(tmp_path)]) == 2
  assert "no checkpoint in" in _one_line_error(capsys, "enhance")


def test_evaluate_rejects_bad_values_before_any_work(tmp_path, capsys):
  assert cli.main(["evaluate", "--out", str(tmp_path / "results.txt")]) == 2
  assert "expected a .md or .csv" in _one_line_error(capsys, "evaluate")
  assert cli.main(["evaluate", "--out", str(tmp_path / "missing" / "results.md")]) == 2
  assert "missing' does not exist" in _one_line_error(capsys, "evaluate")


@pytest.mark.parametrize("argv, problem", [
    (["fit-audiogram", "--preset", "N3", "--out", "{tmp}/missing/ear.json"], "does not exist"),
    (["fit-audiogram", "--preset", "N3", "--out", "{tmp}/ear.txt"], "expected a .json file"),
    (["train", "--steps", "1", "--workdir", "{tmp}/a_file/run"], "cannot write checkpoints in")])
def test_outputs_are_checked_before_the_work(tmp_path, capsys, monkeypatch, argv, problem):
  (tmp_path / "a_file").write_text("")
  monkeypatch.setattr(cli, "_fit", lambda *a: pytest.fail("the work started"))
  assert cli.main([a.format(tmp=tmp_path) for a in argv]) == 2
  assert problem in _one_line_error(capsys, argv[0])


@pytest.mark.parametrize("argv, problem", [
    (["evaluate", "--clip-s", "inf"], "--clip-s: expected seconds in [0.4, 60]"),
    (["evaluate", "--clip-s", "1e6"], "--clip-s: expected seconds in [0.4, 60]"),
    (["evaluate", "--clip-s", "nan"], "--clip-s: expected seconds in [0.4, 60]"),
    (["evaluate", "--n-clips", "100000"], "--n-clips: expected 1 to 1000, got 100000"),
    (["evaluate", "--clip-s", "0.01"], "--clip-s: expected seconds in [0.4, 60] (STOI needs"),
    (["evaluate", "--snr", "0", "5", "0"], "--snr: expected each SNR once (a repeat would count"),
    (["train", "--batch-size", "100000000"], "--batch-size: expected at most 1024, got 100000000"),
    (["train", "--steps", "0"], "--steps: expected an int >= 1, got 0"),
    (["cochleagram", "{clip}", "--level-db-spl", "1e6", "--out", "{tmp}/nap.npz"],
     "--level-db-spl: expected finite levels from -100 to 191 dB SPL"),
    (["evaluate", "--n-clips", "0"], "--n-clips: expected 1 to 1000, got 0"),
    (["evaluate", "--snr", "5", "nan"], "--snr: expected dB values within +-60, got nan"),
    (["evaluate", "--snr", "1e6"], "--snr: expected dB values within +-60"),
    (["fit-audiogram", "--sr", "nan"], "--sr: expected a whole sample rate in 8000..48000 Hz, got nan"),
    (["fit-audiogram", "--sr", "96000"], "--sr: expected a whole sample rate in 8000..48000 Hz"),
    (["fit-audiogram", "--sr", "16000.5"], "--sr: expected a whole sample rate in 8000..48000 Hz"),
    (["cochleagram", "{clip}", "--sr", "0", "--out", "{tmp}/nap.npz"], "--sr: expected a whole sample"),
    (["fit-audiogram", "--audiogram", "{tmp}", "--out", "{tmp}/ear.json"], "is a folder, not an"),
    (["fit-audiogram", "--out", "{tmp}/adir.json"], "adir.json' is a folder, not a file"),
    (["fit-audiogram", "--audiogram", "{tmp}/a.json", "--out", "{tmp}/a.json"],
     "a.json' is also the input; it would be overwritten"),
    (["enhance", "{tmp}/x.wav", "{tmp}/x.wav"], "x.wav' is also the input"),
    (["evaluate", "--out", "{tmp}/r.csv"], "r_clips.csv' is a folder, not a file"),
    (["cochleagram", "{clip}", "--ear", "{tmp}/a.json", "--out", "{tmp}/nap.npz"],
     "is not a fitted ear written by `dal fit-audiogram --out` (ear: has no field 'audiogram'"),
])
def test_values_and_paths_are_checked_before_the_work(tmp_path, capsys, monkeypatch, argv,
                                                      problem):
  from dal_widgets.hearing import Audiogram, write_audiogram
  write_audiogram(Audiogram((1000.0,), (40.0,)), tmp_path / "a.json")
  soundfile.write(str(tmp_path / "x.wav"), np.zeros(160), 16000)
  (tmp_path / "adir.json").mkdir()
  (tmp_path / "r_clips.csv").mkdir()  # in the way of `evaluate --out r.csv`'s per-clip table
  monkeypatch.setattr(cli, "_fit", lambda *a: pytest.fail("the work started"))
  args = [a.format(tmp=tmp_path, clip=_clip_path()) for a in argv]
  assert cli.main(args) == 2
  assert problem in _one_line_error(capsys, argv[0])
  assert (tmp_path / "a.json").read_text().startswith("{")  # inputs untouched


@pytest.mark.parametrize("command", ["enhance", "cochleagram"])
def test_a_level_for_a_silent_file_names_the_option_and_the_file(tmp_path, capsys, command):
  silent = tmp_path / "silent.wav"
  soundfile.write(str(silent), np.zeros(160), 16000)
  out = ([str(tmp_path / "out.wav")] if command == "enhance" else
         ["--out", str(tmp_path / "nap.npz")])
  assert cli.main([command, str(silent), *out, "--level-db-spl", "60"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1] == (f"dal {command}: error: --level-db-spl: {silent}: cannot set the level of "
                     "digital silence (rms 0) to 60.0 dB SPL"), err


def test_an_output_folder_that_cannot_be_written_fails_first(tmp_path, capsys, monkeypatch):
  import errno
  import tempfile

  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")
  monkeypatch.setattr(tempfile, "mkstemp", read_only)  # root ignores chmod: fake a read-only mount
  monkeypatch.setattr(cli, "_fit", lambda *a: pytest.fail("the work started"))
  assert cli.main(["fit-audiogram", "--out", str(tmp_path / "ear.json")]) == 2
  assert f"--out: cannot write in {str(tmp_path)!r}: Read-only file system" in \
      _one_line_error(capsys, "fit-audiogram")


def test_stop_signals_stop_training_once_then_interrupt(monkeypatch):
  import os
  import signal
  import threading
  before = {sig: signal.getsignal(sig) for sig in cli.STOP_SIGNALS}
  try:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
      stop = threading.Event()
      with pytest.raises(KeyboardInterrupt):
        with cli._stop_on_interrupt(stop):
          os.kill(os.getpid(), sig)  # handled in the main thread, at the next bytecode
          assert stop.is_set()
          os.kill(os.getpid(), sig)  # the second one aborts
          pytest.fail("a second stop signal must interrupt")
      # a signal arriving late (e.g. during the step after the stop) must not hit the exit
      assert all(signal.getsignal(s) == signal.SIG_IGN for s in cli.STOP_SIGNALS)
      for s, handler in before.items():
        signal.signal(s, handler)
  finally:
    for s, handler in before.items():
      signal.signal(s, handler)


LONG_STEP = """
import threading
import jax, jax.numpy as jnp
from dal_widgets import audio, cli

@jax.jit
def long_step(v):  # minutes inside XLA, which JAX lets finish before the interpreter ends
  return jax.lax.fori_loop(0, 1_000_000, lambda i, v: jnp.sin(v) + 1e-3, v)

def train(args):  # `dal train` with one very long step
  v = jnp.ones(100_000)
  long_step.lower(v).compile()
  with cli._stop_on_interrupt(threading.Event()):
    print("step running", flush=True)
    long_step(v).block_until_ready()
    print("step returned", flush=True)
  return cli.EXIT_OK

cli.cmd_train = train
raise SystemExit(cli.main(["train"]))
"""


def test_a_second_ctrl_c_ends_training_even_while_a_step_runs_in_xla(tmp_path):
  import signal
  import subprocess
  import sys
  import time
  script = tmp_path / "long_step.py"
  script.write_text(LONG_STEP)
  proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "step running"
    time.sleep(0.5)  # inside the step
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)  # a hang guard: the step itself takes minutes
  finally:
    proc.kill()
  assert proc.returncode == cli.EXIT_INTERRUPTED and "step returned" not in out
  assert "stopping after this step" in err and "dal train: interrupted" in err


def test_a_kill_during_a_write_leaves_no_temporary_file(tmp_path):
  import os
  import signal
  from dal_widgets.atomic import write_atomic
  before = {sig: signal.getsignal(sig) for sig in cli.STOP_SIGNALS}
  with pytest.raises(KeyboardInterrupt), cli._handling(cli._interrupt):
    write_atomic(tmp_path / "nap.npz", lambda f: (f.write(b"x" * 100),
                                                    os.kill(os.getpid(), signal.SIGTERM)))
  assert list(tmp_path.iterdir()) == []
  assert {sig: signal.getsignal(sig) for sig in cli.STOP_SIGNALS} == before


def _run_checkpoint(workdir, step, audiogram="N3", **changes):
  """A checkpoint a run resumes (fresh parameters and optimizer state) in `workdir`, without
  training, of the widget config with `changes`; returns that config."""
  import jax
  import jax.numpy as jnp
  from dal_widgets.loop import checkpoint, train
  from dal_widgets.loop.config import config_for
  cfg = config_for("widget").replace(audiogram=audiogram, **changes)
  state = train.create_train_state(jax.random.PRNGKey(0), cfg.model_config, cfg)
  checkpoint.save(workdir, state.replace(step=jnp.asarray(step, jnp.int32)), cfg)
  return cfg


def test_train_checks_what_it_would_resume_before_the_fit(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(cli, "_fit", lambda *a: pytest.fail("the work started"))
  _run_checkpoint(tmp_path / "run", 5)
  argv = ["train", "--config", "widget", "--workdir", str(tmp_path / "run")]
  assert cli.main(argv + ["--steps", "3"]) == 0
  assert "nothing to do: " in capsys.readouterr().out
  assert cli.main(argv + ["--steps", "9", "--preset", "S3"]) == 2
  line = _one_line_error(capsys, "train")
  assert "holds a model for listener 'N3'" in line and "`dal train --fresh`" in line
  assert "to continue that run give its listener again" in line
  assert cli.main(argv + ["--steps", "9", "--config", "paper"]) == 2
  assert 'holds a "small" SEANet, this run trains a "paper" one' in _one_line_error(capsys, "train")


def test_train_fits_a_presets_warm_up_into_a_shorter_run(tmp_path, capsys, monkeypatch):
  from dal_widgets.loop import train as train_lib
  class Trained(Exception):
    pass
  def train(cfg, *args, **kwargs):
    raise Trained(cfg)
  monkeypatch.setattr(cli, "_fit", lambda *a: None)
  monkeypatch.setattr(train_lib, "train", train)
  argv = ["train", "--config", "paper", "--workdir", str(tmp_path / "run"), "--steps"]
  with pytest.raises(Trained) as short:  # the preset warms up over 1000 steps
    cli.main(argv + ["400"])
  assert short.value.args[0].warmup_steps == 20
  assert ("note: the config's warm-up of 1000 steps does not fit 400 steps; warming up over 20"
          in capsys.readouterr().err)
  with pytest.raises(Trained) as long:
    cli.main(argv + ["5000"])
  assert long.value.args[0].warmup_steps == 1000


def test_train_without_a_listener_continues_the_runs_own(tmp_path, monkeypatch):
  class Fitted(Exception):
    pass
  def fit(audiogram, sr, style):
    raise Fitted(audiogram.name)
  monkeypatch.setattr(cli, "_fit", fit)
  _run_checkpoint(tmp_path / "run", 5, audiogram="S3")
  with pytest.raises(Fitted, match="S3"):
    cli.main(["train", "--config", "widget", "--workdir", str(tmp_path / "run"), "--steps", "9"])
  with pytest.raises(Fitted, match="N3"):  # a fresh start takes the config's listener
    cli.main(["train", "--config", "widget", "--workdir", str(tmp_path / "new"), "--steps", "9"])


def test_train_without_a_config_continues_the_runs_own(tmp_path, capsys, monkeypatch):
  """`dal train --workdir DIR` after a stopped `--config widget --steps 300` run goes on with that
  run's steps and settings, not the "default" preset's."""
  from dal_widgets.loop import train
  from dal_widgets.loop.config import config_for
  cfg = _run_checkpoint(tmp_path / "run", 63, steps=300)
  used = []
  def fake_train(cfg, workdir, **kwargs):
    used.append(cfg)
    raise cli.UsageError("stopped before the training")
  monkeypatch.setattr(train, "train", fake_train)
  monkeypatch.setattr(cli, "_fit", lambda *a: None)
  assert cli.main(["train", "--workdir", str(tmp_path / "run")]) == 2
  assert used == [cfg]
  assert cli.main(["train", "--workdir", str(tmp_path / "run"), "--config", "default"]) == 2
  assert used[-1] == config_for("default")  # a named preset is what it names


def test_train_says_where_it_resumes_how_to_go_on_and_what_it_skipped(tmp_path, capsys, ear_file,
                                                                      monkeypatch):
  from dal_widgets.loop import train
  _run_checkpoint(tmp_path / "my run", 63, steps=300)
  def stopped(cfg, workdir, **kwargs):
    return train.TrainResult(params=None, history=[], stopped_early=True, steps_done=70,
                             skipped_steps=2, checkpoint=workdir / "ckpt_00000070.msgpack")
  monkeypatch.setattr(train, "train", stopped)
  argv = ["train", "--workdir", str(tmp_path / "my run"), "--ear", str(ear_file)]
  assert cli.main(argv) == cli.EXIT_INTERRUPTED
  out, err = capsys.readouterr()
  assert f"resuming {tmp_path / 'my run' / 'ckpt_00000063.msgpack'} at step 63/300" in err
  assert f"(`dal train --workdir '{tmp_path / 'my run'}' --ear {ear_file}` continues it)" in out
  assert "(2 non-finite steps skipped: the parameters kept their last good values)" in out


def test_a_warning_read_from_several_places_prints_once(tmp_path, capsys, monkeypatch):
  from dal_widgets.errors import DalError
  def stop(*a):
    raise DalError("stopped before the fit")
  monkeypatch.setattr(cli, "_fit", stop)
  _run_checkpoint(tmp_path / "run", 5)
  (tmp_path / "run" / "latest.json").write_text("{bad")  # the marker, read by every look-up
  assert cli.main(["train", "--workdir", str(tmp_path / "run"), "--steps", "9"]) == 2
  warned = [line for line in capsys.readouterr().err.splitlines() if ": warning: " in line]
  assert len(warned) == 1 and "latest.json is unreadable" in warned[0], warned


def test_train_on_a_folder_without_a_readable_checkpoint_says_what_to_do(tmp_path, capsys):
  _run_checkpoint(tmp_path / "run", 5)
  path = tmp_path / "run" / "ckpt_00000005.msgpack"
  path.write_bytes(path.read_bytes()[:1000])  # truncated, the only checkpoint
  assert cli.main(["train", "--workdir", str(tmp_path / "run")]) == 2
  line = _one_line_error(capsys, "train")
  assert "truncated or corrupt" in line and "--fresh starts afresh there" in line


def test_train_fresh_moves_the_earlier_checkpoints_aside(tmp_path, capsys, monkeypatch):
  from dal_widgets.errors import DalError
  def stop(*a):
    raise DalError("stopped before the fit")
  monkeypatch.setattr(cli, "_fit", stop)
  _run_checkpoint(tmp_path / "run", 5)
  assert cli.main(["train", "--config", "widget", "--workdir", str(tmp_path / "run"),
                   "--preset", "S3", "--fresh"]) == 2
  aside = [p for p in (tmp_path / "run").iterdir() if p.name.startswith("replaced_")]
  assert len(aside) == 1 and (aside[0] / "ckpt_00000005.msgpack").exists()
  assert not (tmp_path / "run" / "ckpt_00000005.msgpack").exists()
  assert f"moved the earlier run's checkpoints to {aside[0]}" in capsys.readouterr().err


def test_train_with_an_ear_of_another_rate_makes_no_folder(tmp_path, capsys, ear_file):
  ear = json.loads(ear_file.read_text())
  ear["sr"] = 22050.0
  (tmp_path / "ear22k.json").write_text(json.dumps(ear))
  workdir = tmp_path / "run"
  assert cli.main(["train", "--config", "widget", "--ear", str(tmp_path / "ear22k.json"),
                   "--workdir", str(workdir), "--steps", "1"]) == 2
  assert "--ear: fitted for sr=22050 Hz" in _one_line_error(capsys, "train")
  assert not workdir.exists()


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_enhance_keeps_or_reports_peaks_above_full_scale(tmp_path, capsys, suffix):
  out = tmp_path / f"loud{suffix}"
  assert cli.main(["enhance", str(_clip_path()), str(out), "--level-db-spl", "95"]) == 0
  err = capsys.readouterr().err
  assert f"wrote {out} at 16000 Hz:" in err  # the clip's own rate: no resampling note
  y, _ = soundfile.read(str(out), dtype="float32")
  if suffix == ".wav":
    assert soundfile.info(str(out)).subtype == "FLOAT" and np.max(np.abs(y)) > 1.0
    assert "written as 32-bit float WAV, so nothing is clipped" in err
  elif suffix == ".ogg":  # Vorbis codes floats: no clipping in the file
    assert np.max(np.abs(y)) > 1.0 and "Ogg Vorbis keeps it, but players may clip it" in err
  else:
    assert np.max(np.abs(y)) <= 1.0 and ".flac clips it (the level above is after clipping)" in err
  # the level printed is the level of what the file holds
  printed = float(re.search(r"([\d.]+) dB SPL out", err).group(1))
  assert printed == pytest.approx(float(audio.rms_to_db_spl(audio.rms(y))), abs=0.15)


def test_enhance_says_when_it_changed_the_rate_or_mixed_channels(tmp_path, capsys):
  x, sr = soundfile.read(str(_clip_path()), dtype="float32")
  stereo = np.stack([np.repeat(x, 3)[:sr]] * 2, axis=1)  # 1/3 s at 48 kHz, two channels
  soundfile.write(str(tmp_path / "in.wav"), stereo, 48000)
  assert cli.main(["enhance", str(tmp_path / "in.wav"), str(tmp_path / "out.wav")]) == 0
  err = capsys.readouterr().err
  assert "at 16000 Hz (resampled from the input's 48000 Hz)" in err
  assert "in.wav has 2 channels; the model hears their average (mono)" in err


def test_evaluate_names_its_model_and_a_listener_it_was_not_trained_for(capsys, monkeypatch):
  from types import SimpleNamespace
  from dal_widgets.loop import evaluate as ev
  monkeypatch.setattr(cli, "_fitted_ear", lambda *a: SimpleNamespace(audiogram=preset("S3")))
  monkeypatch.setattr(cli, "_evaluation_clips", lambda *a: [])
  table = SimpleNamespace(to_markdown=lambda: "| table |\n", systems=("DAL",))
  monkeypatch.setattr(ev, "evaluate", lambda clips, sr, ear, systems, on_progress: table)
  assert cli.main(["evaluate", "--preset", "S3"]) == 0
  out, err = capsys.readouterr()
  assert out == "| table |\n"  # one system: nothing to compare it with
  assert f"DAL model: {cli._bundled_checkpoint()}, step " in err
  assert "note: DAL was trained for N3, not for the listener evaluated here (S3)" in err


def _aid_files(tmp_path, sr_of_second=None):
  """Two copies of the bundled aid as checkpoint files; the second optionally at another rate."""
  import dataclasses
  from dal_widgets.loop import checkpoint
  params, cfg, step = checkpoint.restore_params(cli._bundled_checkpoint())
  paths = [tmp_path / "first_aid.msgpack", tmp_path / "second_aid.msgpack"]
  paths[0].write_bytes(checkpoint.aid_bytes(params, cfg, step))
  if sr_of_second is not None:
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sr=sr_of_second))
  paths[1].write_bytes(checkpoint.aid_bytes(params, cfg, step + 1))
  return paths


def test_evaluate_compares_several_aids_the_last_against_every_other_system(tmp_path, capsys,
                                                                            monkeypatch):
  from types import SimpleNamespace
  from dal_widgets.loop import evaluate as ev
  monkeypatch.setattr(cli, "_fitted_ear", lambda *a: SimpleNamespace(audiogram=preset("N3")))
  monkeypatch.setattr(cli, "_evaluation_clips", lambda *a: [])

  def fake_evaluate(clips, sr, ear, systems, on_progress):
    noisy = np.linspace(-0.1, 0.1, 160, dtype=np.float32)
    clip_rows = tuple({"system": s.name, "clip": i, "snr_db": 5.0,
                       "stoi": 0.5 + i / 10 + 0.01 * k + float(np.mean(s(noisy, sr)))}
                      for k, s in enumerate(systems) for i in range(3))
    rows = tuple({"system": s.name, "snr_db": "all", "n_clips": 3, "stoi": 0.0} for s in systems)
    return ev.EvaluationTable(rows=rows, clip_rows=clip_rows, metrics=("stoi",))

  monkeypatch.setattr(ev, "evaluate", fake_evaluate)
  first, second = _aid_files(tmp_path)
  assert cli.main(["evaluate", "--checkpoint", str(first), "--checkpoint", str(second)]) == 0
  out, err = capsys.readouterr()
  assert f"DAL model: {first}, step " in err and f"DAL model: {second}, step " in err
  assert "DAL second_aid minus each other system" in out
  for other in ("unprocessed", "NAL-R+WDRC", "DAL first_aid"):
    assert f"| DAL second_aid | {other} | stoi | " in out


def test_evaluate_refuses_one_aid_twice_and_aids_of_different_rates(tmp_path, capsys):
  first, second = _aid_files(tmp_path, sr_of_second=22050)
  assert cli.main(["evaluate", "--checkpoint", str(first), "--checkpoint", str(first)]) == 2
  assert "--checkpoint: the same checkpoint is given twice" in _one_line_error(capsys, "evaluate")
  _run_checkpoint(tmp_path / "run", 5)  # a folder and its own latest checkpoint file
  latest = tmp_path / "run" / "ckpt_00000005.msgpack"
  assert latest.is_file()
  assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--checkpoint",
                   str(latest)]) == 2
  assert "the same checkpoint is given twice" in _one_line_error(capsys, "evaluate")
  assert cli.main(["evaluate", "--checkpoint", str(first), "--checkpoint", str(second)]) == 2
  error = _one_line_error(capsys, "evaluate")
  assert f"{second} runs at 22050 Hz, CARFAC v3; {first} at 16000 Hz" in error


def test_evaluate_markdown_file_holds_the_means_and_the_paired_differences(tmp_path, capsys,
                                                                          monkeypatch):
  from types import SimpleNamespace
  from dal_widgets.loop import evaluate as ev
  monkeypatch.setattr(cli, "_fitted_ear", lambda *a: SimpleNamespace(audiogram=preset("N3")))
  monkeypatch.setattr(cli, "_evaluation_clips", lambda *a: [])
  clip_rows = tuple({"system": name, "clip": i, "snr_db": 5.0, "stoi": 0.5 + i / 10 + gain}
                    for name, gain in (("unprocessed", 0.0), ("DAL", 0.1)) for i in range(3))
  rows = tuple({"system": name, "snr_db": "all", "n_clips": 3, "stoi": 0.6 + gain}
               for name, gain in (("unprocessed", 0.0), ("DAL", 0.1)))
  table = ev.EvaluationTable(rows=rows, clip_rows=clip_rows, metrics=("stoi",))
  monkeypatch.setattr(ev, "evaluate", lambda clips, sr, ear, systems, on_progress: table)
  out = tmp_path / "results.md"
  assert cli.main(["evaluate", "--out", str(out)]) == 0
  text = out.read_text()
  assert text == capsys.readouterr().out
  assert text.startswith(table.to_markdown())
  assert "| DAL | unprocessed | stoi | +0.1 | [+0.1, +0.1] | 0 | 3 | 3 | better |" in text


@pytest.mark.slow  # compiles the training step (~20-60 s on 2 cores)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_killed_training_run_saves_its_steps_and_resumes(tmp_path, ear_file, sig):
  import signal
  import time
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "dal_widgets.cli", "train", "--config", "widget", "--steps",
             "200", "--batch-size", "1", "--ear", str(ear_file), "--workdir", str(workdir)]
  proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  for line in proc.stderr:  # log lines, one per step (stderr is not a terminal)
    if "step 2/200" in line or time.monotonic() > deadline:
      break
  proc.send_signal(getattr(signal, sig))
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == cli.EXIT_INTERRUPTED, err
  assert "stopped at step" in out and "Traceback" not in err
  saved = sorted(p.name for p in workdir.iterdir())
  assert saved[-1] == "latest.json" and saved[0].startswith("ckpt_")
  assert int(saved[0][5:13]) >= 2 and not [n for n in saved if n.endswith(".tmp")]


def test_every_fit_says_which_points_are_above_the_model(tmp_path, capsys, monkeypatch):
  from types import SimpleNamespace
  from dal_widgets.hearing import Audiogram, write_audiogram
  from dal_widgets.hearing import fit
  path = write_audiogram(Audiogram((1000.0, 8000.0), (40.0, 60.0)), tmp_path / "a.json")
  fitted = SimpleNamespace(freqs_hz=(1000.0,), table=lambda: "| 1000 |")  # as fit_cochlea: 8 kHz
  monkeypatch.setattr(fit, "fit_cochlea", lambda *a, **k: fitted)  # is beyond 16 kHz's reach
  assert cli.main(["fit-audiogram", "--audiogram", str(path)]) == 0
  err = capsys.readouterr().err
  assert "fitting CARFAC (v3, 16000 Hz) to a custom audiogram (up to" in err
  assert "note: 8000 Hz not fitted: above the tones a 16000 Hz model can test" in err
  assert cli._fit(Audiogram((1000.0, 8000.0), (40.0, 60.0)), 16000, "v3") is fitted  # any command
  assert "note: 8000 Hz not fitted" in capsys.readouterr().err


@pytest.mark.parametrize("error", [MemoryError("Unable to allocate 745 GiB"),
                                   type("JaxRuntimeError", (RuntimeError,), {})(
                                       "RESOURCE_EXHAUSTED: Out of memory allocating 2772 bytes")])
def test_out_of_memory_is_one_line_not_a_traceback(capsys, monkeypatch, error):
  def fail(args):
    raise error
  monkeypatch.setattr(cli, "cmd_fit_audiogram", fail)
  assert cli.main(["fit-audiogram", "--preset", "N3"]) == cli.EXIT_FAILED
  assert "error: out of memory (" in _one_line_error(capsys, "fit-audiogram")


def test_copied_names_match_the_lower_layers():
  from dal_widgets.audio.io import FORMATS
  from dal_widgets.loop.config import MAX_EVAL_CLIPS, NOISE_KINDS, PRESETS
  assert cli.NOISE_KINDS == NOISE_KINDS and cli.MAX_EVAL_CLIPS == MAX_EVAL_CLIPS
  assert set(cli.CONFIG_NAMES) == set(PRESETS)
  assert cli.CONFIG_SIZES == {name: (cfg.model, cfg.steps, cfg.batch_size, cfg.data.clip_s)
                              for name, cfg in PRESETS.items()}
  assert set(cli.AUDIO_SUFFIXES) == set(FORMATS)


def test_enhance_rejects_an_unknown_output_format_first(tmp_path, capsys):
  assert cli.main(["enhance", str(_clip_path()), str(tmp_path / "out.mp3"),
                   "--checkpoint", str(tmp_path)]) == 2
  assert "output: expected a .wav or .flac or .ogg file" in _one_line_error(capsys, "enhance")


def test_cochleagram_writes_nap_of_the_clip(tmp_path, ear_file):
  normal_path, impaired_path = tmp_path / "normal.npz", tmp_path / "impaired.npz"
  assert cli.main(["cochleagram", str(_clip_path()), "--out", str(normal_path)]) == 0
  assert cli.main(["cochleagram", str(_clip_path()), "--out", str(impaired_path),
                   "--ear", str(ear_file)]) == 0
  x, sr = load_clip(CLIP)
  normal, impaired = np.load(normal_path), np.load(impaired_path)
  assert normal["nap"].shape == (x.shape[0], N_CH)
  assert normal["cf_hz"].shape == (N_CH,) and normal["cf_hz"][0] > normal["cf_hz"][-1]
  assert float(normal["sr"]) == sr
  assert np.all(normal["ohc_health"] == 1.0) and np.all(impaired["ohc_health"] == np.float32(0.3))
  assert impaired["nap"].mean() < 0.5 * normal["nap"].mean()  # the impaired ear hears less
  assert sorted(p.name for p in tmp_path.iterdir()) == ["impaired.npz", "normal.npz"]


def test_cochleagram_help_names_every_array_it_writes(tmp_path, capsys):
  out = tmp_path / "nap.npz"
  assert cli.main(["cochleagram", str(_clip_path()), "--out", str(out), "--bm"]) == 0
  written = set(np.load(out).files)
  capsys.readouterr()
  assert cli.main(["cochleagram", "--help"]) == 0
  text = " ".join(capsys.readouterr().out.split())
  described = {name for name in written if re.search(rf"\b{name}\b", text)}
  assert described == written, f"--help does not mention {sorted(written - described)}"
  assert "digital rms 1.0 = 100 dB SPL" in text  # the NAP depends on the file's absolute level


def test_cochleagram_says_when_it_resampled(tmp_path, capsys):
  x, sr = load_clip(CLIP)
  soundfile.write(str(tmp_path / "48k.wav"), np.repeat(x, 3), 3 * sr)
  assert cli.main(["cochleagram", str(tmp_path / "48k.wav"), "--sr", "16000",
                   "--out", str(tmp_path / "nap.npz")]) == 0
  assert "at 16000 Hz (resampled from the input's 48000 Hz)" in capsys.readouterr().err
  assert cli.main(["cochleagram", str(_clip_path()), "--out", str(tmp_path / "own.npz")]) == 0
  assert "resampled" not in capsys.readouterr().err


def test_subprocess_bad_input_exit_2_without_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "dal_widgets.cli", "cochleagram", str(tmp_path / "missing.wav"),
       "--out", str(tmp_path / "nap.npz")], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().startswith("dal cochleagram: error:")
  assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # compiles the batched CARFAC + SAI pass: ~10 s on 2 cores
def test_evaluate_tiny_setting_writes_csv(tmp_path, ear_file, capsys, monkeypatch):
  monkeypatch.setattr(cli, "_bundled_checkpoint", lambda: None)  # only the two baseline systems
  out = tmp_path / "results.CSV"  # the suffix in any case picks the format
  assert cli.main(["evaluate", "--ear", str(ear_file), "--n-clips", "1", "--snr", "5",
                   "--clip-s", "0.5", "--noise", "white", "--out", str(out)]) == 0
  captured = capsys.readouterr()
  printed = captured.out
  # no terminal here: progress as lines for a log file, at each tenth of the work
  assert re.findall(r"dal evaluate: (\d/\d) clips", captured.err) == ["1/2", "2/2"]
  assert "| unprocessed | 5 | 1 |" in printed and "| NAL-R+WDRC | all | 1 |" in printed
  # then the last system minus the others per recording: one clip gives no interval, and the
  # text says how few recordings there are
  assert "NAL-R+WDRC minus each other system, per held-out recording" in printed
  assert "Only 1 held-out recording: the intervals are wide" in printed
  assert "| NAL-R+WDRC | unprocessed | nap_l1 | " in printed
  assert printed.rstrip().endswith("| n/a | n/a | 1 | 1 | no clear difference |")
  with open(out, newline="") as f:
    rows = list(csv.DictReader(f))
  assert [(r["system"], r["snr_db"]) for r in rows] == [
      ("unprocessed", "5.0"), ("unprocessed", "all"), ("NAL-R+WDRC", "5.0"), ("NAL-R+WDRC", "all")]
  assert all(np.isfinite(float(r["stoi"])) for r in rows)
  # each clip's values beside the means, with the recording it comes from
  with open(tmp_path / "results_clips.CSV", newline="") as f:
    clip_rows = list(csv.DictReader(f))
  assert [(r["system"], r["clip"], r["snr_db"]) for r in clip_rows] == [
      ("unprocessed", "0", "5.0"), ("NAL-R+WDRC", "0", "5.0")]
  from dal_widgets.loop.config import DataConfig
  from dal_widgets.loop.data import SpeechSource
  assert clip_rows[0]["source"] in SpeechSource(DataConfig(sr=16000), "held_out").names
  assert float(clip_rows[0]["nap_l1"]) == pytest.approx(float(rows[1]["nap_l1"]))


def test_fit_audiogram_prints_the_table_and_writes_a_reusable_ear(tmp_path, capsys):
  from dal_widgets.hearing import Audiogram, write_audiogram
  from dal_widgets.hearing.fit import ImpairedEar
  audiogram_path = write_audiogram(Audiogram((1000.0, 2000.0), (40.0, 50.0), name="two"),
                                   tmp_path / "two.json")
  ear_path = tmp_path / "ear.json"
  assert cli.main(["fit-audiogram", "--audiogram", str(audiogram_path), "--out",
                   str(ear_path)]) == 0
  captured = capsys.readouterr()
  out = captured.out
  assert "not fitted" not in captured.err
  assert out.splitlines()[0] == "| freq_hz | target_db_hl | fitted_db_hl | residual_db |"
  assert "| 1000 | 40.0 |" in out and "| 2000 | 50.0 |" in out
  ear = ImpairedEar.from_dict(json.loads(ear_path.read_text()))
  assert ear.target_db_hl == (40.0, 50.0) and ear.ohc_health.shape == (N_CH,)
  assert cli.main(["cochleagram", str(_clip_path()), "--out", str(tmp_path / "n.npz"),
                   "--ear", str(ear_path), "--sr", "22050"]) == 2  # fitted at 16 kHz
  assert "--ear: fitted for sr=16000 Hz" in _one_line_error(capsys, "cochleagram")


def test_fitting_says_which_better_than_normal_thresholds_count_as_0_db_hl(capsys, monkeypatch):
  from types import SimpleNamespace
  from dal_widgets.hearing import Audiogram, fit
  monkeypatch.setattr(fit, "fit_cochlea", lambda gram, sr, style: SimpleNamespace(
      freqs_hz=gram.freqs_hz))  # the note needs only the fitted frequencies
  cli._fit(Audiogram((500.0, 1000.0, 2000.0), (-10.0, 0.0, -5.0)), 16000.0, "v3")
  assert ("note: thresholds better than 0 dB HL at 500, 2000 Hz are fitted as 0 dB HL"
          in capsys.readouterr().err)
  cli._fit(Audiogram((500.0, 1000.0), (0.0, 30.0)), 16000.0, "v3")
  assert "better than 0 dB HL" not in capsys.readouterr().err


@pytest.mark.slow  # trains 2 steps (compiles the train step: ~20 s) and evaluates
def test_train_enhance_evaluate_round_trip(tmp_path, ear_file, capsys):
  from dal_widgets.audio import load
  workdir = tmp_path / "run"
  train_args = ["train", "--config", "widget", "--steps", "2", "--batch-size", "1",
                "--ear", str(ear_file), "--workdir", str(workdir)]
  assert cli.main(train_args) == 0
  assert "finished step 2/2" in capsys.readouterr().out
  assert (workdir / "ckpt_00000002.msgpack").is_file()
  assert cli.main(train_args[:4] + ["3"] + train_args[5:]) == 0  # resumes: one more step
  assert "finished step 3/3" in capsys.readouterr().out

  out_wav = tmp_path / "aided.wav"
  assert cli.main(["enhance", str(_clip_path()), str(out_wav), "--checkpoint", str(workdir)]) == 0
  y, sr = load(out_wav)
  assert sr == 16000 and y.shape == load_clip(CLIP)[0].shape

  assert cli.main(["evaluate", "--checkpoint", str(workdir), "--ear", str(ear_file),
                   "--n-clips", "1", "--snr", "5", "--clip-s", "0.5", "--noise", "white"]) == 0
  printed = capsys.readouterr().out
  assert "| DAL | 5 | 1 |" in printed and "| NAL-R+WDRC | all | 1 |" in printed


def test_an_aid_file_from_the_fine_tune_panel_enhances_like_its_folder(tmp_path, capsys):
  from dal_widgets.loop import checkpoint
  params, cfg, step = checkpoint.restore_params(cli._bundled_checkpoint())
  aid = tmp_path / "dal_aid_N3_320steps.msgpack"  # what the panel's download link saves
  aid.write_bytes(checkpoint.aid_bytes(params, cfg, step))
  from_folder, from_file = tmp_path / "folder.wav", tmp_path / "file.wav"
  assert cli.main(["enhance", str(_clip_path()), str(from_folder)]) == 0
  assert cli.main(["enhance", str(_clip_path()), str(from_file), "--checkpoint", str(aid)]) == 0
  np.testing.assert_array_equal(soundfile.read(str(from_file))[0],
                                soundfile.read(str(from_folder))[0])
  capsys.readouterr()
  assert cli.main(["enhance", str(_clip_path()), str(from_file),
                   "--checkpoint", str(tmp_path / "nothing.msgpack")]) == 2
  assert "no such folder or file" in _one_line_error(capsys, "enhance")


def test_enhance_with_the_bundled_model_writes_an_amplified_file(tmp_path):
  assert cli._bundled_checkpoint() is not None
  out = tmp_path / "aided.wav"
  assert cli.main(["enhance", str(_clip_path()), str(out)]) == 0

  x, sr_in = soundfile.read(str(_clip_path()), dtype="float32")
  y, sr_out = soundfile.read(str(out), dtype="float32")
  assert sr_out == sr_in and len(y) == len(x)
  assert np.sqrt(np.mean(y**2)) > 1.4 * np.sqrt(np.mean(x**2))  # the N3 aid adds gain
