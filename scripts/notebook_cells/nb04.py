"""Notebook 4: the Differentiable Auditory Loop: the loss, a short fine-tune, before and after."""
from notebook_cells.common import HOW_TO, references

NAME = "04_differentiable_auditory_loop"

CELLS = [
    ("md", """
# 4 · The Differentiable Auditory Loop

A hearing aid should make an impaired ear respond to sound the way a normal ear would. The
**Differentiable Auditory Loop (DAL)** turns that sentence into a training objective:

```
noisy speech x --> hearing aid (SEANet) --> y --> impaired CARFAC --> NAP, SAI --+
                                                                                  |-- loss
clean speech s ---------------------------------> normal CARFAC  --> NAP, SAI --+
```

The hearing aid is a neural network (SEANet, a 1-D convolutional U-Net working directly on the
waveform). The impaired CARFAC is the model ear fitted to the listener's audiogram (notebook 3),
and the normal CARFAC listens to the *clean* speech. The **loss** measures how different the two
neural activity patterns (NAPs) and stabilized auditory images (SAIs) are. Because CARFAC is
written in JAX, it is *differentiable*: we can compute how the loss changes with every weight of
the network, through the model cochlea, and follow that gradient downhill. The cochleas never
change; only the hearing aid learns.

The network starts as the **identity** (its output equals its input), so step 0 is "no hearing
aid", and every improvement is learned. In this notebook you will compute the loss by hand for a
few simple "hearing aids", run a short fine-tune (about a minute), and look and listen before and
after.
""" + HOW_TO),
    ("code", """
# BokehJS first (inline: pictures work offline and in Voila), then the science.
from dal_widgets.ui import bokeh_setup
bokeh_setup.load_bokeh()

import os
import pathlib

import ipywidgets as W
import jax
import numpy as np
import scipy.signal
from bokeh.models import FixedTicker
from bokeh.plotting import figure
from IPython.display import Markdown, display

from dal_widgets.aid import init_seanet, master_hearing_aid, nalr_gains_db
from dal_widgets.cochlea import designs
from dal_widgets.hearing import fit_cochlea, preset, simulate_hearing_loss
from dal_widgets.loop import SpeechSource, config_for, evaluation_clips, losses
from dal_widgets.loop import train as train_lib
from dal_widgets.loop.pretrained import load_pretrained
from dal_widgets.ui import ABPlayer, CochleagramView
from dal_widgets.ui.cochleagram_view import hz_label
from dal_widgets.ui.finetune_panel import FineTunePanel

# The "widget" preset: a small SEANet, 40 steps of 2 examples of 0.5 s (checkpoint at the end only).
cfg = config_for("widget").replace(checkpoint_every=0)
SR = cfg.data.sr
listener = preset(cfg.audiogram)         # the listener: Bisgaard N3, a moderate sloping loss
ear = fit_cochlea(listener, SR, style=cfg.style)
cf_hz = designs.cf_hz(SR)
PLAYBACK_GAIN_DB = 6.0                   # added to every sound alike (aided sounds are louder already)
# Where the trained aid is saved; notebook 5 looks for it there.
RUN_DIR = pathlib.Path(os.environ.get("DAL_RUNS_DIR", pathlib.Path.home() / "dal_runs")) / "notebook_widget"


def label_hz_axis(fig, ticks_hz=(125, 250, 500, 1000, 2000, 4000, 8000)):
    \"\"\"Octave ticks on a log-frequency x axis, labelled like an audiogram (250, 1k, ...).\"\"\"
    fig.xaxis.ticker = FixedTicker(ticks=list(ticks_hz))
    fig.xaxis.major_label_overrides = {t: hz_label(t) for t in ticks_hz}


print(f"listener {listener.name}, SEANet '{cfg.model}', {cfg.steps} steps of {cfg.batch_size} x "
      f"{cfg.data.clip_s} s, loss weights: NAP {cfg.loss.w_nap}, SAI {cfg.loss.w_sai}")
"""),
    ("md", """
## A training example

Training examples are short crops of the bundled sentences at 65 dB SPL, mixed with noise (babble
of other talkers, speech-shaped noise or white noise) at a random signal-to-noise ratio (SNR)
between -5 and +10 dB. The aid hears the noisy mixture; the target is what a normal ear makes of
the clean speech.
"""),
    ("code", """
batch = SpeechSource(cfg.data, "train").make_batch(0, cfg.batch_size)
noisy, clean = batch.noisy[0], batch.clean[0]
print(f"example 0: {noisy.size / SR:.1f} s at SNR {batch.snr_db[0]:.1f} dB")
example_player = ABPlayer(names=("clean speech", "noisy mixture"), gain_db=PLAYBACK_GAIN_DB)
example_player.set_signals({"clean speech": (clean, SR), "noisy mixture": (noisy, SR)})
example_player
"""),
    ("md", """
## The loss, by hand

The NAP term of the loss compares NAPs after a *log compression*, `log(1 + NAP / 0.1)`, so that
quiet parts count as much as loud ones, and takes the mean absolute difference (L1). Below it is
computed for a few simple "hearing aids" applied to the noisy example: none, 10 or 20 dB of plain
amplification, and the prescriptive NAL-R + WDRC aid of notebook 5. The last two rows cheat: they
give the impaired ear the *clean* speech, as a perfect noise remover would. Smaller is better.

Look at the numbers and the pictures. Making everything louder also makes the noise louder; and
even clean speech does not make the impaired NAP equal the normal one, because the impaired
cochlea has lost gain, compression and sharp tuning. The network has to learn a better
transformation than any of these.
"""),
    ("code", """
def nap(x, impaired=False):
    \"\"\"NAP [time, channel] of x through the normal ear or through the listener's impaired ear.\"\"\"
    knobs = dict(ohc_health=ear.ohc_health, ihc_gain=ear.ihc_gain) if impaired else {}
    return np.asarray(designs.cochleagram(x, SR, style=cfg.style, **knobs).nap)


def nap_loss(aided, clean):
    \"\"\"The NAP term of the DAL loss: impaired ear on `aided` vs normal ear on `clean`.\"\"\"
    target = losses.compress(nap(clean), cfg.loss)
    heard = losses.compress(nap(aided, impaired=True), cfg.loss)
    return float(losses.distance(heard, target, cfg.loss.kind))


candidates = {
    "no hearing aid": noisy,
    "+10 dB": noisy * 10 ** (10 / 20),
    "+20 dB": noisy * 10 ** (20 / 20),
    "NAL-R + WDRC": master_hearing_aid(noisy, SR, listener),
    "clean speech (perfect noise removal)": clean,
    "clean speech +10 dB": clean * 10 ** (10 / 20),
}
rows = ["| aid | NAP loss |", "|---|---:|"]
rows += [f"| {name} | {nap_loss(y, clean):.3f} |" for name, y in candidates.items()]
display(Markdown("\\n".join(rows)))

by_hand = CochleagramView(cf_hz, SR, labels=("target: normal ear, clean", "impaired ear, no aid",
                                              "impaired ear, +20 dB"), height=150, width=250)
by_hand.render({"target: normal ear, clean": nap(clean),
                "impaired ear, no aid": nap(noisy, impaired=True),
                "impaired ear, +20 dB": nap(candidates["+20 dB"], impaired=True)})
by_hand.widget
"""),
    ("md", """
## A short fine-tune

Now the real loop. The fine-tune panel runs `loop.train.train` in the background: at every step
it draws a new batch, computes the full DAL loss (NAP and SAI terms, plus a penalty if the output
gets louder than 85 dB SPL), its gradient through the impaired CARFAC, and takes one AdamW step.
The curve shows the loss of each step and its running mean. (For long runs on a GPU researchers
call `train_lib.train(cfg, workdir)` directly, or the `dal train` command.)

**The first step takes 15-30 s:** JAX compiles CARFAC, the SAI and their gradients into one
program. Later steps take a few tenths of a second each on a 2-core laptop. Each step uses
different examples, so the curve is noisy; what matters is the trend, and the held-out test after
it.
"""),
    ("code", """
def train_and_save(cfg, *, ear, on_progress, should_stop, init_params=None):
    \"\"\"The panel's training function: loop.train.train, keeping the result in RUN_DIR.

    A second run continues from the panel's current aid (init_params); the first starts at the
    identity.
    \"\"\"
    return train_lib.train(cfg, RUN_DIR, ear=ear, resume=False, on_progress=on_progress,
                           should_stop=should_stop, init_params=init_params)


panel = FineTunePanel(train_fn=train_and_save, base_config=cfg)
panel.ear = ear                          # the listener to fine-tune for
panel
"""),
    ("md", """
Press **Start fine-tune** in the panel, or run the next cell, which does the same and waits for
the end. You can change the settings first: more steps, another learning rate, other weights of
the NAP and SAI terms. (While a cell is running the kernel reads no button clicks, so the panel's
*Cancel* works only for runs started with its own button.)
"""),
    ("code", """
if not panel.running:
    panel.start()
panel.wait()
if panel.model is None:
    raise RuntimeError("the fine-tune did not finish; the panel says why")
aid = panel.model                        # a TrainedAid: params, model_config, steps_done, loss
print(aid.describe())
"""),
    ("md", """
## Before and after, on speech the aid never heard

Held-out sentences (recordings kept out of training), each mixed with noise at 0 and at 5 dB SNR.
*Before* is the network at step 0, which we check really is the identity. *After* is the
fine-tuned aid. If the package ships a pretrained aid for the same listener (the same small
SEANet, trained on a GPU for a few hundred steps of 64 examples with an extra spectral term in its
loss, then fine-tuned on a CPU), it gets a column too; do not expect it to win on every clip. We compare the NAP loss on
every test clip, then look at and listen to one.
"""),
    ("code", """
test_clips = evaluation_clips(cfg.data, snrs_db=(0.0, 5.0), n_clips=3, clip_s=cfg.data.clip_s)
start_params = init_seanet(jax.random.PRNGKey(cfg.seed), cfg.model_config)
pretrained = load_pretrained()           # (params, TrainConfig, steps) or None
if pretrained is not None and train_lib.listener_audiogram(pretrained[1]) != listener:
    pretrained = None                    # trained for another listener: not comparable here
header = "| clip | SNR (dB) | NAP loss before | after | output level change |"
rows = [header + (f" pretrained ({pretrained[2]} steps) |" if pretrained else ""),
        "|---:" * (6 if pretrained else 5) + "|"]
for i, (noisy_i, clean_i, snr_i, _) in enumerate(test_clips):
    before_i = train_lib.enhance(start_params, cfg.model_config, noisy_i)
    after_i = train_lib.enhance(aid.params, aid.model_config, noisy_i)
    level_db = 20 * np.log10(np.std(after_i) / np.std(noisy_i))
    row = (f"| {i} | {snr_i:.0f} | {nap_loss(before_i, clean_i):.4f} | "
           f"{nap_loss(after_i, clean_i):.4f} | {level_db:+.1f} dB |")
    if pretrained:
        aided_i = train_lib.enhance(pretrained[0], pretrained[1].model_config, noisy_i)
        row += f" {nap_loss(aided_i, clean_i):.4f} |"
    rows.append(row)
print(f"step 0 is the identity: max |output - input| = {np.max(np.abs(before_i - noisy_i)):.1e}")
display(Markdown("\\n".join(rows)))

test_noisy, test_clean, test_snr_db, _ = test_clips[0]       # the clip we look at and listen to
after = train_lib.enhance(aid.params, aid.model_config, test_noisy)

labels = ("normal ear, clean", "impaired, no aid", "impaired, DAL aid")
before_after = CochleagramView(cf_hz, SR, labels=labels, difference=("normal ear, clean", "impaired, DAL aid"),
                               ncols=2, height=150, width=300)
before_after.render({labels[0]: nap(test_clean), labels[1]: nap(test_noisy, impaired=True),
                     labels[2]: nap(after, impaired=True)})
before_after.widget
"""),
    ("md", """
Listen. The first three rows are what goes *into* the ear. The last two are simulations of what the
impaired listener hears without and with the aid (the listening simulator of notebook 3).
"""),
    ("code", """
rows = ("clean", "noisy (no aid)", "DAL aid output", "heard without aid (simulated)",
        "heard with DAL aid (simulated)")
after_player = ABPlayer(names=rows, gain_db=PLAYBACK_GAIN_DB)
after_player.set_signals({
    rows[0]: (test_clean, SR), rows[1]: (test_noisy, SR), rows[2]: (after, SR),
    rows[3]: (simulate_hearing_loss(test_noisy, SR, listener), SR),
    rows[4]: (simulate_hearing_loss(after, SR, listener), SR),
})
after_player
"""),
    ("md", """
### What did the aid learn?

The gain the aid applies in each third-octave band (output power over input power, measured on
all the test clips), next to the NAL-R prescription for the same listener. Do not expect them to
agree: the DAL is never told to restore audibility band by band, only to make the impaired NAP look
like the normal one, and a few dozen steps are only a beginning. Longer training also learns
level- and time-dependent processing that no fixed gain curve can describe.
"""),
    ("code", """
all_in = np.concatenate([clip[0] for clip in test_clips])   # every test clip, in and out
all_out = train_lib.enhance(aid.params, aid.model_config, all_in)
freqs_hz, power_in = scipy.signal.welch(all_in, SR, nperseg=1024)
_, power_out = scipy.signal.welch(all_out, SR, nperseg=1024)
centres_hz = 1000.0 * 2.0 ** (np.arange(-9, 9) / 3)                  # third-octave bands, 125 Hz-6.3 kHz
gain_db = []
for centre in centres_hz:
    in_band = (freqs_hz >= centre / 2 ** (1 / 6)) & (freqs_hz < centre * 2 ** (1 / 6))
    gain_db.append(10 * np.log10(power_out[in_band].sum() / power_in[in_band].sum()))
fig = figure(title="Gain of the DAL aid vs the NAL-R prescription", x_axis_type="log", width=560,
             height=300, x_axis_label="frequency (Hz)", y_axis_label="gain (dB)")
fig.line(centres_hz, gain_db, line_width=2, legend_label="DAL aid (measured, third-octave bands)")
fig.scatter(centres_hz, gain_db, size=6)
fig.line(centres_hz, nalr_gains_db(listener, centres_hz), line_width=2, color="darkorange",
         line_dash="dashed", legend_label="NAL-R prescription")
fig.legend.location = "top_left"
label_hz_axis(fig)
bokeh_setup.bokeh_model(fig)
"""),
    ("md", """
## What to remember

- The DAL trains a hearing aid so that an impaired model ear hearing the aided sound responds like
  a normal model ear hearing clean speech; the gradient flows through the model cochlea.
- The network starts as the identity, so any benefit is learned, and a handful of steps already
  change the output level and spectrum.
- Simple amplification brings the NAP closer only so far: the impaired cochlea has lost
  compression and tuning, which is what a learned, nonlinear aid can try to compensate.

## Exercises

1. **Train longer.** Set the steps slider to 100 (about a minute) and press *Start fine-tune*
   again: it continues from the current aid. Does the held-out NAP loss keep falling? Does the
   sound change? Compare with the pretrained column.
2. **What the loss looks at.** Train with only the NAP term, `cfg.replace(loss=LossConfig(w_sai=0.0))`
   (`from dal_widgets.loop import LossConfig`), or only the SAI term (`w_nap=0.0`). How do the loss
   values and the learned gain differ?
3. **Another listener.** Use `cfg.replace(audiogram="S2")` (and refit `ear`). Where does the
   learned gain differ from the N3 aid, and from the NAL-R prescription for S2?
4. **Safety.** Set `w_level=0.0` in the loss and train. What happens to the output level? Why must
   a real hearing aid never be allowed to do this?
"""),
    ("md", references("dal", "seanet", "lyon2017", "nalr1986")),
]
