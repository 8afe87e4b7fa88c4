"""The DAL workbench: a sound, a listener, what their cochleas do, what aids do, and a fine-tune.

One `WorkbenchState` holds the inputs (sound, audiogram, fine-tuned model) and the fitted ear.
Changes flow one way: audiogram -> fitted ear (fast open-loop fit at once, refined fit in the
background afterwards) -> NAPs / SAI -> views; refined fit -> fine-tune -> model -> aided
outputs -> player, metrics, views. All heavy work runs in one BackgroundRunner thread in stages,
most urgent first (the impaired NAP), each stage drawn as soon as it is ready; a newer request
makes the running job stop at its next stage boundary. Results are memoised by what they depend
on, so e.g. a new model recomputes only the DAL rows.
"""
import dataclasses
import html
import itertools
import math
import threading

import ipywidgets as widgets
import numpy as np
import traitlets
from traitlets import Bool, HasTraits, Instance

from dal_widgets.errors import AudioError, DalError, ParameterError
from dal_widgets.hearing import fit
from dal_widgets.hearing.audiogram import Audiogram
from dal_widgets.ui import compute as compute_module
from dal_widgets.ui.ab_player import ABPlayer
from dal_widgets.ui.audiogram_editor import AudiogramEditor
from dal_widgets.ui.busy import BackgroundRunner, BusyIndicator
from dal_widgets.ui.cochleagram_view import CochleagramView
from dal_widgets.ui.finetune_panel import FineTunePanel, TrainedAid
from dal_widgets.ui.metrics_table import MetricsTable
from dal_widgets.ui.sai_view import SAIView

NORMAL, UNAIDED, NALR, DAL = "normal", "impaired (unaided)", "NAL-R", "DAL"  # NAP panel names
AIDS = (NALR, DAL)
PANEL_TITLES = {NORMAL: "normal ear \u00b7 clean speech", UNAIDED: "impaired ear \u00b7 unaided",
                NALR: "impaired ear \u00b7 NAL-R + WDRC aid", DAL: "impaired ear \u00b7 DAL aid"}
HEARD = {UNAIDED: "unaided (as heard)", NALR: "NAL-R (as heard)", DAL: "DAL (as heard)"}  # player rows
PLAYBACK_GAIN_DB = 10.0  # 65 dB SPL speech is rms 0.018 digital: lift all rows alike to hear them
DEFAULT_SNR_DB = 5.0  # inside the DAL training range (-5..10 dB)
SNR_RANGE_DB = (-10.0, 20.0)
NOISE_SEED = 1  # one fixed noise sample: moving the SNR slider changes only its level
QUIET_SNR_DB = 100.0  # evaluation label of a clip without noise (the table shows per-system means)
MIN_SOUND_S = 0.1  # shorter sounds make no SAI frame (25 ms hop) worth showing
UPLOAD_MAX_BYTES = 4_000_000  # default upload limit: 10 s of 48 kHz stereo 16-bit WAV is 1.9 MB
UPLOAD_MAX_S = 10.0  # default longest upload, s (CARFAC runs ~20x real time on 2 CPU cores)
# Quietest upload taken, dB re digital full scale (rms 1), DC removed: 16-bit silence is about
# -101 dB FS and a quiet room through a typical sound card about -70 dB FS; quieter files would be
# raised by 100 dB or more to reach 65 dB SPL, so noise and rounding would be what is heard.
MIN_UPLOAD_DBFS = -70.0
# NAP panel frames, px: a 2 x 2 grid beside the SAI, else one row (normal, impaired, difference)
# that fits the apps' 1260 px column (ui.app.APP_CSS) with its axes, two colour bars and toolbar.
GRID_PANEL_SIZE = (250, 125)  # (width, height)
ROW_PANEL_SIZE = (270, 170)
NOISE_BUTTON_WIDTH = "auto"  # each masker button as wide as its label: 100 px cut "speech noise"
SECTION_CSS = "margin:14px 0 4px 0;padding-bottom:2px;border-bottom:2px solid #1f77b4;color:#1f3b5b"


def section(title: str) -> widgets.HTML:
  """A section heading."""
  return widgets.HTML(f'<div style="{SECTION_CSS};font-size:15px;font-weight:600">'
                      f"{html.escape(title)}</div>")


