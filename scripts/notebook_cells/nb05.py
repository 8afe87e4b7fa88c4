"""Notebook 5: comparing hearing aids: unprocessed vs NAL-R + WDRC vs DAL, and what metrics mean."""
from notebook_cells.common import HOW_TO, references

NAME = "05_comparing_hearing_aids"

CELLS = [
    ("md", """
# 5 · Comparing hearing aids

How do we decide whether a hearing aid helps? Ideally by testing listeners; in the lab we first use
**objective metrics** computed from the sounds. In this notebook three systems process the same
noisy sentences for one listener:

1. **unprocessed**: no hearing aid;
2. **NAL-R + WDRC**: a classic prescription. NAL-R (Byrne & Dillon 1986) sets a frequency-dependent
   gain from the audiogram; wide dynamic range compression (WDRC) then gives soft sounds more gain
   than loud ones, in several frequency bands, to squeeze speech into the listener's reduced
   dynamic range;
3. **DAL**: the neural hearing aid trained through the model cochlea (notebook 4).

We then read a table of metrics, look at cochleagrams, listen, and discuss what each metric can and
cannot tell us.
""" + HOW_TO),
    ("code", """
# BokehJS first (inline: pictures work offline and in Voila), then the science.
from dal_widgets.ui import bokeh_setup
bokeh_setup.load_bokeh()

import os
import pathlib

import numpy as np
from bokeh.layouts import gridplot
from bokeh.models import FixedTicker
from bokeh.plotting import figure
from IPython.display import Markdown, display

from dal_widgets.aid import condition_from_audiogram, design_wdrc, nalr_gains_db
from dal_widgets.cochlea import designs
from dal_widgets.hearing import PRESET_NAMES, fit_cochlea, preset, simulate_hearing_loss
from dal_widgets.loop import checkpoint, config_for, evaluation_clips
from dal_widgets.loop import evaluate as evaluate_lib
from dal_widgets.loop import paired
from dal_widgets.loop import train as train_lib
from dal_widgets.loop.pretrained import load_pretrained
from dal_widgets.ui import ABPlayer, CochleagramView
from dal_widgets.ui.cochleagram_view import hz_label
from dal_widgets.ui.finetune_panel import TrainedAid
from dal_widgets.ui.metrics_table import MetricsTable
from dal_widgets.ui.workbench import Workbench

PLAYBACK_GAIN_DB = 6.0    # added to every sound alike (aided sounds are louder already)
RUN_DIR = pathlib.Path(os.environ.get("DAL_RUNS_DIR", pathlib.Path.home() / "dal_runs")) / "notebook_widget"


def label_hz_axis(fig, ticks_hz=(125, 250, 500, 1000, 2000, 4000, 8000)):
    \"\"\"Octave ticks on a log-frequency x axis, labelled like an audiogram (250, 1k, ...).\"\"\"
    fig.xaxis.ticker = FixedTicker(ticks=list(ticks_hz))
    fig.xaxis.major_label_overrides = {t: hz_label(t) for t in ticks_hz}
"""),
    ("md", """
## The DAL aid and its listener

We use the pretrained model shipped with the package if there is one; otherwise the aid trained in
notebook 4; otherwise we run that short fine-tune now (about a minute). A checkpoint
stores its training configuration, so it tells us the listener's audiogram and the network
architecture.
"""),
    ("code", """
pretrained = load_pretrained()           # (params, TrainConfig, steps) of the bundled aid, or None
if pretrained is not None:
    params, cfg, steps_trained = pretrained
    model_source = "the pretrained model of the package"
else:
    if checkpoint.latest(RUN_DIR) is not None:
        model_source = "the short fine-tune of notebook 4"
    else:
        train_lib.train(config_for("widget").replace(checkpoint_every=0), RUN_DIR, progress=True)
        model_source = "a short fine-tune, run just now"
    params, cfg, steps_trained = checkpoint.restore_params(RUN_DIR)

SR = cfg.data.sr
listener = train_lib.listener_audiogram(cfg)
ear = fit_cochlea(listener, SR, style=cfg.style)
condition = condition_from_audiogram(listener) if cfg.model_config.film_dim else None
cf_hz = designs.cf_hz(SR)
print(f"DAL aid: {model_source}, {steps_trained} training steps")
print(f"listener: {listener.name or 'custom'}, PTA {listener.pta_db_hl:.0f} dB HL")
"""),
    ("md", """
## What the prescription does

The NAL-R gain (left) follows from the audiogram by a public formula: roughly a third of the loss
at each frequency plus a correction for the speech spectrum, aiming to make all speech bands
equally loud. The WDRC then compresses each band: above its threshold, an increase of *ratio* dB
at the input gives only 1 dB more at the output (right; bigger losses get higher ratios).
"""),
    ("code", """
freqs_hz = np.geomspace(125, 8000, 200)
fig_gain = figure(title=f"NAL-R insertion gain for {listener.name or 'this listener'}",
                  x_axis_type="log", width=360, height=260, x_axis_label="frequency (Hz)",
                  y_axis_label="gain (dB)", tools="hover,reset")
fig_gain.line(freqs_hz, nalr_gains_db(listener, freqs_hz), line_width=2, color="darkorange")
wdrc = design_wdrc(listener, SR)
fig_ratio = figure(title="WDRC compression ratio per band", x_axis_type="log", width=360, height=260,
                   x_axis_label="band centre (Hz)", y_axis_label="ratio", tools="hover,reset")
fig_ratio.scatter(wdrc.center_hz, wdrc.ratio, size=9, color="darkorange")
fig_ratio.line(wdrc.center_hz, wdrc.ratio, color="darkorange")
for fig in (fig_gain, fig_ratio):
    label_hz_axis(fig)
bokeh_setup.bokeh_model(gridplot([[fig_gain, fig_ratio]], toolbar_location=None))
"""),
    ("md", """
## The evaluation

Four held-out test clips (two sentences, each at 0 and at 5 dB SNR, 1 s long). Every system
processes the noisy clip; its output goes, at the level the system produced, into the listener's
impaired model ear, and the clean speech into the normal model ear. *(About 10-30 s.)* The table
shows each system's mean over the four clips, the best value of each column in bold; below it,
the means at each SNR.
"""),
    ("code", """
clips = evaluation_clips(cfg.data, snrs_db=(0.0, 5.0), n_clips=2, clip_s=1.0)
systems = [evaluate_lib.unprocessed(),
           evaluate_lib.master_hearing_aid_system(listener),
           evaluate_lib.dal_system(params, cfg.model_config, condition=condition)]
table = evaluate_lib.evaluate(clips, SR, ear, systems)
metrics_table = MetricsTable()
metrics_table.render(table)
display(metrics_table)
display(Markdown(table.to_markdown()))
"""),
    ("md", """
## What the metrics mean

| metric | compares | better | what it tells you |
|---|---|---|---|
| `nap_l1` | impaired NAP of the aided sound vs normal NAP of clean speech | lower | how far the listener's model auditory nerve is from normal: the DAL's own objective |
| `nap_corr` | the same two NAPs | higher | whether the *pattern* of activity matches, whatever its overall size |
| `sai_l1` | the two stabilized auditory images | lower | whether pitch and timbre cues are restored |
| `si_sdr_db` | aided waveform vs clean waveform | higher | waveform fidelity after the best scaling; **any** filtering lowers it, even helpful gain shaping |
| `stoi`, `estoi` | clean vs aided envelopes in 1/3-octave bands | higher (0..1) | predicted intelligibility for a **normal-hearing** listener; blind to level and to hearing loss |
| `haspi` | clean (normal ear) vs aided (impaired ear) | higher (0..1) | intelligibility for *this* listener (HASPI v2, through `pyclarity`; `./dev` installs it) |

Keep in mind:

- The **NAP and SAI metrics use the same model as the DAL's training loss**. A DAL aid doing well
  on them is expected, not independent evidence. The other metrics are independent of CARFAC, but
  none of them is a listening test.
- A prescription can *lower* SI-SDR and STOI while helping a real listener: amplifying high
  frequencies changes the waveform, and STOI ignores audibility.
- Four one-second clips are a demonstration, not a study: differences of a few hundredths may be
  noise. And an aid trained for a few dozen steps on a laptop is a beginner.
"""),
    ("code", """
lower_is_better = {name for name, higher in evaluate_lib.HIGHER_IS_BETTER.items() if not higher}
colours = ("#7f7f7f", "darkorange", "#1f77b4")
bars = []
for metric in table.metrics:
    values = [table.value(system, metric) for system in table.systems]
    arrow = "lower is better" if metric in lower_is_better else "higher is better"
    fig = figure(title=f"{metric} ({arrow})", x_range=list(table.systems), width=250, height=200,
                 tools="hover", tooltips=[("value", "@top{0.000}")])
    fig.vbar(x=list(table.systems), top=values, width=0.6, color=colours[:len(values)])
    fig.xaxis.major_label_text_font_size = "8pt"
    bars.append(fig)
bokeh_setup.bokeh_model(gridplot(bars, ncols=3, toolbar_location=None))
"""),
    ("md", """
## Is a difference more than noise?

Every system heard the same clips, so we can compare two systems clip by clip: the DAL aid's
value minus the other system's on each clip, with a 95% confidence interval (a paired t-test).
If the interval holds 0, the difference in the table could be noise ("no clear difference").
The test counts each held-out *recording* once: crops of one sentence, and one crop at two SNRs,
are not independent samples of speech, so their differences are averaged per recording first
(the "recordings" column; "clips" says how many clips went into those means). The bundled
clips hold out only two recordings, so the intervals here are wide whatever `n_clips` is: more
clips of the same two sentences cannot tell you how an aid does on other speech. With your own
corpus (`DataConfig(corpus=...)`), more held-out recordings narrow them. (In our own tests HASPI of one aid
ranged from 0.03 to 0.97 across twelve one-second clips.)
"""),
    ("code", """
dal_minus_others = paired.differences(table, "DAL")
display(Markdown(paired.to_markdown(dal_minus_others)))
clear = [f"{d.metric} vs {d.reference}: {d.verdict}" for d in dal_minus_others
         if d.verdict != "no clear difference"]
print("clear differences:", "; ".join(clear) if clear else "none with four clips")
"""),
    ("md", """
## Look and listen

The first test clip through each system, as the listener's impaired model ear responds to it,
next to the normal ear's response to the clean speech. Then the sounds: first what goes into the
ear, then simulations of what the listener hears.
"""),
    ("code", """
noisy, clean, snr_db, recording = clips[0]
aided = {system.name: system(noisy, SR) for system in systems}
knobs = dict(ohc_health=ear.ohc_health, ihc_gain=ear.ihc_gain, style=cfg.style)
panels = {"normal ear, clean": np.asarray(designs.cochleagram(clean, SR, style=cfg.style).nap)}
panels.update({name: np.asarray(designs.cochleagram(y, SR, **knobs).nap) for name, y in aided.items()})
view = CochleagramView(cf_hz, SR, labels=tuple(panels), ncols=2, height=150, width=300)
view.render(panels)
print(f"test clip 0: {recording}, SNR {snr_db:.0f} dB")
view.widget
"""),
    ("code", """
signals = {"clean": (clean, SR)}
signals.update({name: (y, SR) for name, y in aided.items()})
signals.update({f"{name}, as heard (simulated)": (simulate_hearing_loss(y, SR, listener), SR)
                for name, y in aided.items()})
player = ABPlayer(names=tuple(signals), gain_db=PLAYBACK_GAIN_DB)
player.set_signals(signals)
player
"""),
    ("md", """
## The whole workbench

Everything above in one widget, as in the *Hearing-aid lab* app: choose a sentence, a noise and
its SNR, an audiogram; see the NAPs and SAIs of the normal and the impaired ear, unaided and with
both aids; listen; fine-tune the DAL aid for the listener; read the metrics for the clip. It starts
with the listener and the DAL aid used above.
"""),
    ("code", """
bench = Workbench(preset=listener.name if listener.name in PRESET_NAMES else None, refine=False)
if listener.name not in PRESET_NAMES:
    bench.editor.set_audiogram(listener)
bench.finetune.model = TrainedAid(params=params, model_config=cfg.model_config, audiogram=listener,
                                  steps_done=steps_trained, loss=float("nan"))
bench.wait(timeout=300)                  # the first pictures are computed in the background
bench
"""),
    ("md", """
## What to remember

- The classic prescription sets gain from the audiogram and compresses each band; the DAL aid
  learns its processing from a model of the listener's ear.
- Each metric answers a different question. Model-based metrics (NAP, SAI) share the DAL's
  assumptions; waveform metrics (SI-SDR) punish any change; STOI ignores hearing loss; HASPI
  models the listener but needs an extra package.
- Small evaluations are for exploring. Claims need many clips, many listeners, and listening tests.

## Exercises

1. **A louder baseline.** Add `evaluate_lib.System("gain +20 dB", lambda x, sr: x * 10.0)` to
   `systems` and evaluate again. Which metrics reward plain loudness, and which do not notice it?
2. **SNR.** Evaluate at SNRs of -5 and 10 dB (`snrs_db=(-5.0, 10.0)`). Where does each aid help
   most? Does the ranking of the systems change with SNR?
3. **Your ears against the table.** Listen to the "as heard" rows. Which system would you choose?
   Which metric agrees with you?
4. **Another listener.** Refit `ear` and the prescription for `preset("S2")` (steep loss) and rerun
   the evaluation with the same DAL aid. The aid was trained for another audiogram: what happens,
   and why does the DAL need training (or conditioning) per listener?
"""),
    ("md", references("nalr1986", "dal", "metrics", "bisgaard2010", "moore2007")),
]
