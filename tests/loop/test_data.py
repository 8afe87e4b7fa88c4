"""Training data: determinism, exact level and SNR, crops and padding, babble talkers, splits."""
import dataclasses

import numpy as np
import pytest

from dal_widgets import audio
from dal_widgets.errors import AudioError, ParameterError
from dal_widgets.loop import data
from dal_widgets.loop.config import DataConfig

SR = 16000
CFG = DataConfig(clip_s=0.25)
LEVEL_ATOL_DB = 1e-3  # float32 rms of a few thousand samples: ~1e-6 dB in practice


def _level_db_spl(x):
  return audio.rms_to_db_spl(audio.rms(np.asarray(x, np.float64), axis=-1))


def test_batch_shapes_and_types():
  batch = data.SpeechSource(CFG).make_batch(0, 3)
  assert batch.noisy.shape == batch.clean.shape == (3, int(0.25 * SR))
  assert batch.noisy.dtype == batch.clean.dtype == batch.snr_db.dtype == np.float32
  assert batch.snr_db.shape == (3,)


def test_same_seed_and_step_give_the_same_batch_and_others_differ():
  a = data.SpeechSource(CFG).make_batch(7, 2)
  b = data.SpeechSource(CFG).make_batch(7, 2)
  np.testing.assert_array_equal(a.noisy, b.noisy)
  np.testing.assert_array_equal(a.clean, b.clean)
  other_step = data.SpeechSource(CFG).make_batch(8, 2)
  other_seed = data.SpeechSource(dataclasses.replace(CFG, seed=1)).make_batch(7, 2)
  assert not np.array_equal(a.noisy, other_step.noisy)
  assert not np.array_equal(a.noisy, other_seed.noisy)
  from_generator = data.SpeechSource(CFG).make_batch(np.random.default_rng((CFG.seed, 7)), 2)
  np.testing.assert_array_equal(a.noisy, from_generator.noisy)


@pytest.mark.parametrize("kind", ["babble", "speech_shaped", "white"])
def test_speech_level_and_snr_are_exact_and_in_range(kind):
  cfg = dataclasses.replace(CFG, noise_kinds=(kind,), noise_probs=(1.0,))
  batch = data.SpeechSource(cfg).make_batch(3, 8)
  np.testing.assert_allclose(_level_db_spl(batch.clean), cfg.speech_level_db_spl,
                             atol=LEVEL_ATOL_DB)
  measured_snr = _level_db_spl(batch.clean) - _level_db_spl(batch.noisy - batch.clean)
  np.testing.assert_allclose(measured_snr, batch.snr_db, atol=LEVEL_ATOL_DB)
  low, high = cfg.snr_db_range
  assert np.all((batch.snr_db >= low) & (batch.snr_db <= high))
  assert np.ptp(batch.snr_db) > 1.0  # drawn, not constant


def test_a_clip_longer_than_every_recording_is_zero_padded():
  longest_s = max(c.duration_s for c in audio.list_clips())
  cfg = dataclasses.replace(CFG, clip_s=longest_s + 1.0)
  source = data.SpeechSource(cfg)
  batch = source.make_batch(0, 2)
  assert batch.clean.shape == (2, cfg.n_samples)
  for clean in batch.clean:
    silent = np.flatnonzero(clean == 0.0)
    assert silent.size >= SR - 1  # at least the extra second is padding
  np.testing.assert_allclose(_level_db_spl(batch.clean), cfg.speech_level_db_spl,
                             atol=LEVEL_ATOL_DB)


def test_babble_uses_only_other_talkers():
  source = data.SpeechSource(CFG)
  for recording in source.recordings:
    pool = source.babble_pool(recording.talker)
    assert pool and all(r.talker != recording.talker for r in pool)
    assert {r.name for r in pool} <= set(source.names)


def test_train_and_held_out_splits_are_disjoint_and_cover_the_clips():
  train = data.SpeechSource(CFG, "train").names
  held_out = data.SpeechSource(CFG, "held_out").names
  assert train and held_out and not set(train) & set(held_out)
  assert sorted(train + held_out) == sorted(c.name for c in audio.list_clips())


