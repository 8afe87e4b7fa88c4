"""Atomic writes: a failed write leaves the old file and no temporary file; modes are sane."""
import os

import pytest

from dal_widgets import atomic


def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path):
  path = atomic.write_text_atomic(tmp_path / "table.md", "old\n")
  def half_then_fail(f):
    f.write(b"half of the new")
    raise OSError("disk full")
  with pytest.raises(OSError, match="disk full"):
    atomic.write_atomic(path, half_then_fail)
  assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["table.md"]


def test_new_files_get_the_usual_mode_and_existing_ones_keep_theirs(tmp_path):
  path = atomic.write_atomic(tmp_path / "a.bin", lambda f: f.write(b"\x00\x01"))
  assert path.read_bytes() == b"\x00\x01" and path.stat().st_mode & 0o777 == atomic.NEW_FILE_MODE
  path.chmod(0o600)
  atomic.write_text_atomic(path, "private")
  assert path.read_text() == "private" and path.stat().st_mode & 0o777 == 0o600


def test_a_missing_folder_is_an_os_error(tmp_path):
  with pytest.raises(FileNotFoundError):
    atomic.write_text_atomic(tmp_path / "missing" / "a.txt", "x")
