"""Paired differences between two hearing-aid systems evaluated on the same clips.

`evaluate` runs every system on the same noisy clips, so two systems are compared clip by clip:
d_i = metric(system, clip i) - metric(reference, clip i). The mean of d with its Student-t
confidence interval (scipy.stats.ttest_rel) says whether a difference in the mean table is larger
than the spread from clip to clip. That spread is large: HASPI v2 of one aid over twelve 1 s clips
ranged from 0.03 to 0.97 (bench/RESULTS.md, "Paper SEANet, version 2"), so a difference of 0.1
between two means can be noise.

The unit of the test is the recording (a clip's "source"), not the clip: crops of one sentence,
and one crop mixed at several SNRs, are not independent samples of speech, and counting them as
such makes intervals too narrow. Each system's clip values are first averaged per source, and the
test runs on those means (n = number of sources). The bundled clips hold out only 2 recordings,
so their intervals are wide; a corpus with more held-out recordings gives firmer answers.
"""
import dataclasses
import math

import numpy as np
import scipy.stats

from dal_widgets import caught_warnings
from dal_widgets.errors import ParameterError
from dal_widgets.loop.evaluate import ALL_SNRS, HIGHER_IS_BETTER, EvaluationTable

CONFIDENCE = 0.95  # two-sided level of the interval, the usual one in hearing-aid studies
VERDICTS = ("better", "worse", "no clear difference")


@dataclasses.dataclass(frozen=True)
class PairedDifference:
  """metric(system) - metric(reference) over the clips both have a finite value for.

  Attributes:
    system, reference, metric: Names, as in the EvaluationTable.
    snr_db: The SNR in dB of the clips compared, or "all".
    n: Number of sources (recordings) compared: the test's sample size (0 when no clip has a
      finite value for both systems: then mean is NaN).
    mean: Mean over the sources of their mean difference, in the metric's unit (dB for
      si_sdr_db).
    low, high: The CONFIDENCE interval of the mean difference (NaN for n < 2).
    p_value: Two-sided paired t-test of a zero mean difference (NaN for n < 2).
    verdict: "better" or "worse" for `system` when the interval excludes 0 (the metric's
      direction decides which), else "no clear difference".
    n_clips: Number of clip pairs behind the n source means.
  """
  system: str
  reference: str
  metric: str
  snr_db: object
  n: int
  mean: float
  low: float
  high: float
  p_value: float
  verdict: str
  n_clips: int = 0


def paired_difference(table: EvaluationTable, system: str, reference: str, metric: str,
                      snr_db=ALL_SNRS, confidence: float = CONFIDENCE) -> PairedDifference:
  """Compares `system` with `reference` on `metric`, per source recording (module docstring).

  Args:
    table: From `evaluate.evaluate`; its clip_rows hold the per-clip values.
    system, reference: Two different system names of the table.
    metric: One of table.metrics.
    snr_db: Compare the clips of this SNR (dB) only, or "all" clips.
    confidence: Level of the interval, in (0, 1).

  Returns:
    PairedDifference.

  Raises:
    ParameterError: unknown or equal systems, unknown metric or SNR, or bad confidence.
  """
  if not isinstance(table, EvaluationTable):
    raise ParameterError(f"table: expected an EvaluationTable, got {type(table).__name__}")
  for label, name in (("system", system), ("reference", reference)):
    if name not in table.systems:
      raise ParameterError(f"{label}: expected one of {list(table.systems)}, got {name!r}")
  if system == reference:
    raise ParameterError(f"reference: expected a system other than {system!r}")
  if metric not in table.metrics:
    raise ParameterError(f"metric: expected one of {list(table.metrics)}, got {metric!r}")
  if not (isinstance(confidence, float) and 0 < confidence < 1):
    raise ParameterError(f"confidence: expected a float in (0, 1), got {confidence!r}")
  snrs = sorted({row["snr_db"] for row in table.clip_rows})
  if snr_db != ALL_SNRS and snr_db not in snrs:
    raise ParameterError(f"snr_db: expected {ALL_SNRS!r} or one of {snrs}, got {snr_db!r}")
  ours, theirs = (_by_clip(table, name, metric, snr_db) for name in (system, reference))
  by_source = {}
  for clip in sorted(ours.keys() & theirs.keys()):
    (source, a), (_, b) = ours[clip], theirs[clip]
    if math.isfinite(a) and math.isfinite(b):
      by_source.setdefault(source, []).append((a, b))
  n_clips = sum(map(len, by_source.values()))
  pairs = [np.mean(values, axis=0) for values in by_source.values()]
  a, b = np.array(pairs, np.float64).reshape(-1, 2).T
  d = a - b
  mean = float(np.mean(d)) if d.size else math.nan
  low = high = p_value = math.nan
  if d.size >= 2 and np.ptp(d) == 0:  # no spread: the t statistic is undefined, the mean exact
    low = high = mean
    p_value = 1.0 if mean == 0 else 0.0
  elif d.size >= 2:
    with caught_warnings.ignored(RuntimeWarning):  # near-constant d: scipy warns, still exact
      test = scipy.stats.ttest_rel(a, b)
      interval = test.confidence_interval(confidence)
    low, high, p_value = float(interval.low), float(interval.high), float(test.pvalue)
  return PairedDifference(system=system, reference=reference, metric=metric, snr_db=snr_db,
                          n=int(d.size), mean=mean, low=low, high=high, p_value=p_value,
                          verdict=_verdict(metric, low, high), n_clips=n_clips)


def differences(table: EvaluationTable, system: str, snr_db=ALL_SNRS,
                confidence: float = CONFIDENCE) -> list:
  """PairedDifference of `system` against every other system of the table, for every metric.

  Raises:
    ParameterError: as `paired_difference`.
  """
  return [paired_difference(table, system, reference, metric, snr_db, confidence)
          for reference in table.systems if reference != system for metric in table.metrics]


def to_markdown(diffs, confidence: float = CONFIDENCE) -> str:
  """A markdown table of PairedDifference rows: system, reference, metric, mean difference,
  interval, p-value, recordings (n), clips and verdict."""
  head = ["system", "minus", "metric", "difference", f"{confidence:.0%} interval", "p",
          "recordings", "clips", "verdict"]
  lines = ["| " + " | ".join(head) + " |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
  for diff in diffs:
    mean = f"{diff.mean:+.3g}" if diff.n else "n/a"
    interval = f"[{diff.low:+.3g}, {diff.high:+.3g}]" if math.isfinite(diff.low) else "n/a"
    p_value = f"{diff.p_value:.2g}" if math.isfinite(diff.p_value) else "n/a"
    lines.append(f"| {diff.system} | {diff.reference} | {diff.metric} | {mean} | "
                 f"{interval} | {p_value} | {diff.n} | {diff.n_clips} | {diff.verdict} |")
  return "\n".join(lines) + "\n"


def _by_clip(table, system, metric, snr_db):
  """{clip index: (source, value)}; tables written before sources were kept: each clip its own."""
  return {row["clip"]: (row.get("source", row["clip"]), float(row[metric]))
          for row in table.clip_rows
          if row["system"] == system and (snr_db == ALL_SNRS or row["snr_db"] == snr_db)}


def _verdict(metric, low, high):
  if not (low > 0 or high < 0):  # NaN (too few clips) or an interval holding 0
    return VERDICTS[2]
  return VERDICTS[0] if (low > 0) == HIGHER_IS_BETTER[metric] else VERDICTS[1]