def test_held_out_set_is_fixed_paired_over_snrs_and_exact():
  batch = data.held_out_set(CFG, snrs=(0.0, 5.0), n=3)
  again = data.held_out_set(CFG, snrs=(0.0, 5.0), n=3)
  np.testing.assert_array_equal(batch.noisy, again.noisy)
  np.testing.assert_array_equal(batch.snr_db, [0.0, 5.0] * 3)
  np.testing.assert_array_equal(batch.clean[0], batch.clean[1])  # same crop at both SNRs
  measured_snr = _level_db_spl(batch.clean) - _level_db_spl(batch.noisy - batch.clean)
  np.testing.assert_allclose(measured_snr, batch.snr_db, atol=LEVEL_ATOL_DB)
  # its speech comes from held-out recordings only
  held_out = [audio.load_clip(n)[0] for n in data.SpeechSource(CFG, "held_out").names]
  train = [audio.load_clip(n)[0] for n in data.SpeechSource(CFG, "train").names]
  assert any(_contains(x, batch.clean[0]) for x in held_out)
  assert not any(_contains(x, batch.clean[0]) for x in train)


def _contains(x, crop):
  """True if `crop` is a scaled copy of some stretch of `x` (normalised cross-correlation ~1)."""
  x, crop = np.asarray(x, np.float64), np.asarray(crop, np.float64)
  dots = np.correlate(x, crop, "valid")
  energy = np.convolve(x ** 2, np.ones(crop.size), "valid")
  return np.max(dots / (np.sqrt(energy) * np.linalg.norm(crop) + 1e-12)) > 0.9999


