"""A/B listening: one audio player per named signal, all at one shared playback scale.

Nothing is normalised per clip: a signal 6 dB quieter plays 6 dB quieter. Samples beyond digital
full scale are clipped and the row says so, so a loud condition is heard (and flagged) as loud.
"""
import base64
import html
import io
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import soundfile as sf

from dal_widgets.errors import ParameterError

DEFAULT_NAMES = ("clean", "noisy", "unaided (impaired)", "NAL-R", "DAL")
FULL_SCALE = 1.0  # float samples in [-1, 1] map onto the 16-bit range; beyond that they clip
WAV_SUBTYPE = "PCM_16"  # what every browser plays; 96 dB of range is plenty for listening
# An empty row is an empty URL, not empty WAV bytes: the page turns bytes into a blob URL, and the
# browser's range request for a 0-byte blob fails with a console error (one per empty row).
EMPTY_FORMAT = "url"


def _validated_signal(x, sr, name: str = "x") -> tuple[np.ndarray, int]:
  x = np.asarray(x)
  if x.ndim != 1 or x.size == 0 or not np.issubdtype(x.dtype, np.floating):
    raise ParameterError(f"{name}: expected a non-empty 1-D float array, "
                         f"got {x.dtype} of shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ParameterError(f"{name}: expected finite samples, got NaN or inf")
  if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
    raise ParameterError(f"sr: expected a positive integer sample rate in Hz, got {sr!r}")
  return x, int(sr)


def count_clipped(x: np.ndarray, full_scale: float = FULL_SCALE) -> int:
  """Number of samples whose magnitude exceeds full scale (they clip when written as PCM)."""
  return int(np.count_nonzero(np.abs(np.asarray(x)) > full_scale))


def wav_bytes(x: np.ndarray, sr: int) -> bytes:
  """Encodes a mono float signal as 16-bit PCM WAV bytes, clipping (never normalising) at full scale.

  Args:
    x: Samples, shape [n_samp], float, full scale = 1.0.
    sr: Sample rate in Hz.

  Returns:
    The bytes of a WAV file.

  Raises:
    ParameterError: if x is not a finite 1-D float array or sr is not a positive integer.
  """
  x, sr = _validated_signal(x, sr)
  buffer = io.BytesIO()
  clipped = np.clip(x, -FULL_SCALE, FULL_SCALE).astype(np.float32)
  sf.write(buffer, clipped, sr, format="WAV", subtype=WAV_SUBTYPE)
  return buffer.getvalue()


def download_link(data: bytes, filename: str, mime: str, text: str = "download") -> str:
  """HTML of a link that saves `data` as `filename` (a data URI: works in Voila, no server route)."""
  payload = base64.b64encode(data).decode("ascii")
  return (f'<a download="{html.escape(filename)}" href="data:{mime};base64,{payload}" '
          f'title="save {html.escape(filename)}" style="color:#1f4fd6;text-decoration:underline">'
          f"\u2b07 {html.escape(text)}</a>")


def file_stem(name: str) -> str:
  """`name` made safe as a file name: every character but letters and digits becomes "_"."""
  return "".join(c if c.isalnum() else "_" for c in name).strip("_") or "signal"


class ABPlayer(widgets.VBox):
  """Rows of (name, audio player, download link, clipping warning) for named signals.

  Attributes:
    players: {name: ipywidgets.Audio}.
    links: {name: ipywidgets.HTML} download links.
    warnings: {name: ipywidgets.HTML} clipping warnings (empty when the clip is clean,
      "(not computed)" when the row has no signal).
  """

  def __init__(self, names: Sequence[str] = DEFAULT_NAMES, *, gain_db: float = 0.0, **kwargs):
    """Builds one row per name; rows stay empty until `set_signals`.

    Args:
      names: Row names in display order.
      gain_db: One playback gain applied to every signal alike, dB.
    """
    names = tuple(names)
    if not names or len(set(names)) != len(names):
      raise ParameterError(f"names: expected distinct row names, got {names!r}")
    self.names, self.gain_db = names, float(gain_db)
    self.players, self.links, self.warnings, self._labels = {}, {}, {}, {}
    rows = []
    for name in names:
      self._labels[name] = widgets.HTML(f"<b>{html.escape(name)}</b>",
                                        layout=widgets.Layout(width="150px"))
      self.players[name] = widgets.Audio(value=b"", format=EMPTY_FORMAT, autoplay=False, loop=False,
                                         layout=widgets.Layout(height="32px", width="300px",
                                                               visibility="hidden"))
      self.links[name] = widgets.HTML("", layout=widgets.Layout(width="80px"))
      self.warnings[name] = widgets.HTML('<span style="color:#999">(not computed)</span>')
      rows.append(widgets.HBox([self._labels[name], self.players[name], self.links[name],
                                self.warnings[name]], layout=widgets.Layout(align_items="center")))
    note = widgets.HTML("<small>All rows play at one shared scale (no per-clip normalisation); "
                        "samples beyond full scale are clipped and flagged.</small>")
    super().__init__(rows + [note], **kwargs)

  def set_signals(self, signals: Mapping[str, tuple[np.ndarray, int]]) -> None:
    """Sets the sound of each named row; rows not in `signals` are emptied.

    Args:
      signals: {name: (x, sr)} with x float [n_samp] (full scale 1.0) and sr in Hz.

    Raises:
      ParameterError: on an unknown name or an invalid signal (nothing is changed then).
    """
    unknown = set(signals) - set(self.names)
    if unknown:
      raise ParameterError(f"signals: expected names among {self.names}, got unknown {sorted(unknown)}")
    scale = 10.0 ** (self.gain_db / 20.0)
    encoded = {}
    for name, (x, sr) in signals.items():
      x, sr = _validated_signal(x, sr, name=f"signals[{name!r}]")
      scaled = x * scale
      encoded[name] = (wav_bytes(scaled, sr), count_clipped(scaled), float(np.max(np.abs(scaled))))
    for name in self.names:
      self._set_row(name, *encoded.get(name, (b"", 0, 0.0)))

  def _set_row(self, name, wav, n_clipped, peak):
    player = self.players[name]
    with player.hold_sync():
      player.format, player.value = ("wav" if wav else EMPTY_FORMAT), wav
      player.layout.visibility = "visible" if wav else "hidden"
    self.links[name].value = download_link(wav, f"{file_stem(name)}.wav", "audio/wav") if wav else ""
    if not wav:
      self.warnings[name].value = '<span style="color:#999">(not computed)</span>'
    elif n_clipped:
      peak_db_fs = 20 * np.log10(peak / FULL_SCALE)
      samples = "sample" if n_clipped == 1 else "samples"
      self.warnings[name].value = (f'<span style="color:#c0392b">\u26a0 clipped {n_clipped} '
                                   f"{samples} (peak {peak_db_fs:+.1f} dB FS)</span>")
    else:
      self.warnings[name].value = ""
