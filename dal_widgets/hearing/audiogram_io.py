"""Audiogram files: JSON and CSV, from paths, text or uploaded bytes.

JSON:
  {"ear": "left", "name": "listener 7",
   "points": [{"freq_hz": 250, "threshold_db_hl": 20}, {"freq_hz": 500, "threshold_db_hl": 25}]}
("ear" defaults to "right" and "name" to null when absent.)

CSV (UTF-8, optional BOM; blank lines ignored):
  # ear: left
  # name: listener 7
  freq_hz,threshold_db_hl
  250,20
  500,25
Files saved by spreadsheets read too: fields may be quoted, rows may end in empty cells, and the
delimiter may be ";" or a tab (then a decimal comma is allowed: 22,5). Files are written as above.

Every malformed file raises ParameterError whose message names the line (CSV, JSON syntax) or the
field (JSON content) at fault. Writes are atomic: a temporary file in the same folder, then
os.replace, so a crash never leaves half an audiogram behind.
"""
import csv
import json
import math
import os
import pathlib

from dal_widgets.atomic import write_text_atomic
from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram import DEFAULT_EAR, EARS, Audiogram, order_problem, point_problem

FORMATS = ("json", "csv")
CSV_HEADER = ("freq_hz", "threshold_db_hl")
CSV_COMMENT_KEYS = ("ear", "name")
# "," as written here; ";" and tab as spreadsheets write CSV in locales with a decimal comma.
CSV_DELIMITERS = (",", ";", "\t")


def _check_fmt(fmt):
  if fmt is not None and fmt not in FORMATS:
    raise ParameterError(f"fmt: expected one of {FORMATS} or None, got {fmt!r}")


def _fmt_from_suffix(path):
  suffix = pathlib.Path(path).suffix.lower().lstrip(".")
  return suffix if suffix in FORMATS else None


def _sniff(text):
  return "json" if text.lstrip().startswith("{") else "csv"


def _parse_json(text):
  try:
    data = json.loads(text)
  except json.JSONDecodeError as err:
    raise ParameterError(f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}") from err
  except (RecursionError, ValueError) as err:  # nested too deep; an integer of too many digits
    raise ParameterError(f"invalid JSON: {err}") from err
  try:
    return Audiogram.from_dict(data)
  except OverflowError as err:  # an integer too large for a float
    raise ParameterError(f"a number is too large: {err}") from err


def _parse_number(field, text, lineno, delimiter=","):
  try:  # with ";" or tab delimiters a decimal comma (22,5) cannot be mistaken for a delimiter
    value = float(text if delimiter == "," else text.replace(",", "."))
  except ValueError:
    raise ParameterError(f"line {lineno}: {field} {text!r} is not a number") from None
  return value


def _fields(line, delimiter):
  """The cells of one CSV row: quotes removed, spaces stripped, trailing empty cells dropped
  (spreadsheets pad every row to the widest)."""
  fields = [f.strip() for f in next(csv.reader([line], delimiter=delimiter))]
  while fields and not fields[-1]:
    fields.pop()
  return fields


def _parse_csv(text):
  meta = {}
  freqs, thresholds = [], []
  header_seen, delimiter = False, ","
  for lineno, raw in enumerate(text.splitlines(), start=1):
    line = raw.strip()
    if not line.strip("".join(CSV_DELIMITERS) + '"'):
      continue  # blank, or a row of empty cells
    if line.lstrip('"').startswith("#"):  # a comment, possibly in a quoted, padded first cell
      line = line.rstrip("".join(CSV_DELIMITERS) + " ")
      line = line[1:-1] if line.startswith('"') and line.endswith('"') else line
      key, sep, value = line[1:].partition(":")
      key = key.strip().lower()
      if sep and key in CSV_COMMENT_KEYS:
        if key in meta:
          raise ParameterError(f"line {lineno}: '# {key}:' given twice")
        meta[key] = value.strip()
      continue  # other comments are free text
    if not header_seen:
      delimiter = next((d for d in CSV_DELIMITERS if d in line), ",")
    fields = _fields(line, delimiter)
    if not header_seen:
      if tuple(f.lower() for f in fields) != CSV_HEADER:
        raise ParameterError(f"line {lineno}: expected the header '{','.join(CSV_HEADER)}', "
                             f"got {line!r}")
      header_seen = True
      continue
    if len(fields) != 2:
      raise ParameterError(f"line {lineno}: expected 2 fields (freq_hz,threshold_db_hl), "
                           f"got {len(fields)}: {line!r}")
    freq = _parse_number("frequency", fields[0], lineno, delimiter)
    threshold = _parse_number("threshold", fields[1], lineno, delimiter)
    problem = point_problem(freq, threshold)
    if problem is None and freqs:
      problem = order_problem(freqs[-1], freq)
    if problem is not None:
      raise ParameterError(f"line {lineno}: {problem}")
    freqs.append(freq)
    thresholds.append(threshold)
  if not header_seen:
    raise ParameterError(f"CSV: no header line '{','.join(CSV_HEADER)}' found")
  if not freqs:
    raise ParameterError("CSV: no data lines after the header")
  ear = meta.get("ear", DEFAULT_EAR).lower()
  if ear not in EARS:
    raise ParameterError(f"'# ear:' comment: expected one of {EARS}, got {meta['ear']!r}")
  return Audiogram(freqs, thresholds, ear=ear, name=meta.get("name") or None)


