"""The evaluation of the hearing-aid systems for the current listener and clip, as an HTML table.

`MetricsTable.render(table)` takes a loop.evaluate.EvaluationTable and shows its per-system means
(the rows with snr_db == "all"), best value per column in bold; `show_message` replaces the table
with a note (e.g. while computing, or why there is no table).
"""
import html
import math

import ipywidgets as widgets

from dal_widgets.errors import ParameterError
from dal_widgets.loop.evaluate import ALL_SNRS, HIGHER_IS_BETTER

# Column heading and number format of each metric of loop.evaluate.METRICS.
METRIC_LABELS = {"nap_l1": ("NAP L1", ".4f"), "nap_corr": ("NAP corr.", ".3f"),
                 "sai_l1": ("SAI L1", ".4f"), "si_sdr_db": ("SI-SDR (dB)", ".1f"),
                 "stoi": ("STOI", ".3f"), "estoi": ("ESTOI", ".3f"), "haspi": ("HASPI", ".3f")}
CAPTION = ("Impaired ear hearing each system's output vs. the normal ear hearing the clean speech "
           "(NAP, SAI); SI-SDR and (E)STOI compare the output with the clean speech. "
           "\u2191 higher is better, \u2193 lower is better; best in bold.")
MISSING_NOTE = ("\u2013: not computable for this clip ((E)STOI needs at least 384 ms of speech "
                "within 40 dB of its loudest frame).")
_STYLE = ("<style>.dal-metrics table{border-collapse:collapse;font-size:13px}"
          ".dal-metrics th,.dal-metrics td{padding:3px 10px;border-bottom:1px solid #ddd;"
          "text-align:right}.dal-metrics th:first-child,.dal-metrics td:first-child"
          "{text-align:left}.dal-metrics td.best{font-weight:bold;color:#1b5e20}</style>")


def _cell(value, fmt) -> str:
  return "\u2013" if value is None or math.isnan(value) else format(value, fmt)


def table_html(table) -> str:
  """HTML of the per-system mean rows of an EvaluationTable (see module doc).

  Raises:
    ParameterError: if `table` has no rows / metrics attributes or no "all" rows.
  """
  if not (hasattr(table, "rows") and hasattr(table, "metrics")):
    raise ParameterError(f"table: expected an EvaluationTable, got {type(table).__name__}")
  rows = [row for row in table.rows if row["snr_db"] == ALL_SNRS]
  if not rows:
    raise ParameterError("table: expected per-system rows with snr_db == 'all', got none")
  metrics = [m for m in table.metrics if m in METRIC_LABELS]
  best = {}
  for metric in metrics:
    values = [row[metric] for row in rows if not math.isnan(row[metric])]
    if values:
      best[metric] = max(values) if HIGHER_IS_BETTER[metric] else min(values)
  head = "".join(f"<th>{METRIC_LABELS[m][0]} {'&uarr;' if HIGHER_IS_BETTER[m] else '&darr;'}</th>"
                 for m in metrics)
  body = []
  for row in rows:
    cells = []
    for metric in metrics:
      value = row[metric]
      is_best = len(rows) > 1 and metric in best and value == best[metric]
      cells.append(f'<td{" class=best" if is_best else ""}>{_cell(value, METRIC_LABELS[metric][1])}'
                   "</td>")
    body.append(f"<tr><td>{html.escape(str(row['system']))}</td>{''.join(cells)}</tr>")
  caption = CAPTION
  if any(math.isnan(row[m]) for row in rows for m in metrics):
    caption += " " + MISSING_NOTE
  return (f'{_STYLE}<div class="dal-metrics"><table><thead><tr><th>system</th>{head}</tr></thead>'
          f"<tbody>{''.join(body)}</tbody></table>"
          f'<div style="font-size:11px;color:#555;max-width:640px">{html.escape(caption)}</div></div>')


class MetricsTable(widgets.VBox):
  """An HTML table of an EvaluationTable, with a one-line message above it.

  Attributes:
    html: the ipywidgets.HTML holding the table.
    message: the ipywidgets.HTML holding the message ("computing...", errors).
  """

  def __init__(self, **kwargs):
    self.message = widgets.HTML('<span style="color:#999">(no evaluation yet)</span>')
    self.html = widgets.HTML("")
    self.html.add_class("dal-metrics-table")
    super().__init__([self.message, self.html], **kwargs)

  def render(self, table) -> None:
    """Shows the per-system means of `table` (an EvaluationTable) and clears the message."""
    self.html.value = table_html(table)
    self.message.value = ""

  def show_message(self, text: str, *, error: bool = False) -> None:
    """A message above the table (the table stays, so the last results remain readable)."""
    colour = "#c0392b" if error else "#555"
    self.message.value = f'<span style="color:{colour}">{html.escape(text)}</span>'
