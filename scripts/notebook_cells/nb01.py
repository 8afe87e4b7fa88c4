"""Notebook 1: the cochlea as a filter cascade (CARFAC): CFs, filters, BM and NAP, compression."""
from notebook_cells.common import HOW_TO, references

NAME = "01_cochlea_filter_cascade"

CELLS = [
    ("md", """
# 1 · The cochlea as a filter cascade

The cochlea turns sound into neural activity. Along the basilar membrane (BM) every place
responds best to one frequency, its **characteristic frequency (CF)**: high frequencies near the
base, low ones near the apex. Outer hair cells (OHCs) amplify soft sounds and much less loud ones
(**compression**); inner hair cells (IHCs) turn BM motion into firing of the auditory nerve.

We use **CARFAC** (Cascade of Asymmetric Resonators with Fast-Acting Compression, Lyon 2017):
the BM is a *cascade* of small resonant filters, one per place. Sound enters at the base
(channel 0, highest CF); each stage filters the output of the stage before it, so a channel's
response is the product of all stages up to it. An IHC model turns each channel's BM motion into
a **neural activity pattern (NAP)**, and an automatic gain control (AGC) feeds back to the OHCs,
turning the gain down when the sound gets loud.

In this notebook you will see the channels' CFs, their filter shapes, the travelling wave, the BM
and NAP of tones, clicks, a vowel and speech, and how the cochlea compresses level.
""" + HOW_TO),
    ("code", """
# BokehJS first (inline: pictures work offline and in Voila), then the science.
from dal_widgets.ui import bokeh_setup
bokeh_setup.load_bokeh()

import ipywidgets as W
import numpy as np
from bokeh.layouts import gridplot
from bokeh.models import ColorBar, FixedTicker, LinearColorMapper
from bokeh.palettes import Category10_10, RdBu11, interp_palette
from bokeh.plotting import figure

from dal_widgets import audio
from dal_widgets.cochlea import designs
from dal_widgets.ui import ABPlayer, CochleagramView
from dal_widgets.ui.cochleagram_view import hz_label, style_cf_axis

SR = 16000               # sample rate, Hz: CARFAC then has 65 channels
DUR_S = 1.0              # every sound here lasts 1 s, so the model is compiled only once (~5 s)
PLAYBACK_GAIN_DB = 12.0  # added to every sound alike when played (more would clip speech peaks)


def label_hz_axis(fig, ticks_hz=(125, 250, 500, 1000, 2000, 4000, 8000)):
    \"\"\"Octave ticks on a log-frequency x axis, labelled like an audiogram (250, 1k, ...).\"\"\"
    fig.xaxis.ticker = FixedTicker(ticks=list(ticks_hz))
    fig.xaxis.major_label_overrides = {t: hz_label(t) for t in ticks_hz}
"""),
    ("md", """
## Channels and their characteristic frequencies

Each CARFAC stage is tuned half an **ERB** below the one before it. The ERB (equivalent
rectangular bandwidth) measures how wide a human auditory filter is: about 25 Hz at low
frequencies and about 12% of the frequency above 1 kHz (Glasberg & Moore 1990). On the
*ERB-number* scale, equal distances are roughly equal distances along the cochlea, so the channels
are evenly spaced there (right), though not in Hz (left).
"""),
    ("code", """
cf_hz = designs.cf_hz(SR)                              # channel 0 = highest CF (the base)
n_ch = cf_hz.size
erb_number = 21.4 * np.log10(1 + 0.00437 * cf_hz)      # Glasberg & Moore (1990), in Cams
print(f"{n_ch} channels: CF {cf_hz[0]:.0f} Hz (channel 0) down to {cf_hz[-1]:.0f} Hz "
      f"(channel {n_ch - 1})")
print(f"spacing: {np.mean(-np.diff(erb_number)):.2f} ERB per channel on average")

channel = np.arange(n_ch)
fig_hz = figure(title="CF of each channel", y_axis_type="log", width=360, height=260,
                x_axis_label="channel", y_axis_label="CF (Hz)", tools="hover,reset")
fig_hz.scatter(channel, cf_hz, size=5)
fig_erb = figure(title="The same on the ERB-number scale", width=360, height=260,
                 x_axis_label="channel", y_axis_label="ERB number (Cam)", tools="hover,reset")
fig_erb.scatter(channel, erb_number, size=5, color="darkorange")
bokeh_setup.bokeh_model(gridplot([[fig_hz, fig_erb]], toolbar_location=None))
"""),
    ("md", """
## The filters: what each channel lets through

A click contains all frequencies, so the BM response of a channel to a click is its *impulse
response*, and the spectrum of that response is the channel's filter. We run CARFAC with its OHC
nonlinearity switched off (`linear=True`) to see the filters themselves. Look at the asymmetry:
a gentle slope below CF and a steep cut-off above it. The cascade makes this shape: every stage
above a channel's place has already removed the frequencies higher than its CF. The peak gain
differs too: it builds up along the cascade and is largest for mid CFs.
"""),
    ("code", """
click = audio.click_train(1.0, DUR_S, SR, level_db_spl=60)   # 1 click per second: one click at t = 0
bm_click = np.asarray(designs.cochleagram(click, SR, linear=True).bm)   # [time, channel]

n_fft = 4096                                                  # the first 256 ms of each response
freqs_hz = np.fft.rfftfreq(n_fft, 1 / SR)
spectrum_db = 20 * np.log10(np.abs(np.fft.rfft(bm_click[:n_fft], axis=0)) + 1e-12)
spectrum_db -= spectrum_db.max()

fig = figure(title="Filter of every 8th channel (linear CARFAC)", x_axis_type="log",
             frame_width=540, frame_height=280, x_range=(50, 8000), y_range=(-60, 3),
             x_axis_label="frequency (Hz)", y_axis_label="gain (dB re the largest)")
for colour, ch in zip(Category10_10, range(4, n_ch, 8)):
    fig.line(freqs_hz[1:], spectrum_db[1:, ch], color=colour, line_width=2,
             legend_label=f"ch {ch}: {cf_hz[ch]:.0f} Hz")
fig.legend.label_text_font_size = "8pt"
fig.add_layout(fig.legend[0], "right")                        # legend beside the plot
label_hz_axis(fig)
bokeh_setup.bokeh_model(fig)
"""),
    ("md", """
## The travelling wave

The same click response drawn as an image: time across, CF up, red and blue for the two
directions of BM motion (each channel scaled to its own peak). The wave starts at the base (high
CFs, top) and travels towards the apex, getting slower: low-CF channels respond later and ring
longer, because their filters are narrower in Hz.
"""),
    ("code", """
show_ms = 15.0
n_show = int(show_ms / 1000 * SR)
wave = bm_click[:n_show] / np.abs(bm_click[:n_show]).max(axis=0)   # each channel to its peak
mapper = LinearColorMapper(palette=interp_palette(RdBu11, 255)[::-1], low=-1, high=1)
fig = figure(title="BM motion after a click", width=720, height=300, x_range=(0, show_ms),
             y_range=(0, n_ch), x_axis_label="time (ms)", tools="box_zoom,reset")
fig.image(image=[wave.T[::-1]], x=0, y=0, dw=show_ms, dh=n_ch, color_mapper=mapper)  # low CF at bottom
fig.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
style_cf_axis(fig, cf_hz)
bokeh_setup.bokeh_model(fig)
"""),
    ("md", """
## From BM motion to neural activity

Here are 10 ms of a 1 kHz tone in the channel whose CF is nearest 1 kHz. The BM moves up and
down with the tone. The IHC responds mostly to one direction of motion (*half-wave
rectification*) and its output follows each cycle: auditory-nerve fibres fire at a preferred phase
of the tone (*phase locking*). This is the NAP, a stand-in for the firing rate of the auditory
nerve at each place.
"""),
    ("code", """
tone_1k = audio.tone(1000.0, DUR_S, SR, level_db_spl=60)
out = designs.cochleagram(tone_1k, SR)
ch_1k = int(np.argmin(np.abs(np.log(cf_hz / 1000.0))))
t_ms = np.arange(tone_1k.size) / SR * 1000
steady = (t_ms >= 500) & (t_ms < 510)                   # 10 ms, well after the onset

fig_bm = figure(title=f"BM, channel {ch_1k} (CF {cf_hz[ch_1k]:.0f} Hz)", width=720, height=170,
                y_axis_label="BM (model units)", tools="xpan,xwheel_zoom,reset")
fig_bm.line(t_ms[steady], np.asarray(out.bm)[steady, ch_1k], line_width=2)
fig_nap = figure(title="NAP of the same channel", width=720, height=170, x_range=fig_bm.x_range,
                 x_axis_label="time (ms)", y_axis_label="NAP (model units)",
                 tools="xpan,xwheel_zoom,reset")
fig_nap.line(t_ms[steady], np.asarray(out.nap)[steady, ch_1k], line_width=2, color="firebrick")
bokeh_setup.bokeh_model(gridplot([[fig_bm], [fig_nap]], toolbar_location="right"))
"""),
    ("md", """
## NAPs of tones, clicks, a vowel and speech

Each image is a **cochleagram**: the NAP with time across and CF up. All four share one colour
scale.

- **Tone:** one band of channels around 1 kHz responds (plus a short onset everywhere).
- **Clicks:** every click excites all channels; the high-CF ones answer first (the travelling
  wave) and the low-CF ones ring longest.
- **Vowel:** the harmonics of the voice are resolved in low-CF channels (steady bands), while
  high-CF channels see several harmonics at once and pulse at the voice pitch. The **formants**
  (resonances of the vocal tract) are the bright bands.
- **Speech:** formants move, voiced sounds pulse with the pitch, and noisy consonants such as
  /s/ excite the high-CF channels without pulsing.

Click a panel to move the time cursor; use the toolbar to zoom in time.
"""),
    ("code", """
speech, _ = audio.load_clip("slt_04")          # "These days a chicken leg is a rare dish."
start = int(0.25 * SR)
speech = speech[start:start + int(DUR_S * SR)]

sounds = {
    "tone 1 kHz, 60 dB SPL": tone_1k,
    "clicks 100/s, 60 dB peSPL": audio.click_train(100.0, DUR_S, SR, level_db_spl=60),
    "vowel /a/, f0 120 Hz": audio.vowel(120.0, (730, 1090, 2440), DUR_S, SR),
    "speech, 65 dB SPL": speech,
}
naps = {name: np.asarray(designs.cochleagram(x, SR).nap) for name, x in sounds.items()}
gallery = CochleagramView(cf_hz, SR, labels=tuple(sounds), ncols=2, height=150, width=320)
gallery.render(naps)
gallery.widget
"""),
    ("code", """
player = ABPlayer(names=tuple(sounds), gain_db=PLAYBACK_GAIN_DB)
player.set_signals({name: (x, SR) for name, x in sounds.items()})
player
"""),
    ("md", """
## Level dependence: the cochlea compresses

A healthy cochlea amplifies soft sounds by up to 40-50 dB and loud sounds hardly at all: the OHCs
undamp the BM less as the motion grows, and the AGC turns the undamping down further over a few
milliseconds. The result is **compression**: between about 30 and 90 dB SPL the BM response at CF
grows by much less than 1 dB per dB (Moore 2007, ch. 1).

Below, a 1 kHz tone is played at 0 to 100 dB SPL and we measure the BM response of the 1 kHz
channel. The orange curve is a model cochlea whose OHCs are all gone (`ohc_health=0`): no
amplification and no compression. The two curves meet at high levels. That is why a cochlear
hearing loss matters most for soft sounds, and why loud sounds can seem as loud to an impaired
listener as to a normal one (*loudness recruitment*, notebook 3).
"""),
    ("code", """
levels_db_spl = np.arange(0, 101, 10)
second_half = slice(int(0.5 * SR), None)               # after the AGC has settled


def bm_level_db(x, **ear):
    \"\"\"rms of the BM at the 1 kHz channel in dB (arbitrary reference).\"\"\"
    bm = np.asarray(designs.cochleagram(x, SR, **ear).bm)[second_half, ch_1k]
    return 20 * np.log10(np.sqrt(np.mean(bm ** 2)))


io_healthy = [bm_level_db(audio.tone(1000.0, DUR_S, SR, level_db_spl=L)) for L in levels_db_spl]
io_no_ohc = [bm_level_db(audio.tone(1000.0, DUR_S, SR, level_db_spl=L), ohc_health=0.0)
             for L in levels_db_spl]
for name, io in (("healthy", io_healthy), ("no OHCs", io_no_ohc)):
    slope = (io[8] - io[4]) / 40                            # from 40 to 80 dB SPL
    print(f"{name:8s}: slope {slope:.2f} dB/dB between 40 and 80 dB SPL")

fig = figure(title="BM input-output function at CF (1 kHz)", width=480, height=360,
             x_axis_label="tone level (dB SPL)",
             y_axis_label="BM response (dB, arbitrary reference)")
fig.line(levels_db_spl, io_healthy, line_width=2, legend_label="healthy")
fig.scatter(levels_db_spl, io_healthy, size=6)
fig.line(levels_db_spl, io_no_ohc, line_width=2, color="darkorange", legend_label="no OHCs")
fig.scatter(levels_db_spl, io_no_ohc, size=6, color="darkorange")
fig.line(levels_db_spl, levels_db_spl + io_no_ohc[0], line_dash="dotted", color="gray",
         legend_label="1 dB/dB")
fig.legend.location = "top_left"
bokeh_setup.bokeh_model(fig)
"""),
    ("md", """
### The NAP viewer

Choose a sound and its level. The colour scale is **fixed**, so you see the real change in
activity. Watch how little the picture changes between 50 and 90 dB SPL, a 10000-fold change in
sound intensity.
"""),
    ("code", """
viewer_sounds = {"tone 1 kHz": tone_1k, "vowel /a/": sounds["vowel /a/, f0 120 Hz"], "speech": speech}
sound_menu = W.Dropdown(options=list(viewer_sounds), value="speech", description="sound")
level_slider = W.IntSlider(value=60, min=20, max=100, step=10, description="level (dB SPL)",
                           continuous_update=False, style={"description_width": "initial"})
viewer = CochleagramView(cf_hz, SR, labels=("NAP",), height=220, width=560, value_range=(0.0, 3.0))
nap_summary = W.HTML()


def show_nap(change=None):
    x = audio.set_level(viewer_sounds[sound_menu.value], level_slider.value)
    nap = np.asarray(designs.cochleagram(x, SR).nap)
    viewer.render({"NAP": nap})
    nap_summary.value = f"mean NAP: <b>{nap.mean():.3f}</b> at {level_slider.value} dB SPL"


sound_menu.observe(show_nap, "value")
level_slider.observe(show_nap, "value")
show_nap()
W.VBox([W.HBox([sound_menu, level_slider]), nap_summary, viewer.widget])
"""),
    ("md", """
## What to remember

- CARFAC models the BM as a cascade of filters; channel 0 has the highest CF, and channels are
  half an ERB apart.
- The filters are asymmetric, with a steep high-frequency side, and low-CF channels respond later
  and longer (the travelling wave).
- The NAP follows the fine structure of low frequencies (phase locking) and the envelope of high
  ones.
- Healthy OHCs give up to ~50 dB of gain to soft sounds and compress the level range; without
  them the response is linear and weak.

## Exercises

1. **Place coding.** Change the tone in the gallery to 250 Hz and then to 4 kHz. Which channel
   responds most? Use `cf_hz` to find the channel whose CF is closest, and check it in the picture.
2. **Compression.** Measure the slope of the healthy input-output function between 30 and 90 dB
   SPL. Repeat with `ohc_health=0.5`. How much gain at 20 dB SPL is lost, and how much at 90 dB SPL?
3. **Resolved and unresolved.** Make click trains at 50/s and at 400/s. In which channels can you
   still see the individual clicks? Relate your answer to the filter bandwidths of the second
   picture.
4. **Suppression.** Play `audio.two_tone(1000.0, 1300.0, DUR_S, SR)` and compare the mean NAP of the
   1 kHz channel with the 1 kHz tone alone. Does adding a second tone always add activity?
"""),
    ("md", references("lyon2017", "gm1990", "moore2007")),
]