def loads_audiogram(data, fmt=None):
  """Parses an audiogram from text or bytes (e.g. a browser upload).

  Args:
    data: File content, str or UTF-8 bytes (a byte-order mark is ignored).
    fmt: "json", "csv", or None to guess (JSON if the text starts with "{").

  Returns:
    Audiogram.

  Raises:
    ParameterError: undecodable bytes, bad `fmt`, or malformed content (message names the line
      or field at fault).
  """
  _check_fmt(fmt)
  if isinstance(data, (bytes, bytearray, memoryview)):
    try:
      data = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as err:
      raise ParameterError(f"data: expected UTF-8 text, got undecodable byte at offset "
                           f"{err.start}") from err
  elif isinstance(data, str):
    data = data.removeprefix("\ufeff")
  else:
    raise ParameterError(f"data: expected str or bytes, got {type(data).__name__}")
  fmt = fmt or _sniff(data)
  return _parse_json(data) if fmt == "json" else _parse_csv(data)


def _format_number(value):
  """Shortest text that reads back as the same float ("250" rather than "250.0")."""
  return str(int(value)) if value.is_integer() and math.fabs(value) < 1e15 else repr(value)


def dumps_audiogram(audiogram, fmt="json"):
  """Serialises an audiogram to text (for a download button or a file).

  Args:
    audiogram: Audiogram.
    fmt: "json" or "csv".

  Returns:
    str, ending with a newline; `loads_audiogram` reads it back to an equal Audiogram.

  Raises:
    ParameterError: if `audiogram` is not an Audiogram or `fmt` is unknown.
  """
  if not isinstance(audiogram, Audiogram):
    raise ParameterError(f"audiogram: expected an Audiogram, got {type(audiogram).__name__}")
  if fmt not in FORMATS:
    raise ParameterError(f"fmt: expected one of {FORMATS}, got {fmt!r}")
  if fmt == "json":
    return json.dumps(audiogram.to_dict(), indent=2) + "\n"
  if audiogram.name is not None and ("\n" in audiogram.name or "\r" in audiogram.name):
    raise ParameterError(f"audiogram.name: a CSV comment cannot hold a line break, got "
                         f"{audiogram.name!r}")
  lines = [f"# ear: {audiogram.ear}"]
  if audiogram.name is not None:
    lines.append(f"# name: {audiogram.name}")
  lines.append(",".join(CSV_HEADER))
  lines += [f"{_format_number(f)},{_format_number(t)}"
            for f, t in zip(audiogram.freqs_hz, audiogram.thresholds_db_hl)]
  return "\n".join(lines) + "\n"


def _looks_like_text(value):
  return "\n" in value or value.lstrip().startswith("{")


def read_audiogram(path_or_text, *, fmt=None):
  """Reads an audiogram from a file path, or parses it from text.

  Args:
    path_or_text: A path (str or os.PathLike) to a .json or .csv file, or the content itself
      (a str with a line break, or starting with "{").
    fmt: "json", "csv", or None: from the file suffix, else guessed from the content.

  Returns:
    Audiogram.

  Raises:
    ParameterError: unreadable file or malformed content (message names the file and the line
      or field at fault).
  """
  _check_fmt(fmt)
  if isinstance(path_or_text, str) and _looks_like_text(path_or_text):
    return loads_audiogram(path_or_text, fmt)
  if not isinstance(path_or_text, (str, os.PathLike)):
    raise ParameterError(f"path_or_text: expected a path or text, got "
                         f"{type(path_or_text).__name__}")
  path = pathlib.Path(path_or_text)
  try:
    data = path.read_bytes()
  except OSError as err:
    raise ParameterError(f"path_or_text: cannot read audiogram file {str(path)!r}: "
                         f"{err.strerror or err}") from err
  try:
    return loads_audiogram(data, fmt or _fmt_from_suffix(path))
  except ParameterError as err:  # "data: ..." is the bytes read: the file itself
    raise ParameterError(f"{path}: {str(err).removeprefix('data: ')}") from err


def write_audiogram(audiogram, path, *, fmt=None):
  """Writes an audiogram atomically (temporary file + os.replace).

  Args:
    audiogram: Audiogram.
    path: Destination (str or os.PathLike); its folder must exist.
    fmt: "json", "csv", or None to take it from the suffix (.json / .csv).

  Returns:
    The destination as a pathlib.Path.

  Raises:
    ParameterError: unknown format or suffix, or the file cannot be written.
  """
  _check_fmt(fmt)
  path = pathlib.Path(path)
  fmt = fmt or _fmt_from_suffix(path)
  if fmt is None:
    raise ParameterError(f"path: cannot tell the format from suffix {path.suffix!r}; use .json "
                         f"or .csv, or pass fmt")
  text = dumps_audiogram(audiogram, fmt)
  try:
    return write_text_atomic(path, text)
  except OSError as err:
    raise ParameterError(f"path: cannot write audiogram file {str(path)!r}: "
                         f"{err.strerror or err}") from err
