"""evaluate(): table contents, known answers (oracle system, identical ears), files, errors."""
import csv
from types import SimpleNamespace

import numpy as np
import pytest

from dal_widgets.audio import db_spl_to_rms, load_clip, mix_at_snr, white_noise
from dal_widgets.cochlea import designs
from dal_widgets.errors import DalError, ParameterError
from dal_widgets.hearing import fit_cochlea, preset
from dal_widgets.hearing.fit import ImpairedEar
from dal_widgets.loop import evaluate as ev
from dal_widgets.loop import metrics, paired

SR = 16000
CLIP_S = 0.5  # short clips keep the CARFAC pass to a fraction of a second after compilation
SNRS_DB = (0.0, 5.0)
N_CH = 65  # CARFAC channels at 16 kHz (DESIGN.md)
SHORT_N = int(0.3 * SR)  # below one 384 ms STOI segment, above one SAI frame
QUIET_DB_SPL = 30.0  # a fake HASPI's threshold: the 65 dB SPL clips, scaled by 0.01, are below
NAP_RTOL = 1e-4  # vmapped + padded run vs a plain run of the same float32 model


def _ear():
  """An impaired ear without the (minute-long) audiometric fit: uniform OHC and IHC losses."""
  return ImpairedEar(audiogram=preset("N3"), sr=float(SR), style="v3",
                     ohc_health=np.full(N_CH, 0.3), ihc_gain=np.full(N_CH, 0.3),
                     freqs_hz=(), target_db_hl=(), fitted_db_hl=())


