"""Audio corpora on disk: find the files of a folder tree and split them into train / held-out.

Works with nested layouts such as LibriSpeech (speaker/chapter/utterance.flac). The split decides
each file on its own from a hash of its path relative to the corpus root, so it is deterministic and
stable: adding or removing files never moves another file between the two sets.
"""
import hashlib
import numbers
from pathlib import Path

from dal_widgets.errors import AudioError, ParameterError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # what soundfile reads that corpora ship in
HASH_SCALE = 2.0 ** 64  # the split uses the first 8 bytes of a sha256 as a fraction in [0, 1)


def find_audio(folder):
  """All audio files under `folder`, recursively, sorted by path.

  Args:
    folder: Root folder of the corpus.

  Returns:
    Sorted list of Paths with a suffix in AUDIO_SUFFIXES (any case); hidden files are skipped.

  Raises:
    ParameterError: `folder` does not exist or is not a folder.
    AudioError: no audio file under `folder`.
  """
  root = Path(folder)
  if not root.exists():
    raise ParameterError(f"folder: {str(root)!r} does not exist")
  if not root.is_dir():
    raise ParameterError(f"folder: expected a folder, got the file {str(root)!r}")
  files = sorted(p for p in root.rglob("*")
                 if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(root).parts))
  if not files:
    raise AudioError(f"folder: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {str(root)!r}")
  return files


def _hash_fraction(key, seed):
  digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / HASH_SCALE


def split(files, *, held_out_fraction=0.2, seed=0, root=None):
  """Splits files into (train, held_out) by a hash of each relative path.

  Args:
    files: Paths (str or Path), e.g. from `find_audio`.
    held_out_fraction: Expected fraction of files held out, in [0, 1].
    seed: Integer; a different seed gives a different (equally stable) split.
    root: Corpus root; paths are hashed relative to it so the split does not depend on where
      the corpus is mounted. Default: each path as given (as a POSIX string).

  Returns:
    (train, held_out): two lists of Paths in the input order.

  Raises:
    ParameterError: bad fraction, or a file not under `root`.
  """
  if isinstance(held_out_fraction, bool) or not 0.0 <= held_out_fraction <= 1.0:
    raise ParameterError(f"held_out_fraction: expected a number in [0, 1], got {held_out_fraction!r}")
  if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
    raise ParameterError(f"seed: expected an int, got {seed!r}")
  if isinstance(files, (str, Path)):
    raise ParameterError(f"files: expected a list of paths, got the single path {str(files)!r}")
  train, held_out = [], []
  for f in files:
    path = Path(f)
    if root is None:
      key = path.as_posix()
    else:
      try:
        key = path.relative_to(root).as_posix()
      except ValueError as e:
        raise ParameterError(f"files: {str(path)!r} is not under root {str(root)!r}") from e
    (held_out if _hash_fraction(key, int(seed)) < held_out_fraction else train).append(path)
  return train, held_out