@dataclasses.dataclass(frozen=True, eq=False)
class Sound:
  """A listening situation (compared by `key`, not by samples).

  Attributes:
    name: Label ("slt_04", "upload: me.wav").
    clean: Speech at 65 dB SPL, float32 [n_samp].
    noisy: Speech plus noise (the clean speech itself in quiet), float32 [n_samp].
    sr: Sample rate, Hz.
    noise_kind: One of compute.NOISE_KINDS.
    snr_db: Speech-to-noise ratio, dB (inf in quiet).
    key: Unique token of this sound (memo key).
    clean_key: Token of `clean` (memo key): kept while a new masker or SNR leaves it as it was.
  """
  name: str
  clean: np.ndarray
  noisy: np.ndarray
  sr: int
  noise_kind: str
  snr_db: float
  key: int
  clean_key: int


def _size_text(n_bytes: int) -> str:
  """4 MB, 400 kB, 12.6 MB (three significant digits)."""
  return f"{n_bytes / 1e6:.3g} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.3g} kB"


def _other_listener(model, audiogram) -> str | None:
  """'trained for N3' when `model` (a TrainedAid) was trained for another audiogram, else None."""
  trained_for = getattr(model, "audiogram", None)
  if trained_for is None or audiogram is None or audiogram.agrees_with(trained_for):
    return None
  return f"trained for {trained_for.name or 'another audiogram'}"