def _clips():
  clips = []
  for i, (name, snr_db) in enumerate(zip(("slt_04", "kal_01"), SNRS_DB)):
    x, _ = load_clip(name)
    speech = x[SR // 4:SR // 4 + int(CLIP_S * SR)]  # speech, past the leading silence
    noisy, clean, _ = mix_at_snr(speech, white_noise(speech.shape[0], np.random.default_rng(i)),
                                 snr_db)
    clips.append((noisy, clean, snr_db))
  return clips


def _oracle(clips):
  """A cheating system that knows the clean speech of each noisy clip (a known best)."""
  by_noisy = {noisy.tobytes(): clean for noisy, clean, _ in clips}
  return ev.System("oracle", lambda x, sr: by_noisy[np.asarray(x, np.float32).tobytes()])


@pytest.fixture(scope="module")
def clips():
  return _clips()


@pytest.fixture(scope="module")
def run(clips):
  ear = _ear()
  progress = []
  systems = [ev.unprocessed(), ev.master_hearing_aid_system(ear.audiogram), _oracle(clips)]
  table = ev.evaluate(clips, SR, ear, systems, on_progress=lambda *a: progress.append(a))
  return table, progress


def test_table_has_every_metric_finite_for_every_system_and_snr(run):
  table, _ = run
  expected = ev.METRICS if metrics.haspi_available() else ev.METRICS[:-1]
  assert table.metrics == expected
  assert table.systems == ("unprocessed", "NAL-R+WDRC", "oracle")
  assert [(r["system"], r["snr_db"], r["n_clips"]) for r in table.rows] == [
      (name, snr, n) for name in table.systems for snr, n in ((0.0, 1), (5.0, 1), ("all", 2))]
  assert len(table.clip_rows) == 6
  for row in table.rows:
    assert all(np.isfinite(row[m]) for m in table.metrics), row


def test_all_snrs_row_is_the_mean_of_the_clips(run):
  table, _ = run
  for metric in table.metrics:
    per_clip = [r[metric] for r in table.clip_rows if r["system"] == "NAL-R+WDRC"]
    assert table.value("NAL-R+WDRC", metric) == pytest.approx(np.mean(per_clip))


def test_oracle_wins_the_signal_metrics(run):
  table, _ = run
  assert table.best("si_sdr_db") == "oracle"
  assert table.best("stoi") == "oracle"
  assert table.value("oracle", "si_sdr_db") > 100.0  # a perfect estimate (ceiling 150 dB)
  assert table.value("unprocessed", "si_sdr_db", snr_db=5.0) == pytest.approx(5.0, abs=0.5)


def test_paired_differences_of_an_evaluation_pair_its_clips(run):
  table, _ = run
  for metric in table.metrics:  # no NaN here: the mean difference is the difference of the means
    diff = paired.paired_difference(table, "oracle", "unprocessed", metric)
    assert diff.n == 2
    assert diff.mean == pytest.approx(table.value("oracle", metric)
                                      - table.value("unprocessed", metric), rel=1e-9, abs=1e-12)
  at_5_db = paired.paired_difference(table, "oracle", "unprocessed", "si_sdr_db", snr_db=5.0)
  assert at_5_db.n == 1 and at_5_db.verdict == "no clear difference"  # one clip: no interval
  assert at_5_db.mean == pytest.approx(table.value("oracle", "si_sdr_db", 5.0)
                                       - table.value("unprocessed", "si_sdr_db", 5.0))


@pytest.mark.slow  # compiles the plain (un-vmapped) CARFAC run: ~8 s
def test_nap_metrics_equal_a_direct_carfac_run(clips, run):
  table, _ = run
  noisy, clean, _ = clips[0]
  impaired = designs.cochleagram(noisy, SR, ohc_health=0.3, ihc_gain=0.3).nap
  normal = designs.cochleagram(clean, SR).nap
  row = next(r for r in table.clip_rows if r["system"] == "unprocessed" and r["clip"] == 0)
  assert row["nap_l1"] == pytest.approx(float(metrics.nap_l1(impaired, normal)), rel=NAP_RTOL)
  assert row["nap_corr"] == pytest.approx(float(metrics.nap_correlation(impaired, normal)),
                                          rel=NAP_RTOL)


def test_identical_ears_and_oracle_give_zero_distance(clips):
  normal = designs.designed(float(SR), "v3")
  table = ev.evaluate(clips, SR, _ear(), [_oracle(clips)], impaired_model=normal)
  assert table.value("oracle", "nap_l1") == 0.0
  assert table.value("oracle", "sai_l1") == 0.0
  assert table.value("oracle", "nap_corr") == pytest.approx(1.0, abs=1e-5)


def _evaluate_warned_once_about_clips_0_and_2(mixed, prefix):
  """evaluate() of 3 clips whose first and last lack something a metric needs: one warning
  starting with `prefix` names both (not one per clip and system). Returns the table."""
  with pytest.warns(UserWarning) as caught:
    table = ev.evaluate(mixed, SR, _ear(), [ev.unprocessed(), _oracle(mixed)])
  found = [str(w.message) for w in caught if str(w.message).startswith(prefix)]
  assert len(found) == 1 and "2 of 3 clips" in found[0] and "(clips 0, 2)" in found[0], found
  return table


def test_clips_too_short_for_stoi_give_nan_and_one_warning_naming_them(clips):
  short = [(noisy[:SHORT_N], clean[:SHORT_N], snr_db) for noisy, clean, snr_db in clips]
  mixed = [short[0], clips[1], short[1]]
  table = _evaluate_warned_once_about_clips_0_and_2(mixed, "stoi:")
  for row in table.clip_rows:
    assert np.isnan(row["stoi"]) == np.isnan(row["estoi"]) == (row["clip"] != 1)
    assert np.isfinite(row["nap_l1"])
  # the mean is over the clips that have a value, not NaN for every system
  only = next(r["stoi"] for r in table.clip_rows if r["system"] == "unprocessed" and r["clip"] == 1)
  assert table.value("unprocessed", "stoi") == pytest.approx(only)


def test_clips_below_the_haspi_threshold_give_nan_and_one_warning_naming_them(clips,
                                                                              monkeypatch):
  def fake_haspi_v2(reference, reference_sr, processed, processed_sr, hearing_loss, level1):
    """pyclarity's behaviour, without pyclarity: a ValueError for speech below its threshold."""
    if np.sqrt(np.mean(np.square(reference))) < db_spl_to_rms(QUIET_DB_SPL):
      raise ValueError("Signal below threshold")
    return 0.5, np.zeros(6)
  monkeypatch.setattr(metrics, "_haspi_module", lambda: SimpleNamespace(haspi_v2=fake_haspi_v2))
  quiet = [(noisy * 0.01, clean * 0.01, snr_db) for noisy, clean, snr_db in clips]  # 25 dB SPL
  mixed = [quiet[0], clips[1], quiet[1]]
  table = _evaluate_warned_once_about_clips_0_and_2(mixed, "haspi:")
  for row in table.clip_rows:
    assert np.isnan(row["haspi"]) == (row["clip"] != 1)
  assert table.value("unprocessed", "haspi") == 0.5


def test_haspi_can_be_left_out(clips, monkeypatch):
  def haspi_v2(*args, **kwargs):
    raise AssertionError("HASPI was scored")
  monkeypatch.setattr(metrics, "_haspi_module", lambda: SimpleNamespace(haspi_v2=haspi_v2))
  table = ev.evaluate(clips[:1], SR, _ear(), [ev.unprocessed()], haspi=False)
  assert table.metrics == ev.METRICS[:-1] and "haspi" not in table.clip_rows[0]


def test_progress_counts_system_clip_pairs(run):
  _, progress = run
  assert progress[-1] == (6, 6)
  assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_markdown_and_csv(run, tmp_path):
  table, _ = run
  markdown = table.to_markdown()
  assert markdown.splitlines()[0].startswith("| system | snr_db | n_clips | nap_l1 |")
  assert len(markdown.splitlines()) == 2 + len(table.rows)
  assert "| NAL-R+WDRC | all | 2 |" in markdown
  path = table.to_csv(tmp_path / "results.csv")
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["system"] for r in rows] == [r["system"] for r in table.rows]
  assert float(rows[0]["stoi"]) == pytest.approx(table.rows[0]["stoi"])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]  # no temporary left


