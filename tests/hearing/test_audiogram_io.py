"""Tests of dal_widgets.hearing.audiogram_io: JSON/CSV round trips, atomic writes, errors."""
import json
import os

import pytest

from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram import Audiogram
from dal_widgets.hearing.audiogram_io import (dumps_audiogram, loads_audiogram, read_audiogram,
                                              write_audiogram)
from dal_widgets.hearing.presets import preset

GRAM = Audiogram([250, 500, 1000, 3000, 8000], [10, 22.5, 35, 60.25, 80], ear="left",
                 name="listener 7, visit 2")
GOOD_CSV = """# ear: left
# name: listener 7, visit 2
freq_hz,threshold_db_hl
250,10
500,22.5
1000,35
3000,60.25
8000,80
"""


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_text_round_trip(fmt):
  text = dumps_audiogram(GRAM, fmt)
  assert loads_audiogram(text, fmt) == GRAM
  assert loads_audiogram(text.encode("utf-8"), fmt) == GRAM  # browser uploads are bytes
  assert loads_audiogram(text) == GRAM  # format guessed from the content


@pytest.mark.parametrize("suffix", [".json", ".csv", ".JSON"])
def test_file_round_trip(tmp_path, suffix):
  path = tmp_path / f"gram{suffix}"
  assert write_audiogram(GRAM, path) == path
  assert read_audiogram(path) == GRAM
  assert read_audiogram(str(path)) == GRAM
  assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_round_trip_of_every_preset(tmp_path):
  for name in ("normal", "N7", "S3"):
    gram = preset(name, ear="right")
    for fmt in ("json", "csv"):
      assert loads_audiogram(dumps_audiogram(gram, fmt), fmt) == gram


def test_json_layout():
  data = json.loads(dumps_audiogram(GRAM, "json"))
  assert data["ear"] == "left" and data["name"] == GRAM.name
  assert data["points"][1] == {"freq_hz": 500.0, "threshold_db_hl": 22.5}


def test_csv_layout_and_text_input():
  assert dumps_audiogram(GRAM, "csv") == GOOD_CSV
  assert read_audiogram(GOOD_CSV) == GRAM  # a str with line breaks is content, not a path


def test_csv_lenient_parts():
  text = "\ufeff# measured 2024\n\nFREQ_HZ , Threshold_dB_HL\n 1000 , 40 \n\n2000,50\n"
  gram = loads_audiogram(text, "csv")
  assert gram.freqs_hz == (1000, 2000) and gram.thresholds_db_hl == (40, 50)
  assert gram.ear == "right" and gram.name is None  # defaults when the comments are absent


@pytest.mark.parametrize("text", [
    # Excel, comma locale: every row padded to the widest, the comments in quoted first cells
    '"# ear: left",,\r\n"# name: Smith, J",,\r\nfreq_hz,threshold_db_hl,\r\n500,20,\r\n'
    '4000,42.5,\r\n,,\r\n',
    # a decimal-comma locale: ";" delimiters and 42,5
    "# ear: left;\n# name: Smith, J;\nfreq_hz;threshold_db_hl\n500;20\n4000;42,5\n",
    # tab-separated, every cell quoted
    '# ear: left\n# name: Smith, J\n"freq_hz"\t"threshold_db_hl"\n"500"\t"20"\n"4000"\t"42,5"\n',
])
def test_csv_saved_by_spreadsheets(text):
  gram = loads_audiogram(text.encode("utf-8-sig"), "csv")
  assert gram == Audiogram([500, 4000], [20, 42.5], ear="left", name="Smith, J")


def test_csv_decimal_comma_only_with_another_delimiter():
  with pytest.raises(ParameterError, match=r"^line 2: expected 2 fields .*got 3: '500,42,5'"):
    loads_audiogram("freq_hz,threshold_db_hl\n500,42,5\n", "csv")
  with pytest.raises(ParameterError, match=r"^line 2: threshold '4,2,5' is not a number"):
    loads_audiogram("freq_hz;threshold_db_hl\n500;4,2,5\n", "csv")


def test_write_replaces_existing_file(tmp_path):
  path = tmp_path / "gram.json"
  path.write_text("old content")
  write_audiogram(preset("N2"), path)
  assert read_audiogram(path) == preset("N2")


def test_write_failure_leaves_no_temp_file(tmp_path):
  target = tmp_path / "exists_as_folder.json"
  target.mkdir()
  with pytest.raises(ParameterError, match=r"path: cannot write audiogram file"):
    write_audiogram(GRAM, target)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["exists_as_folder.json"]


