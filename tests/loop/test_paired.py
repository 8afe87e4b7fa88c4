"""paired: clip-by-clip differences between systems, checked against the t-interval formula."""
import math
import re

import numpy as np
import pytest
import scipy.stats

from dal_widgets.errors import ParameterError
from dal_widgets.loop import paired
from dal_widgets.loop.evaluate import EvaluationTable

METRICS = ("nap_l1", "stoi")
SNRS_DB = (0.0, 5.0)
N_PER_SNR = 8


def _table(values, sources=None):
  """An EvaluationTable from {system: {metric: [value per clip]}}; clips alternate SNRS_DB; each
  clip its own source unless `sources` names one per clip."""
  clip_rows, rows = [], []
  for system, by_metric in values.items():
    n = len(next(iter(by_metric.values())))
    mine = [{"system": system, "clip": i, "snr_db": SNRS_DB[i % 2],
             "source": i if sources is None else sources[i],
             **{m: float(by_metric[m][i]) for m in METRICS}} for i in range(n)]
    clip_rows += mine
    rows.append({"system": system, "snr_db": "all", "n_clips": n,
                 **{m: float(np.mean([r[m] for r in mine])) for m in METRICS}})
  return EvaluationTable(rows=tuple(rows), clip_rows=tuple(clip_rows), metrics=METRICS)


@pytest.fixture(scope="module")
def values():
  rng = np.random.default_rng(0)
  n = 2 * N_PER_SNR
  base = {"nap_l1": rng.uniform(0.12, 0.18, n), "stoi": rng.uniform(0.5, 0.9, n)}
  return {
      "unprocessed": base,
      # clearly better on both: lower NAP distance, higher STOI, plus clip-to-clip noise
      "aid": {"nap_l1": base["nap_l1"] - 0.02 + rng.normal(0, 0.004, n),
              "stoi": base["stoi"] + 0.05 + rng.normal(0, 0.01, n)},
      # no systematic change, only noise
      "noise": {"nap_l1": base["nap_l1"] + rng.normal(0, 0.01, n),
                "stoi": base["stoi"] + rng.normal(0, 0.05, n)},
  }


def test_mean_interval_and_p_value_follow_the_paired_t_formula(values):
  table = _table(values)
  for metric in METRICS:
    d = values["noise"][metric] - values["unprocessed"][metric]
    n, mean, se = d.size, d.mean(), d.std(ddof=1) / math.sqrt(d.size)
    half = scipy.stats.t.ppf(0.975, n - 1) * se
    diff = paired.paired_difference(table, "noise", "unprocessed", metric)
    assert diff.n == n
    assert diff.mean == pytest.approx(mean, rel=1e-12)
    assert (diff.low, diff.high) == pytest.approx((mean - half, mean + half), rel=1e-9)
    assert diff.p_value == pytest.approx(2 * scipy.stats.t.sf(abs(mean / se), n - 1), rel=1e-9)


def test_verdict_follows_each_metrics_direction(values):
  table = _table(values)
  assert [paired.paired_difference(table, "aid", "unprocessed", m).verdict
          for m in METRICS] == ["better", "better"]  # nap_l1 fell, stoi rose
  assert [paired.paired_difference(table, "unprocessed", "aid", m).verdict
          for m in METRICS] == ["worse", "worse"]
  noisy = [paired.paired_difference(table, "noise", "unprocessed", m) for m in METRICS]
  for diff in noisy:
    assert diff.low < 0 < diff.high and diff.verdict == "no clear difference"


def test_a_wider_confidence_gives_a_wider_interval(values):
  table = _table(values)
  narrow = paired.paired_difference(table, "noise", "unprocessed", "stoi", confidence=0.5)
  wide = paired.paired_difference(table, "noise", "unprocessed", "stoi", confidence=0.99)
  assert wide.low < narrow.low < narrow.mean < narrow.high < wide.high


def test_one_snr_compares_only_its_clips(values):
  table = _table(values)
  diff = paired.paired_difference(table, "aid", "unprocessed", "stoi", snr_db=5.0)
  odd = slice(1, None, 2)  # clips at 5 dB
  assert diff.n == N_PER_SNR and diff.snr_db == 5.0
  assert diff.mean == pytest.approx(np.mean(values["aid"]["stoi"][odd]
                                            - values["unprocessed"]["stoi"][odd]))


