"""Atomic file writes: how every file of dal_widgets is written (audio, checkpoints, audiograms,
tables, cochleagrams).

The content goes to a temporary file in the destination's folder, is flushed to disk, and is then
renamed over the destination (os.replace is atomic on POSIX): a reader sees the old file or the
new one, never half of one, and a failed write leaves the old file as it was and no temporary file.
"""
import os
import tempfile
from pathlib import Path

NEW_FILE_MODE = 0o644  # rw-r--r--, as `open` makes under the usual umask (mkstemp makes 0600)


def write_atomic(path, write) -> Path:
  """Calls `write(f)` with a binary file object, then puts the file at `path` atomically.

  An existing file keeps its permission bits; a new one gets NEW_FILE_MODE.

  Returns:
    `path` as a pathlib.Path.

  Raises:
    OSError: missing or read-only folder, full disk, ... (callers turn it into their own error).
  """
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else NEW_FILE_MODE)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_text_atomic(path, text: str) -> Path:
  """`write_atomic` of UTF-8 text (newlines written as given)."""
  return write_atomic(path, lambda f: f.write(text.encode("utf-8")))