class SoundPicker(widgets.VBox):
  """Bundled clip or uploaded WAV, plus a masker and an SNR; emits `sound` on every change.

  Attributes:
    clip, upload, noise_kind, snr, message: the widgets.
  """

  sound = Instance(Sound, allow_none=True, help="The current sound (read it, observe it).")

  def __init__(self, compute=compute_module, *, sr: int = compute_module.SR, clip: str | None = None,
               noise: str = "babble", upload_max_bytes: int = UPLOAD_MAX_BYTES,
               upload_max_s: float = UPLOAD_MAX_S, **kwargs):
    self.compute, self.sr = compute, int(sr)
    self.upload_max_bytes, self.upload_max_s = int(upload_max_bytes), float(upload_max_s)
    self._keys = itertools.count(1)
    self._clips = {info.name: info for info in compute.clips()}
    self._samples = {}  # clip name -> samples (loaded on first use; babble needs the others too)
    self._upload = None  # (label, samples) of the last accepted upload
    options = [(f"{info.name} \u00b7 {info.voice}", info.name) for info in self._clips.values()]
    self.clip = widgets.Dropdown(options=options, value=clip or options[0][1], description="clip",
                                 layout=widgets.Layout(width="310px"))
    self.upload = widgets.FileUpload(accept=".wav", multiple=False, description="upload WAV",
                                     layout=widgets.Layout(width="140px"))
    labels = {"speech-shaped": "speech noise"}  # shorter: the three buttons fit the column
    self.noise_kind = widgets.ToggleButtons(
        options=[(labels.get(k, k), k) for k in compute.NOISE_KINDS], value=noise,
        style=widgets.ToggleButtonsStyle(button_width=NOISE_BUTTON_WIDTH))
    self.snr = widgets.FloatSlider(value=DEFAULT_SNR_DB, min=SNR_RANGE_DB[0], max=SNR_RANGE_DB[1],
                                   step=1.0, description="SNR (dB)", continuous_update=False,
                                   readout_format=".0f", layout=widgets.Layout(width="310px"))
    self.text = widgets.HTML()
    self.message = widgets.HTML()
    self.message.add_class("dal-sound-message")
    limits = widgets.HTML(f'<div style="font-size:11px;line-height:1.3;color:#555">up to '
                          f"{_size_text(self.upload_max_bytes)}, {self.upload_max_s:g} s; "
                          "speech set to 65 dB SPL</div>", layout=widgets.Layout(width="180px"))
    for w, name in ((self.clip, "value"), (self.noise_kind, "value"), (self.snr, "value")):
      w.observe(self._on_setting_changed, name)
    self.upload.observe(self._on_upload_value_changed, "value")
    super().__init__([self.clip, self.text, widgets.HBox([self.upload, limits]), self.noise_kind,
                      self.snr, self.message], layout=widgets.Layout(width="340px"), **kwargs)
    self.add_class("dal-sound-picker")  # a handle for browser tests and app CSS
    self._refresh()

  def load_upload(self, data: bytes, filename: str) -> bool:
    """Checks, decodes and resamples an uploaded WAV; problems go to `message`, never raise.

    Returns:
      True if the sound was accepted (and emitted); False if rejected (the sound is kept).
    """
    try:
      if len(data) > self.upload_max_bytes:
        raise AudioError(f"{filename}: {_size_text(len(data))} is over the upload limit of "
                         f"{_size_text(self.upload_max_bytes)}")
      if not filename.lower().endswith(".wav") or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{filename}: expected a WAV file (RIFF/WAVE header), got something else")
      # silence and peaks: handled right here (decode does not warn of them)
      x, file_sr, channels = self.compute.decode(data, max_seconds=self.upload_max_s, sr=self.sr,
                                                 name=filename)
      mixed = f"its {channels} channels mixed to mono" if channels > 1 else ""
      resampled = f"resampled from {file_sr / 1000:g} kHz" if file_sr != self.sr else ""
      note = "".join(f", {part}" for part in (mixed, resampled) if part)
      if x.shape[0] < MIN_SOUND_S * self.sr:
        raise AudioError(f"{filename}: {x.shape[0] / self.sr:.3g} s is too short; expected at "
                         f"least {MIN_SOUND_S:g} s")  # 3 digits: 0.0999 s, not 0.10 s
      once = f" once {mixed}" if mixed else ""  # opposite channels cancel in the mix
      if not np.any(x):
        raise AudioError(f"{filename}: the file is digital silence{once}")
      level_dbfs = 20 * math.log10(max(float(np.std(x)), 1e-30))  # rms without its DC offset
      if level_dbfs < MIN_UPLOAD_DBFS:
        raise AudioError(f"{filename}: the recording is too quiet ({level_dbfs:.0f} dB FS rms "
                         f"without DC{once}; expected at least "
                         f"{MIN_UPLOAD_DBFS:.0f} dB FS): setting it to 65 dB SPL would mostly "
                         "amplify noise or rounding")
    except (DalError, ValueError) as err:
      self._show(f"Could not use the upload: {err}", error=True)
      return False
    label = f"\u2b06 {filename}"
    # A recording's DC offset is no sound, yet the speech level and the SNR (rms) would count it.
    self._upload = (label, np.asarray(x - np.mean(x, dtype=np.float64), np.float32))
    options = [o for o in self.clip.options if not o[0].startswith("\u2b06")] + [(label, label)]
    again = self.clip.value == label  # a new file of the same name: no value change to emit
    with self.hold_trait_notifications():
      self.clip.options = options
      self.clip.value = label  # emits through _on_setting_changed
    if again:
      self._refresh()
    self._show(f"Loaded {filename}: {x.shape[0] / self.sr:.2f} s{note}.")
    return True

  def _speech(self, name):
    if self._upload is not None and name == self._upload[0]:
      return self._upload[1]
    if name not in self._samples:
      self._samples[name] = self.compute.load_clip(name, self.sr)
    return self._samples[name]

  def _refresh(self):
    """Builds the sound of the current settings and emits it (errors go to `message`, which
    is cleared first: a note on an earlier upload is not about this sound)."""
    self.message.value = ""
    name, kind = self.clip.value, self.noise_kind.value
    info = self._clips.get(name)
    self.text.value = (f'<div style="font-size:12px;color:#555;width:310px">\u201c'
                       f"{html.escape(info.text)}\u201d</div>" if info else "")
    self.snr.disabled = kind == "quiet"
    try:
      speech = self._speech(name)
      if kind == "quiet":
        clean = self.compute.at_speech_level(speech)
        noisy, snr_db = clean, math.inf
      else:
        talkers = [self._speech(n) for n in self._clips if n != name]
        masker = self.compute.noise(kind, speech.shape[0], self.sr, talkers=talkers, seed=NOISE_SEED)
        noisy, clean = self.compute.mix(speech, masker, float(self.snr.value))
        snr_db = float(self.snr.value)
    except (DalError, ValueError) as err:
      self._show(f"Could not make the sound: {err}", error=True)
      return
    last = self.sound
    same_clean = last is not None and np.array_equal(last.clean, clean)
    self.sound = Sound(name=name, clean=clean, noisy=noisy, sr=self.sr, noise_kind=kind,
                       snr_db=snr_db, key=next(self._keys),
                       clean_key=last.clean_key if same_clean else next(self._keys))

  def _show(self, text, error=False):
    colour = "#c0392b" if error else "#2e7d32"
    self.message.value = f'<span style="color:{colour};font-size:12px">{html.escape(text)}</span>'

  def _on_setting_changed(self, change):
    self._refresh()

  def _on_upload_value_changed(self, change):
    if change["new"]:
      item = change["new"][0]
      self.load_upload(bytes(item["content"]), item["name"])
      self.upload.value = ()  # choosing the same file again loads it again