def test_evaluation_clips_whole_recordings_and_crops():
  whole = data.evaluation_clips(CFG, snrs_db=(0.0,), n_clips=2)
  names = data.SpeechSource(CFG, "held_out").names
  for noisy, _, _, recording in whole:  # each clip names its recording (loop.paired's unit)
    assert recording in names and len(noisy) == len(audio.load_clip(recording)[0])
  # the crops take the held-out recordings in turn: n clips cover min(n, recordings) of them
  assert len(names) >= 2 and len({c[3] for c in whole}) == 2
  three = data.evaluation_clips(CFG, snrs_db=(0.0,), n_clips=len(names) + 1, clip_s=0.5)
  assert {c[3] for c in three} == set(names)
  cropped = data.evaluation_clips(CFG, snrs_db=(0.0, 5.0), n_clips=2, clip_s=0.5)
  assert len(cropped) == 4 and all(len(c[0]) == SR // 2 for c in cropped)
  assert [c[2] for c in cropped] == [0.0, 5.0, 0.0, 5.0]
  # longer than every recording: each is used whole, not padded with silence
  longest = data.evaluation_clips(CFG, snrs_db=(0.0,), n_clips=2, clip_s=59.0)
  assert [len(c[0]) for c in longest] == [len(c[0]) for c in whole]
  for bad in (float("inf"), float("nan"), 61.0, 0.0):
    with pytest.raises(ParameterError, match=r"clip_s: expected None or seconds in \(0, 60\]"):
      data.evaluation_clips(CFG, n_clips=1, clip_s=bad)
  with pytest.raises(ParameterError, match="n_clips: expected at most 1000 .* got 1001"):
    data.evaluation_clips(CFG, n_clips=1001)


def _write_corpus(root, talkers):
  rng = np.random.default_rng(0)
  for talker, n_files in talkers.items():
    folder = root / talker / "chapter"
    folder.mkdir(parents=True)
    for i in range(n_files):
      tone = np.sin(2 * np.pi * (150 + 50 * i) * np.arange(SR // 2) / SR)
      audio.save(folder / f"{talker}_{i}.wav", 0.1 * tone + 0.01 * rng.standard_normal(SR // 2), SR)


def test_corpus_folder_talkers_are_top_level_folders(tmp_path):
  _write_corpus(tmp_path, {"spk1": 3, "spk2": 3, "spk3": 3})
  cfg = dataclasses.replace(CFG, corpus=str(tmp_path), held_out_fraction=0.3)
  source = data.SpeechSource(cfg)
  assert {r.talker for r in source.recordings} <= {"spk1", "spk2", "spk3"}
  batch = source.make_batch(0, 4)
  assert batch.noisy.shape == (4, cfg.n_samples) and np.all(np.isfinite(batch.noisy))


def test_unusable_corpus_files_are_skipped_with_a_warning_naming_them(tmp_path):
  _write_corpus(tmp_path, {"spk1": 3, "spk2": 3})
  (tmp_path / "spk1" / "chapter" / "empty.wav").write_bytes(b"")
  with pytest.warns(UserWarning, match="digital silence"):
    audio.save(tmp_path / "spk2" / "chapter" / "silent.wav", np.zeros(SR // 2), SR)
  cfg = dataclasses.replace(CFG, corpus=str(tmp_path), held_out_fraction=0.0)
  source = data.SpeechSource(cfg)
  assert len(source.recordings) == 8
  with pytest.warns(UserWarning) as caught:
    batches = [source.make_batch(step, 4) for step in range(6)]
  named = " ".join(str(w.message) for w in caught)
  assert "empty.wav" in named and "silent.wav" in named and "digital silence" in named
  assert all(np.all(np.isfinite(b.noisy)) and np.all(audio.rms(b.clean, axis=-1) > 0)
             for b in batches)
  again = data.SpeechSource(cfg)  # the draws do not depend on which bad files were met before
  with pytest.warns(UserWarning):
    np.testing.assert_array_equal(again.make_batch(5, 4).noisy, batches[5].noisy)


def test_a_split_without_a_usable_recording_raises(tmp_path):
  for name in ("a.wav", "b.wav"):
    (tmp_path / name).write_bytes(b"RIFF junk")
  cfg = dataclasses.replace(CFG, corpus=str(tmp_path), held_out_fraction=0.0)
  with pytest.warns(UserWarning), pytest.raises(AudioError, match="none of the 2 recordings"):
    data.SpeechSource(cfg).make_batch(0, 1)


def test_babble_with_a_single_talker_raises(tmp_path):
  _write_corpus(tmp_path, {"only": 3})
  cfg = dataclasses.replace(CFG, corpus=str(tmp_path), held_out_fraction=0.0,
                            noise_kinds=("babble",), noise_probs=(1.0,))
  with pytest.raises(ParameterError, match="babble needs recordings of at least two talkers"):
    data.SpeechSource(cfg).make_batch(0, 1)


def test_an_empty_split_raises():
  with pytest.raises(ParameterError, match="held_out.*empty"):
    data.SpeechSource(dataclasses.replace(CFG, held_out_fraction=0.0), "held_out")


@pytest.mark.parametrize("changes, match", [
    ({"noise_kinds": ("pink",), "noise_probs": (1.0,)}, "noise_kinds"),
    ({"noise_probs": (1.0, 0.0)}, "noise_probs"),
    ({"snr_db_range": (10.0, -5.0)}, "snr_db_range"),
    ({"clip_s": 0.0}, "clip_s"),
    ({"held_out_fraction": 1.5}, "held_out_fraction"),
    # None here was a TypeError from len()
    ({"snr_db_range": None}, "snr_db_range: expected a tuple or list, got None"),
    ({"noise_probs": None}, "noise_probs: expected a tuple or list, got None")])
def test_bad_data_config_raises(changes, match):
  with pytest.raises(ParameterError, match=match):
    dataclasses.replace(CFG, **changes)


def test_bad_arguments_raise():
  source = data.SpeechSource(CFG)
  with pytest.raises(ParameterError, match="batch_size"):
    source.make_batch(0, 0)
  with pytest.raises(ParameterError, match="rng"):
    source.make_batch(-1, 1)
  with pytest.raises(ParameterError, match="split"):
    data.SpeechSource(CFG, "test")
  with pytest.raises(ParameterError, match="noise_kind"):
    data.held_out_set(CFG, noise_kind="pink")
