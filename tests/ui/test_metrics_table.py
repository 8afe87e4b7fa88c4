"""MetricsTable: per-system means of an EvaluationTable as HTML, best value per column in bold."""
import math
import re

import pytest

from dal_widgets.errors import ParameterError
from dal_widgets.loop.evaluate import EvaluationTable
from dal_widgets.ui.metrics_table import MetricsTable, table_html

METRICS = ("nap_l1", "nap_corr", "si_sdr_db", "stoi")


def _table(values):
  """EvaluationTable with one per-SNR row and one "all" row per system: {system: (metrics...)}."""
  rows = []
  for system, numbers in values.items():
    for snr_db in (5.0, "all"):
      row = {"system": system, "snr_db": snr_db, "n_clips": 1}
      row.update(zip(METRICS, numbers if snr_db == "all" else [math.nan] * len(METRICS)))
      rows.append(row)
  return EvaluationTable(rows=tuple(rows), clip_rows=(), metrics=METRICS)


def _cells(html_text):
  """{system: [cell text...]} of the table body; bold cells end with '*'."""
  out = {}
  for row in re.findall(r"<tr><td>(.*?)</tr>", html_text):
    name, rest = row.split("</td>", 1)
    cells = re.findall(r"<td( class=best)?>(.*?)</td>", rest)
    out[name] = [text + ("*" if best else "") for best, text in cells]
  return out


def test_renders_the_all_rows_with_the_best_value_per_column_in_bold():
  table = _table({"unprocessed": (0.20, 0.40, 5.0, 0.80), "NAL-R": (0.15, 0.50, 2.0, math.nan),
                  "DAL": (0.10, 0.45, 3.0, 0.85)})
  view = MetricsTable()
  view.render(table)
  cells = _cells(view.html.value)
  assert list(cells) == ["unprocessed", "NAL-R", "DAL"]  # per-SNR rows are not shown
  # lower is better for NAP L1, higher for the others; NaN shows as a dash, never "best"
  assert cells["DAL"] == ["0.1000*", "0.450", "3.0", "0.850*"]
  assert cells["NAL-R"] == ["0.1500", "0.500*", "2.0", "\u2013"]
  assert cells["unprocessed"] == ["0.2000", "0.400", "5.0*", "0.800"]
  assert "NAP L1 &darr;" in view.html.value and "STOI &uarr;" in view.html.value
  assert view.message.value == ""
  assert "not computable for this clip ((E)STOI needs at least 384 ms" in view.html.value


def test_a_single_system_has_no_best_marks():
  html_text = table_html(_table({"unprocessed": (0.2, 0.4, 5.0, 0.8)}))
  assert not any(c.endswith("*") for c in _cells(html_text)["unprocessed"])
  assert "not computable" not in html_text  # the dash is explained only where one is shown


def test_message_keeps_the_last_table_readable():
  view = MetricsTable()
  view.render(_table({"DAL": (0.1, 0.4, 3.0, 0.8)}))
  view.show_message("computing <metrics>", error=True)
  assert "computing &lt;metrics&gt;" in view.message.value and "#c0392b" in view.message.value
  assert "DAL" in view.html.value


def test_bad_tables_raise_parameter_error():
  with pytest.raises(ParameterError, match="table: expected an EvaluationTable"):
    table_html({"rows": []})
  empty = EvaluationTable(rows=({"system": "x", "snr_db": 5.0, "n_clips": 1, "stoi": 0.5},),
                          clip_rows=(), metrics=("stoi",))
  with pytest.raises(ParameterError, match="snr_db == 'all'"):
    table_html(empty)