@pytest.mark.parametrize("text, match", [
    ("freq_hz,threshold_db_hl\n250,10\n500,abc\n", r"^line 3: threshold 'abc' is not a number$"),
    ("# ear: left\nfreq_hz,threshold_db_hl\n1k,10\n", r"^line 3: frequency '1k' is not a number$"),
    ("freq,thr\n250,10\n", r"^line 1: expected the header 'freq_hz,threshold_db_hl', got"),
    ("freq_hz,threshold_db_hl\n250,10,3\n", r"^line 2: expected 2 fields .*got 3"),
    ("freq_hz,threshold_db_hl\n500,10\n\n250,10\n", r"^line 4: frequency 250 Hz comes after"),
    ("freq_hz,threshold_db_hl\n500,10\n500,20\n", r"^line 3: frequency 500 Hz is duplicated"),
    ("freq_hz,threshold_db_hl\n500,10\n12000,20\n", r"^line 3: frequency 12000 Hz is outside"),
    ("freq_hz,threshold_db_hl\n500,130\n", r"^line 2: threshold 130 dB HL at 500 Hz is outside"),
    ("freq_hz,threshold_db_hl\n500,nan\n", r"^line 2: threshold nan at 500 Hz is not finite"),
    ("# ear: left\n# ear: right\nfreq_hz,threshold_db_hl\n500,0\n", r"^line 2: '# ear:' given"),
    ("# ear: centre\nfreq_hz,threshold_db_hl\n500,0\n", r"'# ear:' comment: expected one of"),
    ("# only a comment\n", r"CSV: no header line"),
    ("freq_hz,threshold_db_hl\n", r"CSV: no data lines after the header"),
])
def test_bad_csv_names_the_line(text, match):
  with pytest.raises(ParameterError, match=match):
    loads_audiogram(text, "csv")


@pytest.mark.parametrize("text, match", [
    ('{"points": [\n  {"freq_hz": 250, "threshold_db_hl": 10}\n  {"freq_hz": 500}]}',
     r"^line 3, column 3: invalid JSON: Expecting ',' delimiter"),
    ('{"points": [{"freq_hz": 250, "threshold_db_hl": "ten"}]}',
     r"points\[0\]\.threshold_db_hl: 'ten' is not a number"),
    ('{"ear": "left"}', r"audiogram: missing field 'points'"),
    ('[1, 2]', r"audiogram: expected an object/dict, got list"),
    ('{"points": [{"freq_hz": 1' + "0" * 400 + ', "threshold_db_hl": 10}]}', "too large"),
    ("[" * 100000 + "]" * 100000, "invalid JSON"),
])
def test_bad_json_names_the_line_or_field(text, match):
  with pytest.raises(ParameterError, match=match):
    loads_audiogram(text, "json")


def test_read_errors_name_the_file(tmp_path):
  path = tmp_path / "bad.csv"
  path.write_text("freq_hz,threshold_db_hl\n250,x\n")
  with pytest.raises(ParameterError, match=r"bad\.csv: line 2: threshold 'x' is not a number"):
    read_audiogram(path)
  with pytest.raises(ParameterError, match=r"cannot read audiogram file .*missing\.json"):
    read_audiogram(tmp_path / "missing.json")
  (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00")
  with pytest.raises(ParameterError, match=r"binary\.csv: expected UTF-8 text, got undecodable"):
    read_audiogram(tmp_path / "binary.csv")


def test_unknown_suffix_is_sniffed_on_read_and_refused_on_write(tmp_path):
  path = tmp_path / "gram.txt"
  path.write_text(dumps_audiogram(GRAM, "json"))
  assert read_audiogram(path) == GRAM
  with pytest.raises(ParameterError, match=r"path: cannot tell the format from suffix '\.txt'"):
    write_audiogram(GRAM, path)
  write_audiogram(GRAM, path, fmt="csv")
  assert read_audiogram(path, fmt="csv") == GRAM


@pytest.mark.parametrize("call, match", [
    (lambda: loads_audiogram(b"\xff\xfe\x00", "csv"), r"data: expected UTF-8 text"),
    (lambda: loads_audiogram(42, "csv"), r"data: expected str or bytes, got int"),
    (lambda: loads_audiogram("{}", "xml"), r"fmt: expected one of \('json', 'csv'\)"),
    (lambda: dumps_audiogram({"points": []}, "json"), r"audiogram: expected an Audiogram"),
    (lambda: dumps_audiogram(GRAM, "xml"), r"fmt: expected one of"),
    (lambda: dumps_audiogram(Audiogram([500], [0], name="a\nb"), "csv"),
     r"audiogram.name: a CSV comment cannot hold a line break"),
    (lambda: read_audiogram(3.5), r"path_or_text: expected a path or text, got float"),
])
def test_argument_errors(call, match):
  with pytest.raises(ParameterError, match=match):
    call()


def test_new_file_is_readable_by_others(tmp_path):
  path = write_audiogram(GRAM, tmp_path / "gram.csv")
  assert os.stat(path).st_mode & 0o777 == 0o644
