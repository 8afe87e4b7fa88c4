"""Notebook 3: hearing loss: audiograms, presets, OHC vs IHC loss, audiometry, fitted ear, listening."""
from notebook_cells.common import HOW_TO, references

NAME = "03_hearing_loss"

CELLS = [
    ("md", """
# 3 · Hearing loss in a model cochlea

An **audiogram** is how a clinic describes hearing: the softest pure tone a listener detects at
each frequency, in **dB HL** (hearing level), i.e. in dB above the average threshold of young
normal-hearing listeners. 0 dB HL is normal; a threshold of 60 dB HL at 4 kHz means that tone must
be 60 dB more intense than normal to be heard.

Most permanent hearing loss is *cochlear* (Moore 2007). Two kinds of damage matter here:

- **Outer hair cells (OHCs)** provide the cochlear amplifier. Losing them removes up to about
  50 dB of gain for soft sounds, removes **compression** (loud sounds grow abnormally fast in
  loudness: *recruitment*) and **broadens the filters**.
- **Inner hair cells (IHCs)** and their synapses transmit to the auditory nerve. Losing them acts
  more like a plain attenuation of what the nerve receives.

In CARFAC these are two knobs per channel: `ohc_health` (1 = healthy, 0 = no OHC gain) and
`ihc_gain` (1 = healthy, smaller = weaker IHC drive). In this notebook you will see standard
audiograms, what each knob does, how a model ear is *fitted* to an audiogram by simulated
audiometry, and listen to a simulation of hearing loss.
""" + HOW_TO),
    ("code", """
# BokehJS first (inline: pictures work offline and in Voila), then the science.
from dal_widgets.ui import bokeh_setup
bokeh_setup.load_bokeh()

import ipywidgets as W
import numpy as np
from bokeh.layouts import gridplot
from bokeh.models import FixedTicker
from bokeh.palettes import Turbo256
from bokeh.plotting import figure
from IPython.display import Markdown, display

from dal_widgets import audio
from dal_widgets.cochlea import carfac, designs
from dal_widgets.hearing import (PRESET_NAMES, Audiogram, fit_cochlea, model_audiogram_db_hl, preset,
                                 simulate_hearing_loss)
from dal_widgets.hearing.audiogram import reference_threshold_db_spl
from dal_widgets.hearing.audiometry import normal_thresholds_db_spl
from dal_widgets.ui import ABPlayer, AudiogramEditor, CochleagramView
from dal_widgets.ui.audiogram_editor import AudiogramPlot
from dal_widgets.ui.cochleagram_view import hz_label

SR = 16000               # sample rate, Hz
DUR_S = 1.0              # every sound lasts 1 s: CARFAC compiles once
PLAYBACK_GAIN_DB = 12.0  # added to every sound alike when played (more would clip speech peaks)
cf_hz = designs.cf_hz(SR)


def label_hz_axis(fig, ticks_hz=(125, 250, 500, 1000, 2000, 4000, 8000)):
    \"\"\"Octave ticks on a log-frequency x axis, labelled like an audiogram (250, 1k, ...).\"\"\"
    fig.xaxis.ticker = FixedTicker(ticks=list(ticks_hz))
    fig.xaxis.major_label_overrides = {t: hz_label(t) for t in ticks_hz}
"""),
    ("md", """
## Standard audiograms

Bisgaard, Vlaming and Dahlquist (2010) summarised a large database of real audiograms with ten
typical ones: **N1-N7**, flat or moderately sloping losses from very mild to profound, and
**S1-S3**, steeply sloping losses (good low frequencies, poor high frequencies, common with age
and noise exposure). Audiograms are drawn upside down: more loss is lower. Click a name in the
legend to hide it.
"""),
    ("code", """
colours = [Turbo256[int(i)] for i in np.linspace(20, 235, len(PRESET_NAMES))]
fig = figure(title="Bisgaard et al. (2010) standard audiograms", x_axis_type="log", frame_width=480,
             frame_height=320, x_range=(200, 7500), y_range=(115, -15), x_axis_label="frequency (Hz)",
             y_axis_label="threshold (dB HL)", tools="hover,reset")
for name, colour in zip(PRESET_NAMES, colours):
    a = preset(name)
    dash = "dashed" if name.startswith("S") else "solid"
    fig.line(a.freqs_hz, a.thresholds_db_hl, color=colour, line_width=2, line_dash=dash,
             legend_label=name)
    fig.scatter(a.freqs_hz, a.thresholds_db_hl, color=colour, size=5, legend_label=name)
fig.legend.click_policy = "hide"
fig.add_layout(fig.legend[0], "right")
label_hz_axis(fig, (250, 500, 1000, 2000, 4000, 6000))
bokeh_setup.bokeh_model(fig)
"""),
    ("md", """
## OHC loss and IHC loss are different

We play a 1 kHz tone from 0 to 100 dB SPL to three model ears and plot the NAP of the 1 kHz channel
(a log scale, so equal steps are equal ratios):

- **healthy**: activity appears near 10 dB SPL and grows, compressively, to saturation;
- **OHC loss** (`ohc_health = 0` everywhere): the response starts about 40 dB later but then grows
  *faster* and catches up with normal at high levels: **recruitment**, the loss is mostly a loss
  for soft sounds;
- **IHC loss** (`ihc_gain` 20 dB down): the whole curve moves 20 dB to the right without
  changing shape, like an attenuator.
"""),
    ("code", """
levels_db_spl = np.arange(0, 101, 5)
ch_1k = int(np.argmin(np.abs(np.log(cf_hz / 1000.0))))
second_half = slice(int(0.5 * SR), None)
ears = {"healthy": {}, "OHC loss: ohc_health = 0": {"ohc_health": 0.0},
        "IHC loss: ihc_gain = -20 dB": {"ihc_gain": 10 ** (-20 / 20)}}
NAP_FLOOR = 1e-4                                     # below this we call it "no response"


def nap_at_cf(level_db_spl, ear):
    x = audio.tone(1000.0, DUR_S, SR, level_db_spl=level_db_spl)
    nap = np.asarray(designs.cochleagram(x, SR, **ear).nap)[second_half, ch_1k]
    return max(float(nap.mean()), NAP_FLOOR)


fig = figure(title="NAP at CF (1 kHz) against tone level", y_axis_type="log", width=560, height=360,
             x_axis_label="tone level (dB SPL)", y_axis_label="mean NAP (model units)",
             y_range=(NAP_FLOOR, 3))
for colour, (name, ear) in zip(("#1f77b4", "#d62728", "#2ca02c"), ears.items()):
    response = [nap_at_cf(level, ear) for level in levels_db_spl]
    fig.line(levels_db_spl, response, color=colour, line_width=2, legend_label=name)
    fig.scatter(levels_db_spl, response, color=colour, size=5)
fig.legend.location = "bottom_right"
bokeh_setup.bokeh_model(fig)
"""),
    ("md", """
OHC loss also **broadens the filters**. Below is the filter of the 2 kHz channel (the spectrum of
its response to a soft click), healthy and without OHCs, on one dB scale: the peak loses nearly
50 dB and the sharp tip is gone. A broad filter lets more noise in with the speech, one reason why
hearing-impaired listeners struggle in noise even when sounds are made loud enough.

The click comes after 20 ms of silence. Every model ear starts from the healthy ear's resting
state and needs about a millisecond to settle to its own damping; a click at time 0 would show a
mix of the two ears.
"""),
    ("code", """
settle = int(0.02 * SR)                                          # 20 ms: the model ear settles
click = np.roll(audio.click_train(1.0, DUR_S, SR, level_db_spl=40), settle)   # one soft click
ch_2k = int(np.argmin(np.abs(np.log(cf_hz / 2000.0))))
n_fft = 4096                                                     # 256 ms from the click on
freqs_hz = np.fft.rfftfreq(n_fft, 1 / SR)
fig = figure(title=f"Filter of channel {ch_2k} (CF {cf_hz[ch_2k]:.0f} Hz)", x_axis_type="log",
             width=560, height=320, x_range=(200, 8000), y_range=(-70, 5),
             x_axis_label="frequency (Hz)", y_axis_label="gain (dB re healthy peak)")
peaks_db = []
for colour, (name, ear) in zip(("#1f77b4", "#d62728"), list(ears.items())[:2]):
    bm = np.asarray(designs.cochleagram(click, SR, **ear).bm)[settle:settle + n_fft, ch_2k]
    gain_db = 20 * np.log10(np.abs(np.fft.rfft(bm)) + 1e-12)
    peaks_db.append(gain_db.max())
    fig.line(freqs_hz[1:], gain_db[1:] - peaks_db[0], color=colour, line_width=2, legend_label=name)
print(f"peak gain lost without OHCs: {peaks_db[0] - peaks_db[1]:.1f} dB")
fig.legend.location = "top_left"
label_hz_axis(fig, (250, 500, 1000, 2000, 4000, 8000))
bokeh_setup.bokeh_model(fig)
"""),
    ("md", """
## Simulated audiometry

How do we know what audiogram a model ear has? We test it like a person: tones at each
audiometric frequency at levels in 5 dB steps, and the **threshold** is the level at which the
NAP near the tone's place first crosses a fixed criterion (interpolated between the steps, so it
need not be a multiple of 5 dB). The healthy model's thresholds define 0 dB HL for the model.
They are not a person's: the first line below puts them next to those of young normal-hearing
adults (ISO 389-7). At 16 kHz the model is 10-20 dB less sensitive at middle frequencies and much
less near the top of its channels (6.8 kHz), so hearing losses are fitted relative to the model's
own normal ear, never in absolute dB SPL.

Here is the audiogram of the ear with **no OHCs at all**. Even total OHC loss gives only a
mild-to-moderate loss (about 15-50 dB, depending on frequency): larger losses must involve the
IHCs too. *(This cell takes a few seconds: it runs the model for 39 levels at every frequency.)*
"""),
    ("code", """
TEST_FREQS_HZ = (250.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0, 6000.0)
print("healthy model, dB SPL:     ", np.round(normal_thresholds_db_spl(TEST_FREQS_HZ, SR), 1))
print("young adults (ISO 389-7):  ", reference_threshold_db_spl(TEST_FREQS_HZ))
no_ohc = carfac.make_weights(designs.designed(SR).hypers, ohc_health=0.0)
no_ohc_db_hl = model_audiogram_db_hl(TEST_FREQS_HZ, SR, no_ohc)
print("thresholds without OHCs (dB HL):", np.round(no_ohc_db_hl, 1))

no_ohc_plot = AudiogramPlot(width=380, height=260)
no_ohc_plot.render(Audiogram(TEST_FREQS_HZ, np.round(no_ohc_db_hl, 1), name="model, no OHCs"))
bokeh_setup.bokeh_model(no_ohc_plot.figure)
"""),
    ("md", """
## The fitted ear

To give the model a listener's audiogram we **fit** it: up to two thirds of the loss at each
frequency is given to the OHCs (a common clinical estimate; never more than the OHCs can take away),
and the rest to the IHCs. Then simulated audiometry checks the result and corrects the IHC part
until the model's audiogram matches the target. The table shows target and fitted thresholds for
the moderate loss **N3**; the pictures show the per-channel knobs that produce it.
"""),
    ("code", """
listener = preset("N3")
ear = fit_cochlea(listener, SR)          # presets come pre-fitted with the package: instant
display(Markdown(ear.table()))

fig_ohc = figure(title="OHC health per channel", x_axis_type="log", width=360, height=240,
                 x_axis_label="CF (Hz)", y_range=(-0.05, 1.05), tools="hover,reset")
fig_ohc.line(cf_hz, ear.ohc_health, line_width=2, color="#d62728")
fig_ihc = figure(title="IHC gain per channel (dB)", x_axis_type="log", width=360, height=240,
                 x_axis_label="CF (Hz)", tools="hover,reset")
fig_ihc.line(cf_hz, 20 * np.log10(ear.ihc_gain), line_width=2, color="#2ca02c")
for fig in (fig_ohc, fig_ihc):
    label_hz_axis(fig)
bokeh_setup.bokeh_model(gridplot([[fig_ohc, fig_ihc]], toolbar_location=None))
"""),
    ("md", """
## Try your own audiogram

Choose a preset or move the sliders (one per audiometric frequency). The model ear is refitted
(a quick open-loop fit, without the audiometry check), and you see the NAP of a sentence in the
normal and the impaired ear, their difference (blue: activity the impaired ear has lost), and can
listen to a simulation of the loss. Thresholds above 6 kHz are beyond a 16 kHz model and are
ignored by the fit.

Do not be surprised how dark the impaired panel is: with a moderate loss such as N3, conversational
speech (65 dB SPL) is only 10-30 dB above threshold, so the impaired ear's activity is a small
fraction of the normal one (compare the mean NAPs printed above the pictures). Restoring it is
the job of a hearing aid.
"""),
    ("code", """
speech, _ = audio.load_clip("slt_04")
start = int(0.25 * SR)
speech = speech[start:start + int(DUR_S * SR)]
nap_normal = np.asarray(designs.cochleagram(speech, SR).nap)

editor = AudiogramEditor()
comparison = CochleagramView(cf_hz, SR, labels=("normal", "impaired"), difference=("normal", "impaired"),
                             height=150, width=290)
listening = ABPlayer(names=("normal hearing", "simulated loss"), gain_db=PLAYBACK_GAIN_DB)
fit_summary = W.HTML()


def on_audiogram_changed(change=None):
    audiogram = editor.audiogram
    quick_ear = fit_cochlea(audiogram, SR, refine=False)   # open-loop fit: milliseconds
    nap_impaired = designs.cochleagram(speech, SR, ohc_health=quick_ear.ohc_health,
                                       ihc_gain=quick_ear.ihc_gain).nap
    comparison.render({"normal": nap_normal, "impaired": np.asarray(nap_impaired)})
    listening.set_signals({"normal hearing": (speech, SR),
                           "simulated loss": (simulate_hearing_loss(speech, SR, audiogram), SR)})
    fit_summary.value = (f"PTA (0.5-4 kHz): <b>{audiogram.pta_db_hl:.0f} dB HL</b>; "
                         f"mean NAP {np.mean(nap_normal):.3f} (normal) vs "
                         f"{np.mean(nap_impaired):.3f} (impaired)")


editor.observe(on_audiogram_changed, "audiogram")
editor.apply_preset("N3")
W.VBox([editor, fit_summary, comparison.widget, listening])
"""),
    ("md", """
## Listening to standard losses

The **listening simulator** processes sound so that a normal-hearing listener hears roughly what
an impaired ear hears: it raises thresholds (soft parts disappear), adds recruitment (the
remaining range is squeezed) and smears the spectrum (broader filters). It is a sketch, not a
validated model; read its limits in `help(simulate_hearing_loss)`. Listen to the same sentence
through four standard audiograms.
"""),
    ("code", """
sentence, _ = audio.load_clip("kal_05")
sentence = sentence[:int(1.5 * SR)]                  # 1.5 s
presets_to_hear = ("N1", "N3", "N5", "S2")
listen = ABPlayer(names=("normal",) + presets_to_hear, gain_db=PLAYBACK_GAIN_DB)
listen.set_signals({"normal": (sentence, SR),
                    **{name: (simulate_hearing_loss(sentence, SR, preset(name)), SR)
                       for name in presets_to_hear}})
listen
"""),
    ("md", """
## What to remember

- An audiogram gives thresholds in dB HL; N1-N7 and S1-S3 are typical shapes (Bisgaard et al.
  2010).
- OHC loss removes gain for soft sounds, compression and sharp tuning (recruitment, broad
  filters); IHC loss attenuates. Total OHC loss alone gives at most about 50 dB of threshold
  shift.
- A model ear is fitted to an audiogram by simulated audiometry: two thirds of the loss to the
  OHCs where possible, the rest to the IHCs.

## Exercises

1. **Steep loss.** Choose S2 in the editor. Which parts of the sentence lose the most activity in
   the difference picture? Which speech sounds would be hard to hear, and does the simulation
   agree?
2. **Same threshold, different ear.** Find an `ihc_gain` that gives the same 1 kHz threshold as
   `ohc_health = 0` (use `model_audiogram_db_hl` at 1000 Hz only). Plot both input-output
   functions: which ear shows recruitment?
3. **One slider.** Raise only the 2 kHz slider by 40 dB. Over which range of CFs does the NAP change?
   Why does it spread (think of the filter shapes and of the interpolation between audiogram
   frequencies)?
4. **Residuals.** Fit `preset("S3")` with `fit_cochlea` and look at `ear.residual_db`. Which
   frequencies are hardest to match, and why might the top of a 16 kHz model be difficult?
"""),
    ("md", references("bisgaard2010", "moore2007", "lyon2017")),
]