class WorkbenchState(HasTraits):
  """Inputs and the fitted ear of a Workbench (no display code)."""

  sound = Instance(Sound, allow_none=True, help="The listening situation.")
  audiogram = Instance(Audiogram, allow_none=True, help="The listener's audiogram.")
  ear = traitlets.Any(None, allow_none=True, help="ImpairedEar fitted to `audiogram`.")
  ear_refined = Bool(False, help="True once `ear` is the refined (closed-loop) fit.")
  model = Instance(TrainedAid, allow_none=True, help="The fine-tuned DAL aid, if any.")


class Workbench(widgets.VBox):
  """Sound, listener, NAP panels (normal / unaided / aided), SAI, A/B player, fine-tune, metrics.

  Attributes:
    state: the WorkbenchState.
    sound_picker, editor, busy, fit_status, cochleagram, difference, readout: the parts shown
      always; sai_view, sai_source, player, finetune, metrics: optional parts (None when off).
  """

  def __init__(self, *, compute=compute_module, aids=AIDS, sai: bool = True, finetune: bool = True,
               metrics: bool = True, refine: bool = True, clip: str | None = None,
               noise: str = "babble", preset: str | None = None,
               finetune_options: dict | None = None,
               upload_max_bytes: int = UPLOAD_MAX_BYTES, upload_max_s: float = UPLOAD_MAX_S,
               **kwargs):
    """Builds the parts and starts the first computation in the background.

    Args:
      compute: Object with the functions of dal_widgets.ui.compute (tests pass fast fakes).
      aids: Aided panels to show, a subset of AIDS in order ("NAL-R", "DAL").
      sai: Show the SAI of a chosen panel, linked to the NAP time cursor.
      finetune: Show the fine-tune panel (needs "DAL" in aids).
      metrics: Show the evaluation table of the systems shown.
      refine: Refine the listener fit in the background after each audiogram change.
      clip: Bundled clip to start with (default the first).
      noise: Masker to start with, one of compute.NOISE_KINDS.
      preset: Audiogram preset to start with (default normal hearing).
      finetune_options: Keyword arguments of FineTunePanel (train_fn, max_steps, ...).
      upload_max_bytes, upload_max_s: Limits of uploaded WAV files.
    """
    aids = tuple(aids)
    if any(a not in AIDS for a in aids) or len(set(aids)) != len(aids):
      raise ParameterError(f"aids: expected distinct names among {AIDS}, got {aids!r}")
    self.compute, self.aids, self.sr = compute, aids, int(compute.SR)
    self.labels = (NORMAL, UNAIDED) + aids
    self.state = WorkbenchState()
    self._lock = threading.Lock()  # generation, memo and (ear, ear_refined) pairs
    self._generation = 0
    self._memo = {}  # (what, depends-on...) -> result of the last completed and the running job
    self._shown, self._shown_sound, self._sai_key, self._sai_sound = {}, None, None, None
    cf_hz = compute.cf_hz(self.sr)
    self.sound_picker = SoundPicker(compute, sr=self.sr, clip=clip, noise=noise,
                                    upload_max_bytes=upload_max_bytes, upload_max_s=upload_max_s)
    self.editor = AudiogramEditor()
    self.editor.add_class("dal-audiogram-editor")  # a handle for browser tests and app CSS
    if preset is not None:
      self.editor.apply_preset(preset)
    self.busy = BusyIndicator()
    self.fit_status = widgets.HTML(layout=widgets.Layout(margin="0 24px 0 0"))
    beside_sai = sai  # two columns of panels with the SAI to their right, else one row
    width, height = GRID_PANEL_SIZE if beside_sai else ROW_PANEL_SIZE
    self.cochleagram = CochleagramView(cf_hz, self.sr, self.labels, difference=(NORMAL, UNAIDED),
                                       height=height, width=width,
                                       ncols=2 if beside_sai else len(self.labels) + 1)
    for label, fig in self.cochleagram.figures.items():
      fig.title.text = PANEL_TITLES.get(label, f"difference: {UNAIDED} \u2212 {NORMAL}")
    self.difference = widgets.Dropdown(
        options=["off"] + [f"{label} \u2212 {NORMAL}" for label in self.labels[1:]],
        value="off" if beside_sai else f"{UNAIDED} \u2212 {NORMAL}", description="difference",
        layout=widgets.Layout(width="330px"))
    self.readout = widgets.HTML()
    self.readout.add_class("dal-nap-readout")
    self.sai_view = self.sai_source = None
    if sai:
      params = compute.sai_params(self.sr, len(cf_hz))
      hop_s = params.input_segment_width / self.sr  # frame i has seen (i + 1) hops of NAP
      self.sai_view = SAIView(cf_hz, compute.sai_lags_ms(params, self.sr),
                              hop_s=hop_s, offset_s=hop_s, height=250, width=320)
      self.sai_view.slider.layout.width = "200px"  # play, slider and time fit the column
      self.sai_source = widgets.Dropdown(options=self.labels, value=UNAIDED, description="SAI of",
                                         layout=widgets.Layout(width="330px"))
      traitlets.link((self.cochleagram, "cursor_s"), (self.sai_view, "cursor_s"))
      self.sai_source.observe(self._on_view_setting_changed, "value")
    self.player = ABPlayer(("clean", "noisy") + tuple(HEARD[l] for l in (UNAIDED,) + aids),
                           gain_db=PLAYBACK_GAIN_DB)
    self.finetune = None
    if finetune and DAL in aids:
      self.finetune = FineTunePanel(**(finetune_options or {}))
      self.finetune.observe(self._on_finetune_model_changed, "model")
      self.state.model = self.finetune.model  # e.g. the bundled pretrained aid
    self.metrics = MetricsTable() if metrics else None
    self._runner = BackgroundRunner(self._pipeline, busy=self.busy)
    self._refiner = BackgroundRunner(self._refine, self._on_refined,
                                     on_error=self._on_refine_error) if refine else None
    self._refine_failed = False  # for the current audiogram: the fast fit is then the listener
    self._refining = None  # the audiogram of the refined fit running (or last run)
    if self.finetune is not None:
      self.state.observe(self._offer_ear, ["ear", "ear_refined"])
      self._offer_ear()
    self.difference.observe(self._on_view_setting_changed, "value")
    self.sound_picker.observe(self._on_sound_changed, "sound")
    self.editor.observe(self._on_editor_audiogram_changed, "audiogram")
    super().__init__(self._layout(), **kwargs)
    self.add_class("dal-workbench")
    self._refresh()
    self.state.observe(self._on_input_changed, ["sound", "audiogram", "model"])

  def _layout(self):
    parts = [section("Sound and listener"),
             widgets.HBox([self.sound_picker, self.editor],
                           layout=widgets.Layout(align_items="flex-start")),
             widgets.HBox([self.fit_status, self.busy])]
    naps = widgets.VBox([self.difference, self.readout, self.cochleagram.widget],
                        layout=widgets.Layout(margin="0 36px 0 0"))  # room for the grid's toolbar
    if self.sai_view is not None:
      sai = widgets.VBox([self.sai_source, self.sai_view.widget])
      parts += [section("Neural activity patterns (NAPs) and the stabilized auditory image (SAI)"),
                widgets.HBox([naps, sai])]
    else:
      parts += [section("Neural activity patterns (NAPs): what the auditory nerve sends"), naps]
    parts += [section("Listen"),
              widgets.HTML("<small>Rows after <i>noisy</i> play the sound as this impaired listener "
                           "hears it (simulated threshold elevation, recruitment and smearing)."
                           "</small>"),
              self.player]
    if self.finetune is not None:
      parts += [section("Fine-tune the DAL hearing aid for this listener"), self.finetune]
    if self.metrics is not None:
      parts += [section("Metrics for this clip and listener"), self.metrics]
    return parts

  def _refresh(self):
    """State from the widgets, then one background computation."""
    with self.state.hold_trait_notifications():
      self.state.sound = self.sound_picker.sound
      self.state.audiogram = self.editor.audiogram
    self.request()

  def request(self) -> None:
    """Recomputes (in the background) whatever the current state needs."""
    with self._lock:
      self._generation += 1
      generation = self._generation
    self._runner.request(generation)

  def wait(self, timeout: float | None = None) -> bool:
    """Blocks until the background work (and a pending refined fit) is done; False on timeout."""
    done = self._runner.wait(timeout)
    if self._refiner is not None:
      done = self._refiner.wait(timeout) and self._runner.wait(timeout) and done
    return done

  # -- the background pipeline ---------------------------------------------------------------

  def _stale(self, generation):
    return generation != self._generation

  def _memoised(self, used, key, fn):
    used.add(key)
    with self._lock:
      if key in self._memo:
        return self._memo[key]
    value = fn()
    with self._lock:
      self._memo[key] = value
    return value

  def _current_ear(self, audiogram):
    with self._lock:
      ear, refined = self.state.ear, self.state.ear_refined
    if ear is not None and getattr(ear, "audiogram", None) == audiogram:
      return ear, refined
    ear = self.compute.fit_ear(audiogram, self.sr, refine=False)
    with self._lock:  # keep it while it fits the audiogram (a refined fit may have come meanwhile)
      current = self.state.ear
      if self.state.audiogram == audiogram and getattr(current, "audiogram", None) != audiogram:
        with self.state.hold_trait_notifications():
          self.state.ear, self.state.ear_refined = ear, False
    return ear, False

  def _pipeline(self, generation):
    sound, audiogram, model = self.state.sound, self.state.audiogram, self.state.model
    if sound is None or audiogram is None:
      return
    ear, refined = self._current_ear(audiogram)
    self._show_fit(ear, refined)
    try:
      self._stages(generation, sound, audiogram, model, ear, refined)
    except Exception:
      if not self._stale(generation):
        self._clear_later_results()
      raise  # the busy indicator shows it
    finally:  # the refined fit is wanted even when a later stage fails
      if self._refiner is not None and not refined and not self._stale(generation):
        self._refiner.request(audiogram)

  def _clear_later_results(self):
    """After a stage before the metrics failed: the sounds and metrics still shown were made for
    earlier settings."""
    self.player.set_signals({})
    if self.metrics is not None:
      self.metrics.html.value = ""
      self.metrics.show_message("not computed: an earlier stage failed (see the message above)",
                                error=True)

  def _stages(self, generation, sound, audiogram, model, ear, refined):
    """The stages of `_pipeline` for a fitted `ear`, most urgent first."""
    c, sr = self.compute, self.sr
    used = set()
    memo = lambda key, fn: self._memoised(used, key, fn)
    ear_key = (audiogram, refined)
    self.busy.message = "NAPs\u2026"
    keys = {NORMAL: ("nap", "clean", sound.clean_key),
            UNAIDED: ("nap", sound.key, UNAIDED, ear_key)}
    naps = {NORMAL: memo(keys[NORMAL], lambda: c.nap(sound.clean, sr)),
            UNAIDED: memo(keys[UNAIDED], lambda: c.nap(sound.noisy, sr, ear))}
    self._draw(sound, naps)  # the urgent part: the impaired NAP of the new audiogram
    if self._stale(generation):
      return
    outputs, out_keys = {UNAIDED: sound.noisy}, {UNAIDED: ("noisy", sound.key)}
    if NALR in self.aids:
      out_keys[NALR] = ("nalr", sound.key, audiogram)
      outputs[NALR] = memo(out_keys[NALR], lambda: c.nalr(sound.noisy, sr, audiogram))
    if DAL in self.aids and model is not None:
      out_keys[DAL] = ("dal", sound.key, model)
      outputs[DAL] = memo(out_keys[DAL], lambda: c.dal(model, sound.noisy))
    for label in self.aids:
      if label in outputs:
        keys[label] = ("nap", out_keys[label], ear_key)
        naps[label] = memo(keys[label], lambda: c.nap(outputs[label], sr, ear))
    other = _other_listener(model, audiogram) if DAL in outputs else None
    if DAL in self.aids:
      self.cochleagram.figures[DAL].title.text = PANEL_TITLES[DAL] + (f" ({other})" if other else "")
    self._draw(sound, naps, complete=True)
    if self._stale(generation):
      return
    if self.sai_view is not None:
      self.busy.message = "SAI\u2026"
      self._draw_sai(naps, keys, memo, sound.clean_key)
      if self._stale(generation):
        return
    self.busy.message = "listening\u2026"
    heard = {HEARD[label]: memo(("heard", out_keys[label], audiogram),
                                lambda label=label: c.heard(outputs[label], sr, audiogram))
             for label in outputs}
    self.player.set_signals({"clean": (sound.clean, sr), "noisy": (sound.noisy, sr),
                             **{name: (y, sr) for name, y in heard.items()}})
    if DAL in self.aids and DAL not in outputs:
      self.player.warnings[HEARD[DAL]].value = '<span style="color:#999">(fine-tune first)</span>'
    elif other:
      self.player.warnings[HEARD[DAL]].value += f'<span style="color:#b26a00"> {other}</span>'
    if self.metrics is not None and not self._stale(generation):
      self.busy.message = "metrics\u2026"
      self.metrics.show_message("computing the metrics\u2026")
      snr_db = sound.snr_db if math.isfinite(sound.snr_db) else QUIET_SNR_DB
      try:
        table = memo(("metrics", keys[UNAIDED], tuple(keys.get(a) for a in self.aids)),
                     lambda: c.evaluation(sound.noisy, sound.clean, snr_db, sr, ear, outputs))
      except Exception as err:  # noqa: BLE001 - the last stage: its own message says what failed
        self.metrics.html.value = ""  # the last table was of another sound or listener
        self.metrics.show_message(f"no metrics for this sound: {err}", error=True)
      else:
        self.metrics.render(table)
        if other:
          self.metrics.show_message(f"The DAL row is an aid {other}; fine-tune it for this one.")
    with self._lock:
      if not self._stale(generation):
        self._memo = {k: v for k, v in self._memo.items() if k in used}

  def _draw(self, sound, naps, complete=False):
    """Shows NAPs; panels not recomputed yet keep their previous image of the same sound."""
    if self._shown_sound != sound.key:
      self._shown, self._shown_sound = {}, sound.key
    self._shown = {**self._shown, **naps} if not complete else dict(naps)
    choice = self.difference.value
    diff_fig = self.cochleagram.figures["difference"]
    diff_fig.visible = choice != "off"
    self.cochleagram.difference = None  # hidden: not computed, not sent
    if choice != "off":
      other = choice.split(" \u2212 ")[0]
      self.cochleagram.difference = (NORMAL, other)
      diff_fig.title.text = f"{other} \u2212 {NORMAL} (red: more)"
    self.cochleagram.render(self._shown)
    normal = float(np.mean(self._shown[NORMAL])) or 1.0
    parts = [f"{html.escape(label)} <b>{round(100 * float(np.mean(nap)) / normal)} %</b>"  # no -0
             for label, nap in self._shown.items() if label != NORMAL]
    joined = " \u00b7 ".join(parts)
    self.readout.value = ('<span style="font-size:13px">mean NAP activity re normal ear on clean '
                          f"speech: {joined}</span>")

  def _draw_sai(self, naps, keys, memo, speech_key):
    label = self.sai_source.value
    if label not in naps:
      self.sai_view.clear()  # not the image of another panel under this title
      self._sai_key = None
      self.sai_view.figure.title.text = f"SAI \u00b7 {label}: fine-tune first"
      return
    params = self.compute.sai_params(self.sr, naps[label].shape[1])
    frames = memo(("sai",) + keys[label], lambda: self.compute.sai_frames(naps[label], params))
    if self._sai_key != keys[label]:
      self._sai_key = keys[label]
      self.sai_view.render(frames)
      # New speech: frame 0 has seen 25 ms only, so start mid-sound. A new masker or SNR keeps the
      # time chosen (and so does the SAI of another panel drawn after one).
      if self._sai_sound != speech_key:
        self._sai_sound = speech_key
        self.cochleagram.cursor_s = round(0.5 * naps[label].shape[0] / self.sr, 3)
    self.sai_view.figure.title.text = f"SAI \u00b7 {PANEL_TITLES.get(label, label)}"

  def _show_fit(self, ear, refined):
    """The fit's kind and quality, and which audiogram points the model cannot take as they are
    (the fitted `ear` lists the frequencies it measured in `freqs_hz`)."""
    if refined:
      text = "listener fit: refined by simulated audiometry"
      if len(ear.residual_db):
        text += f" (worst residual {float(np.max(np.abs(ear.residual_db))):.1f} dB)"
    elif self._refiner is not None:
      text = "listener fit: fast open-loop fit; refining in the background\u2026"
    else:
      text = "listener fit: fast open-loop fit"
    hz = lambda freqs: ", ".join(f"{f:g}" for f in freqs)
    skipped = fit.unfitted_freqs_hz(ear.audiogram, ear.freqs_hz)
    if skipped:
      text += (f". {hz(skipped)} Hz not fitted: above the tones a {self.sr:g} Hz model can "
               f"test; the model keeps the {ear.freqs_hz[-1]:g} Hz threshold there")
    better = fit.better_than_normal_freqs_hz(ear.audiogram, ear.freqs_hz)
    if better:
      text += (f". Thresholds better than 0 dB HL at {hz(better)} Hz are fitted as 0 dB HL: "
               "the model's healthy ear is its best")
    self.fit_status.value = f'<span style="font-size:12px;color:#555">{html.escape(text)}</span>'

  def _refine(self, audiogram):
    self._refining = audiogram  # one refine at a time (its runner): _on_refine_error reads it
    return audiogram, self.compute.fit_ear(audiogram, self.sr, refine=True)

  def _on_refined(self, result):
    audiogram, ear = result
    with self._lock:
      if audiogram != self.state.audiogram:
        return  # the audiogram moved on: a newer refine request follows
      with self.state.hold_trait_notifications():
        self.state.ear, self.state.ear_refined = ear, True
    self.request()

  def _offer_ear(self, change=None):
    """The fine-tune trains for the refined fit; for the fast fit only where none will come (no
    refinement, or it failed), so that a run never trains for a listener about to be replaced."""
    ear = self.state.ear
    waiting = self._refiner is not None and not self.state.ear_refined and not self._refine_failed
    self.finetune.ear = None if waiting else ear

  def _on_refine_error(self, err):
    with self._lock:
      if self._refining != self.state.audiogram:
        return  # an earlier audiogram's fit failed: the current one's refine request follows
      self._refine_failed = True
    if self.finetune is not None:
      self._offer_ear()
    self.fit_status.value = ('<span style="font-size:12px;color:#c0392b">refined fit failed '
                             f"({html.escape(type(err).__name__)}: {html.escape(str(err))}); "
                             "showing the fast fit</span>")

  # -- reactions ------------------------------------------------------------------------------

  def _on_sound_changed(self, change):
    self.state.sound = change["new"]

  def _on_editor_audiogram_changed(self, change):
    with self._lock:  # until the new listener is fitted there is no ear to fine-tune for
      self._refine_failed = False
      if getattr(self.state.ear, "audiogram", None) != change["new"]:
        with self.state.hold_trait_notifications():
          self.state.ear, self.state.ear_refined = None, False
    self.state.audiogram = change["new"]

  def _on_finetune_model_changed(self, change):
    self.state.model = change["new"]

  def _on_input_changed(self, change):
    self.request()

  def _on_view_setting_changed(self, change):
    self.request()
