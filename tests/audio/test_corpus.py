"""Corpus folders: recursive search and a deterministic, stable split."""
from pathlib import Path

import numpy as np
import pytest

from dal_widgets.audio import corpus
from dal_widgets.errors import AudioError, ParameterError

FRACTION_TOL = 0.04  # 1000 files: binomial sd of the held-out fraction is 0.013; 3 sd


def _make_librispeech_like(root):
  files = ["19/198/19-198-0000.flac", "19/198/19-198-0001.flac", "19/227/19-227-0000.flac",
           "26/495/26-495-0000.flac", "extra/a.WAV", "extra/b.ogg"]
  for f in files + ["19/198/19-198.trans.txt", ".hidden/c.wav", "19/.d.flac"]:
    (root / f).parent.mkdir(parents=True, exist_ok=True)
    (root / f).write_bytes(b"")
  return sorted(root / f for f in files)


def test_find_audio_recursive_and_sorted(tmp_path):
  expected = _make_librispeech_like(tmp_path)
  found = corpus.find_audio(tmp_path)
  assert found == expected  # transcripts and hidden files skipped, upper-case suffix kept
  assert corpus.find_audio(str(tmp_path)) == expected


def test_find_audio_errors(tmp_path):
  with pytest.raises(ParameterError, match="does not exist"):
    corpus.find_audio(tmp_path / "nowhere")
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(AudioError, match="no audio files"):
    corpus.find_audio(tmp_path)
  with pytest.raises(ParameterError, match="expected a folder"):
    corpus.find_audio(tmp_path / "notes.txt")


def _fake_files(n, prefix="spk"):
  return [Path(f"{prefix}{i % 37}/ch{i % 5}/utt{i:04d}.flac") for i in range(n)]


def test_split_is_deterministic_and_partitions():
  files = _fake_files(1000)
  train, held_out = corpus.split(files)
  assert (train, held_out) == corpus.split(list(files))
  assert sorted(train + held_out) == sorted(files) and not set(train) & set(held_out)
  assert len(held_out) / len(files) == pytest.approx(0.2, abs=FRACTION_TOL)
  assert train == [f for f in files if f in set(train)]  # input order kept
  assert corpus.split(files, seed=1)[1] != held_out
  assert corpus.split(files, held_out_fraction=0.0)[1] == []
  assert corpus.split(files, held_out_fraction=1.0)[0] == []


def test_split_is_stable_when_files_are_added():
  files = _fake_files(500)
  _, held_out = corpus.split(files)
  more = files + _fake_files(300, prefix="new")
  _, held_out_more = corpus.split(more)
  assert [f for f in held_out_more if f in set(files)] == held_out


def test_split_relative_to_root_ignores_mount_point():
  rel = _fake_files(200)
  a = corpus.split([Path("/data/ls") / f for f in rel], root="/data/ls")[1]
  b = corpus.split([Path("/mnt/x/ls") / f for f in rel], root=Path("/mnt/x/ls"))[1]
  assert [p.relative_to("/data/ls") for p in a] == [p.relative_to("/mnt/x/ls") for p in b]


def test_a_numpy_seed_splits_as_the_same_int():
  files = _fake_files(50)
  assert corpus.split(files, seed=np.int64(3)) == corpus.split(files, seed=3)


def test_split_errors():
  with pytest.raises(ParameterError, match="held_out_fraction"):
    corpus.split(_fake_files(3), held_out_fraction=1.5)
  with pytest.raises(ParameterError, match="not under root"):
    corpus.split([Path("/a/b.wav")], root="/c")
  with pytest.raises(ParameterError, match="single path"):
    corpus.split("/a/b.wav")