def test_clips_with_nan_are_left_out_of_the_pairs(values):
  aid = dict(values["aid"], stoi=values["aid"]["stoi"].copy())
  aid["stoi"][[0, 3]] = np.nan  # STOI is NaN for clips with too little speech
  table = _table({"unprocessed": values["unprocessed"], "aid": aid})
  diff = paired.paired_difference(table, "aid", "unprocessed", "stoi")
  keep = np.isfinite(aid["stoi"])
  assert diff.n == 2 * N_PER_SNR - 2
  expected = np.mean(aid["stoi"][keep] - values["unprocessed"]["stoi"][keep])
  assert diff.mean == pytest.approx(expected)


def test_constant_single_and_empty_differences(values):
  base = values["unprocessed"]
  shifted = {m: v + 0.01 for m, v in base.items()}
  same = paired.paired_difference(_table({"a": shifted, "b": base}), "a", "b", "stoi")
  assert (same.low, same.high, same.p_value) == pytest.approx((0.01, 0.01, 0.0))
  assert same.verdict == "better"
  first = _table({"a": {m: v[:1] for m, v in shifted.items()},
                  "b": {m: v[:1] for m, v in base.items()}})
  one = paired.paired_difference(first, "a", "b", "stoi")
  assert one.n == 1 and math.isnan(one.low) and math.isnan(one.p_value)
  assert one.verdict == "no clear difference"
  gone = dict(shifted, stoi=np.full_like(base["stoi"], np.nan))
  empty = paired.paired_difference(_table({"a": gone, "b": base}), "a", "b", "stoi")
  assert empty.n == 0 and math.isnan(empty.mean) and empty.verdict == "no clear difference"
  row = "| a | b | stoi | n/a | n/a | n/a | 0 | 0 | no clear difference |"
  assert row in paired.to_markdown([empty])


def test_differences_cover_every_other_system_and_metric(values):
  table = _table(values)
  diffs = paired.differences(table, "aid")
  assert [(d.reference, d.metric) for d in diffs] == [
      (ref, m) for ref in ("unprocessed", "noise") for m in METRICS]
  text = paired.to_markdown(diffs)
  lines = text.splitlines()
  assert lines[0] == ("| system | minus | metric | difference | 95% interval | p | recordings | clips | "
                      "verdict |")
  assert len(lines) == 2 + len(diffs)
  first = diffs[0]
  assert lines[2].startswith(f"| aid | unprocessed | nap_l1 | {first.mean:+.3g} | "
                             f"[{first.low:+.3g}, {first.high:+.3g}] |")
  assert lines[2].endswith(f"| {2 * N_PER_SNR} | better |")


@pytest.mark.parametrize("kwargs, message", [
    (dict(system="hearing aid"), "system: expected one of ['unprocessed', 'aid', 'noise']"),
    (dict(reference="aid"), "reference: expected a system other than 'aid'"),
    (dict(metric="pesq"), "metric: expected one of ['nap_l1', 'stoi']"),
    (dict(snr_db=10.0), "snr_db: expected 'all' or one of [0.0, 5.0], got 10.0"),
    (dict(confidence=1.0), "confidence: expected a float in (0, 1), got 1.0"),
    (dict(confidence=float("nan")), "confidence: expected a float in (0, 1)"),
])
def test_bad_arguments_raise(values, kwargs, message):
  args = dict(table=_table(values), system="aid", reference="unprocessed", metric="stoi")
  with pytest.raises(ParameterError, match=re.escape(message)):
    paired.paired_difference(**{**args, **kwargs})
  with pytest.raises(ParameterError, match="table: expected an EvaluationTable, got dict"):
    paired.paired_difference({}, "aid", "unprocessed", "stoi")


def test_the_unit_is_the_recording_not_the_clip(values):
  """Crops of one recording at two SNRs are one sample: the test runs on per-recording means."""
  n = 2 * N_PER_SNR
  sources = [f"rec{i // 4}" for i in range(n)]  # 4 recordings, 4 clips each (2 crops x 2 SNRs)
  diff = paired.paired_difference(_table(values, sources), "aid", "unprocessed", "stoi")
  d = (values["aid"]["stoi"] - values["unprocessed"]["stoi"]).reshape(4, 4).mean(axis=1)
  assert (diff.n, diff.n_clips) == (4, n)
  assert diff.mean == pytest.approx(d.mean(), rel=1e-12)
  half = scipy.stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
  assert (diff.low, diff.high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-9)
  assert paired.paired_difference(_table(values), "aid", "unprocessed", "stoi").n == n
  row = f"| aid | unprocessed | stoi | {diff.mean:+.3g} |"
  assert re.search(re.escape(row) + r".* \| 4 \| 16 \| better \|", paired.to_markdown([diff]))