def test_csv_into_missing_folder_is_a_parameter_error(run, tmp_path):
  table, _ = run
  with pytest.raises(ParameterError, match="cannot write"):
    table.to_csv(tmp_path / "missing" / "results.csv")


def test_best_and_value_errors(run):
  table, _ = run
  with pytest.raises(ParameterError, match="metric: expected one of"):
    table.best("pesq")
  with pytest.raises(ParameterError, match="no row for system='DAL'"):
    table.value("DAL", "stoi")


def test_bad_inputs_raise(clips):
  ear = _ear()
  noisy, clean, snr = clips[0]
  with pytest.raises(ParameterError, match=r"clips\[0\]: expected 1-D noisy and clean"):
    ev.evaluate([(noisy, clean[:-1], snr)], SR, ear, [ev.unprocessed()])
  with pytest.raises(ParameterError, match="clips: expected a non-empty list"):
    ev.evaluate([], SR, ear, [ev.unprocessed()])
  with pytest.raises(ParameterError, match="systems: expected distinct names"):
    ev.evaluate(clips, SR, ear, [ev.unprocessed(), ev.unprocessed()])
  with pytest.raises(ParameterError, match="sr: expected the normal_model design rate"):
    ev.evaluate(clips, 22050, ear, [ev.unprocessed()], normal_model=designs.designed(16000.0))
  with pytest.raises(ParameterError, match=r"clips\[0\]: expected at least"):
    ev.evaluate([(noisy[:100], clean[:100], snr)], SR, ear, [ev.unprocessed()])
  with pytest.raises(ParameterError, match=r"clips\[0\]: expected a source name .* got list"):
    ev.evaluate([(noisy, clean, snr, ["rec"])], SR, ear, [ev.unprocessed()])
  calls = []
  counting = ev.System("counting", lambda x, sr: calls.append(x) or x)
  with pytest.raises(ParameterError, match=r"clips\[1\]: expected clean speech, got a constant"):
    ev.evaluate([clips[0], (noisy, 0 * clean, snr)], SR, ear, [counting])
  assert calls == []  # refused before any work


def test_system_returning_another_length_is_a_dal_error(clips):
  short = ev.System("short", lambda x, sr: x[:-10])
  with pytest.raises(DalError, match="system 'short' returned shape"):
    ev.evaluate(clips, SR, _ear(), [short])


@pytest.mark.parametrize("listener", ["N3", "S2"])
def test_prescriptive_aid_brings_the_impaired_sai_closer_to_normal_in_quiet(clips, listener):
  # A sanity check of the baseline: in noise NAL-R+WDRC amplifies (and compresses) the noise too
  # and can score worse than no aid on NAP L1, but for speech in quiet the prescribed gain must
  # make the fitted impaired ear's auditory image more like the normal one.
  ear = fit_cochlea(preset(listener), SR)
  quiet = [(clean, clean, 99.0) for _, clean, _ in clips]
  systems = [ev.unprocessed(), ev.master_hearing_aid_system(ear.audiogram)]
  table = ev.evaluate(quiet, SR, ear, systems)
  assert table.value("NAL-R+WDRC", "sai_l1") < 0.95 * table.value("unprocessed", "sai_l1")


def test_pcm_clips_odd_snrs_and_rates_and_a_bad_audiogram_are_refused_up_front(clips):
  ear = _ear()
  noisy, clean, snr = clips[0]
  pcm = lambda x: np.round(x * 32767 / np.max(np.abs(x))).astype(np.int16)
  # int16 clips were evaluated as digital units, a 190 dB SPL sound, without a word
  with pytest.raises(ParameterError, match=r"clips\[0\] noisy: expected float samples.*int16"):
    ev.evaluate([(pcm(noisy), pcm(clean), snr)], SR, ear, [ev.unprocessed()])
  for bad in ("x", None, "5"):  # a ValueError / TypeError from float(), or "5" taken as 5 dB
    with pytest.raises(ParameterError, match=r"clips\[0\]: expected a finite snr_db"):
      ev.evaluate([(noisy, clean, bad)], SR, ear, [ev.unprocessed()])
  with pytest.raises(ParameterError, match="sr: expected a sample rate in Hz, got '16000'"):
    ev.evaluate(clips, "16000", ear, [ev.unprocessed()])  # a TypeError after a design
  with pytest.raises(ParameterError, match="audiogram: expected"):
    ev.master_hearing_aid_system("N3")  # failed only inside the first evaluation
