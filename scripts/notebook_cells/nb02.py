"""Notebook 2: the stabilized auditory image (SAI): triggers, pitch, vowels and speech."""
from notebook_cells.common import HOW_TO, references

NAME = "02_stabilized_auditory_image"

CELLS = [
    ("md", """
# 2 · The stabilized auditory image

The NAP of a vowel or a musical note is full of fine timing: pulses that repeat once per pitch
period, at slightly different times in different channels. Yet what we *hear* is steady: one
pitch and one timbre. Patterson and colleagues (1995) proposed that the auditory system
**stabilizes** the repeating pattern: in every channel, at each large peak of the NAP (a
*trigger*, or *strobe*), the activity around that moment is added into an image, which slowly
forgets old contributions. For a periodic sound the same pattern arrives after every trigger, so
the image stands still.

That image is the **stabilized auditory image (SAI)**: CF up, and across it the *lag* (time
relative to the trigger). CARFAC's SAI (Lyon 2017, ch. 21) looks for a few triggers per frame in
each channel and blends the NAP around each one into the running image. In this notebook you will
see how triggering stabilizes a vowel, how the SAI shows pitch, and how it shows vowels and speech.
""" + HOW_TO),
    ("code", """
# BokehJS first (inline: pictures work offline and in Voila), then the science.
from dal_widgets.ui import bokeh_setup
bokeh_setup.load_bokeh()

import ipywidgets as W
import jax
import numpy as np
import traitlets
from bokeh.layouts import gridplot
from bokeh.palettes import Category10_10
from bokeh.plotting import figure
from IPython.display import Markdown, display

from dal_widgets import audio
from dal_widgets.cochlea import designs, sai
from dal_widgets.ui import ABPlayer, CochleagramView, SAIView
from dal_widgets.ui.cochleagram_view import style_cf_axis

SR = 16000               # sample rate, Hz
DUR_S = 1.0              # every sound lasts 1 s: CARFAC and the SAI compile once
PLAYBACK_GAIN_DB = 12.0  # added to every sound alike when played (more would clip speech peaks)

cf_hz = designs.cf_hz(SR)
# 25 ms frames; 25 ms of lags: 20 ms before the trigger (pitches down to 50 Hz), 5 ms after it.
SAI_PARAMS = sai.sai_params_for(SR, cf_hz.size, frame_ms=25.0, width_ms=25.0, future_ms=5.0)
lag_ms = sai.sai_lags_s(SAI_PARAMS, SR) * 1000          # lag of each SAI column, ms (0 = trigger)
HOP_S = SAI_PARAMS.input_segment_width / SR             # time between frames, s
STEADY = slice(8, None)                                 # frames after the first 200 ms (onset)
sai_jit = jax.jit(sai.sai_frames, static_argnames="params")


def nap_of(x):
    \"\"\"NAP of a sound through the healthy CARFAC, [time, channel].\"\"\"
    return np.asarray(designs.cochleagram(x, SR).nap)


def sai_of(nap):
    \"\"\"SAI frames of a NAP, [frame, channel, lag]; frame i ends at (i + 1) * HOP_S.\"\"\"
    return np.asarray(sai_jit(nap, params=SAI_PARAMS))
"""),
    ("md", """
## Triggers make a periodic sound stand still

A synthetic vowel /a/ with a pitch of 110 Hz. On the left, each frame is simply the last 25 ms of
the NAP at that moment: because 25 ms is not a whole number of pitch periods, the pattern jumps
from frame to frame. On the right, the SAI: the same NAP, aligned on triggers. Press *play* (both
views follow each other) and compare. The number printed below measures how much a frame differs
from the one before it.
"""),
    ("code", """
vowel_a = audio.vowel(110.0, (730, 1090, 2440), DUR_S, SR)   # /a/ (Peterson & Barney 1952 formants)
nap_a = nap_of(vowel_a)
frames_a = sai_of(nap_a)
width, hop = SAI_PARAMS.sai_width, SAI_PARAMS.input_segment_width
snapshots = np.stack([nap_a[(i + 1) * hop - width:(i + 1) * hop].T for i in range(len(frames_a))])


def frame_change(frames):
    \"\"\"Mean change between successive steady frames, relative to their mean (0 = still).\"\"\"
    steady = frames[STEADY]
    return np.mean(np.abs(np.diff(steady, axis=0))) / np.mean(np.abs(steady))


print(f"frame-to-frame change without triggers: {frame_change(snapshots):.2f}")
print(f"frame-to-frame change of the SAI:       {frame_change(frames_a):.2f}")

raw_view = SAIView(cf_hz, lag_ms, HOP_S, offset_s=HOP_S, width=330, height=220)
raw_view.figure.title.text = "last 25 ms of the NAP (no triggers)"
raw_view.figure.xaxis.axis_label = "time in the window (ms)"
sai_view = SAIView(cf_hz, lag_ms, HOP_S, offset_s=HOP_S, width=330, height=220)
sai_view.figure.title.text = "SAI (aligned on triggers)"
raw_view.render(snapshots)
sai_view.render(frames_a)
traitlets.link((raw_view, "frame"), (sai_view, "frame"))
W.HBox([raw_view.widget, sai_view.widget])
"""),
    ("md", """
## Pitch: a ridge at the period

In the SAI of a periodic sound, activity repeats at lags of one period, two periods, and so on,
in **every** channel: a vertical ridge. Averaging the SAI over channels gives the *summary SAI*,
whose first big peak before lag 0 sits at the pitch period. The sounds below have known pitches:

- a click train at 100 clicks/s;
- harmonics of 200 Hz in cosine phase (peaky waveform) and in random phase (noisy-looking
  waveform, same pitch);
- harmonics 3 to 10 of 200 Hz only: there is **no energy at 200 Hz** at all, yet we hear a 200 Hz
  pitch (the *missing fundamental*). The SAI finds it too, because the harmonics beat together
  at 200 Hz in the channels that cannot separate them;
- the vowel /a/ at 110 Hz.
"""),
    ("code", """
missing_fundamental = sum(audio.tone(k * 200.0, DUR_S, SR, level_db_spl=55.0, phase_rad=np.pi / 2)
                          for k in range(3, 11))
pitch_sounds = {
    "clicks 100/s": (audio.click_train(100.0, DUR_S, SR, level_db_spl=70), 100.0),
    "harmonics of 200 Hz, cosine phase": (audio.harmonic_complex(200.0, DUR_S, SR, max_freq_hz=5000), 200.0),
    "harmonics of 200 Hz, random phase": (audio.harmonic_complex(
        200.0, DUR_S, SR, max_freq_hz=5000, phase="random", rng=np.random.default_rng(0)), 200.0),
    "harmonics 3-10 of 200 Hz": (missing_fundamental, 200.0),
    "vowel /a/, f0 110 Hz": (vowel_a, 110.0),
}


def summary_sai(frames):
    \"\"\"Mean of the steady SAI frames over frames and channels, one value per lag.\"\"\"
    return frames[STEADY].mean(axis=(0, 1))


def pitch_hz(summary, min_lag_ms=2.0, max_lag_ms=20.0, relative=0.8):
    \"\"\"Pitch from the summary SAI: the shortest past lag whose peak is >= relative * the largest.\"\"\"
    past = np.nonzero((lag_ms <= -min_lag_ms) & (lag_ms >= -max_lag_ms))[0]
    v = summary[past]
    peaks = [j for j in range(1, v.size - 1) if v[j - 1] <= v[j] > v[j + 1]]
    tallest = max(v[j] for j in peaks)
    first = max((j for j in peaks if v[j] >= relative * tallest), key=lambda j: lag_ms[past[j]])
    return 1000.0 / -lag_ms[past[first]]


summaries, rows = {}, ["| sound | true pitch (Hz) | SAI estimate (Hz) |", "|---|---:|---:|"]
for name, (x, f0_hz) in pitch_sounds.items():
    summaries[name] = summary_sai(sai_of(nap_of(x)))
    rows.append(f"| {name} | {f0_hz:.0f} | {pitch_hz(summaries[name]):.1f} |")
display(Markdown("\\n".join(rows)))

fig = figure(title="Summary SAI (each scaled to its maximum; click a name to hide it)",
             frame_width=480, frame_height=260, x_axis_label="lag (ms)", y_axis_label="mean activity",
             x_range=(lag_ms[0], lag_ms[-1]))
for colour, (name, summary) in zip(Category10_10, summaries.items()):
    fig.line(lag_ms, summary / summary.max(), color=colour, line_width=2, legend_label=name)
fig.legend.label_text_font_size = "8pt"
fig.legend.click_policy = "hide"
fig.add_layout(fig.legend[0], "right")
bokeh_setup.bokeh_model(fig)
"""),
    ("code", """
player = ABPlayer(names=tuple(pitch_sounds), gain_db=PLAYBACK_GAIN_DB)
player.set_signals({name: (x, SR) for name, (x, _) in pitch_sounds.items()})
player
"""),
    ("md", """
## Vowels: pitch across, timbre up

Two vowels, /a/ and /i/, each at two pitches. In each picture (the mean of the steady frames)
the **vertical ridges** sit at multiples of the pitch period: they move when the pitch changes
and stay put when the vowel changes. The **pattern up the CF axis** shows the formants: it changes
with the vowel and stays put when the pitch changes. The SAI separates the two things we hear in
a vowel: its pitch and its quality.
"""),
    ("code", """
vowels = {
    "/a/ at 110 Hz": audio.vowel(110.0, (730, 1090, 2440), DUR_S, SR),
    "/a/ at 150 Hz": audio.vowel(150.0, (730, 1090, 2440), DUR_S, SR),
    "/i/ at 110 Hz": audio.vowel(110.0, (270, 2290, 3010), DUR_S, SR),
    "/i/ at 150 Hz": audio.vowel(150.0, (270, 2290, 3010), DUR_S, SR),
}


def sai_picture(frames, title):
    \"\"\"A static picture of the mean steady SAI frame.\"\"\"
    image = frames[STEADY].mean(axis=0)[::-1]           # rows: lowest CF at the bottom
    fig = figure(title=title, width=320, height=200, x_range=(lag_ms[0], lag_ms[-1]),
                 y_range=(0, cf_hz.size), x_axis_label="lag (ms)", tools="hover,reset")
    fig.image(image=[image], x=lag_ms[0], y=0, dw=lag_ms[-1] - lag_ms[0], dh=cf_hz.size,
              palette="Viridis256")
    style_cf_axis(fig, cf_hz)
    return fig


pictures = [sai_picture(sai_of(nap_of(x)), name) for name, x in vowels.items()]
bokeh_setup.bokeh_model(gridplot(pictures, ncols=2, toolbar_location=None))
"""),
    ("code", """
vowel_player = ABPlayer(names=tuple(vowels), gain_db=PLAYBACK_GAIN_DB)
vowel_player.set_signals({name: (x, SR) for name, x in vowels.items()})
vowel_player
"""),
    ("md", """
## Speech

A second of a sentence: the cochleagram on top, its SAI below. The two are linked: click the
cochleagram to choose a moment, or press *play* on the SAI and watch the cursor move. During
voiced sounds the SAI shows ridges whose spacing follows the talker's intonation; during
unvoiced sounds (/s/, /ch/) and pauses the ridges disappear.
"""),
    ("code", """
speech, _ = audio.load_clip("slt_04")          # "These days a chicken leg is a rare dish."
start = int(0.25 * SR)
speech = speech[start:start + int(DUR_S * SR)]
nap_speech = nap_of(speech)

speech_cochleagram = CochleagramView(cf_hz, SR, labels=("speech",), height=180, width=560)
speech_cochleagram.render({"speech": nap_speech})
speech_sai = SAIView(cf_hz, lag_ms, HOP_S, offset_s=HOP_S, width=420, height=240)
frames_speech = sai_of(nap_speech)
speech_sai.render(frames_speech)
traitlets.link((speech_cochleagram, "cursor_s"), (speech_sai, "cursor_s"))
speech_sai.frame = int(np.argmax(frames_speech.mean(axis=(1, 2))))   # start at the liveliest frame
speech_player = ABPlayer(names=("speech",), gain_db=PLAYBACK_GAIN_DB)
speech_player.set_signals({"speech": (speech, SR)})
W.VBox([speech_cochleagram.widget, speech_sai.widget, speech_player])
"""),
    ("md", """
## What to remember

- Aligning the NAP on its own peaks (triggers) turns a moving pattern into a still image for
  periodic sounds: the stabilized auditory image.
- Pitch shows as vertical ridges at the period and its multiples, even when the fundamental is
  missing; timbre shows as the pattern up the CF axis.
- The SAI is one of the two things the DAL loss compares (notebook 4): an aid that restores it
  restores pitch and timbre cues for the impaired ear.

## Exercises

1. **Predict the ridge.** Change the click rate from 100/s to 250/s. At which lag do you expect
   the first ridge? Check with `pitch_hz` and the summary SAI.
2. **Phase.** Compare the NAPs (`CochleagramView`) of the cosine-phase and random-phase harmonic
   complexes. They look very different; why are their SAIs and pitches nearly the same?
3. **How missing can the fundamental be?** Build complexes from harmonics 5-12 and 10-20 of 200 Hz.
   Is the pitch still found? In which channels is the ridge strongest, and why there?
4. **Talkers.** Use `audio.list_clips()` to pick a clip by a male voice (kal, awb, rms) and one by
   the female voice (slt). Find a frame with clear ridges in each and estimate the talker's pitch
   from the lag of the first ridge.
"""),
    ("md", references("patterson1995", "lyon2017")),
]
