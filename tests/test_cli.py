"""The `dal` command line: help, one-line user errors (status 2), real runs on tiny inputs."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from dal_widgets import cli
from dal_widgets.audio import load_clip
from dal_widgets.hearing import preset

COMMANDS = ("fit-audiogram", "train", "enhance", "evaluate", "cochleagram")
N_CH = 65  # CARFAC channels at 16 kHz (DESIGN.md)
CLIP = "slt_04"


def _clip_path():
  import importlib.resources
  return importlib.resources.files("dal_widgets") / "data" / "clips" / f"{CLIP}.flac"


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
  assert cli.main(["evaluate", "--n-clips", "0"]) == 2
  assert "--n-clips: expected >= 1" in _one_line_error(capsys, "evaluate")
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


def test_copied_names_match_the_lower_layers():
  from dal_widgets.audio.io import FORMATS
  from dal_widgets.loop.config import NOISE_KINDS, PRESETS
  assert cli.NOISE_KINDS == NOISE_KINDS
  assert set(cli.CONFIG_NAMES) == set(PRESETS)
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
  out = tmp_path / "results.csv"
  assert cli.main(["evaluate", "--ear", str(ear_file), "--n-clips", "1", "--snr", "5",
                   "--clip-s", "0.5", "--noise", "white", "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "| unprocessed | 5 | 1 |" in printed and "| NAL-R+WDRC | all | 1 |" in printed
  with open(out, newline="") as f:
    rows = list(csv.DictReader(f))
  assert [(r["system"], r["snr_db"]) for r in rows] == [
      ("unprocessed", "5.0"), ("unprocessed", "all"), ("NAL-R+WDRC", "5.0"), ("NAL-R+WDRC", "all")]
  assert all(np.isfinite(float(r["stoi"])) for r in rows)


def test_fit_audiogram_prints_the_table_and_writes_a_reusable_ear(tmp_path, capsys):
  from dal_widgets.hearing import Audiogram, write_audiogram
  from dal_widgets.hearing.fit import ImpairedEar
  audiogram_path = write_audiogram(Audiogram((1000.0, 2000.0), (40.0, 50.0), name="two"),
                                   tmp_path / "two.json")
  ear_path = tmp_path / "ear.json"
  assert cli.main(["fit-audiogram", "--audiogram", str(audiogram_path), "--out",
                   str(ear_path)]) == 0
  out = capsys.readouterr().out
  assert out.splitlines()[0] == "| freq_hz | target_db_hl | fitted_db_hl | residual_db |"
  assert "| 1000 | 40.0 |" in out and "| 2000 | 50.0 |" in out
  ear = ImpairedEar.from_dict(json.loads(ear_path.read_text()))
  assert ear.target_db_hl == (40.0, 50.0) and ear.ohc_health.shape == (N_CH,)
  assert cli.main(["cochleagram", str(_clip_path()), "--out", str(tmp_path / "n.npz"),
                   "--ear", str(ear_path), "--sr", "22050"]) == 2  # fitted at 16 kHz
  assert "--ear: fitted for sr=16000 Hz" in _one_line_error(capsys, "cochleagram")


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
