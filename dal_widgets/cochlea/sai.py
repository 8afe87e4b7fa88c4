"""Stabilized auditory image (SAI) of a NAP, in JAX (Lyon 2017 ch. 21; google/carfac sai.py).

Per channel, each frame looks for `num_triggers_per_frame` trigger points: the largest value of
the NAP, weighted by a half-sine, inside 50%-overlapping windows near the end of an input buffer.
The NAP around each trigger (lags -past_lags .. +future_lags) is blended into the running frame
with weight `alpha = (0.025 + peak) / (0.5 + peak)`, so strong triggers replace the image and
weak ones barely move it. A periodic NAP therefore gives an image with peaks at lags 0, ±period.

Layout: our NAP is [n_samp, n_ch] (time first); frames are [n_ch, sai_width] (the reference's
layout), column j holding NAP sample `trigger + j - past_lags`, so zero lag is column past_lags.

Gradients: trigger *positions* are discrete (an argmax, under stop_gradient). The blended NAP
values are differentiable, and so is alpha: its `peak` is the weighted NAP value at the chosen
trigger, so gradient flows to that one sample. This is the exact derivative of the reference's
piecewise-smooth map (finite differences agree away from argmax ties). alpha' = 0.475/(0.5+peak)^2
is finite because only peak > 0 is used; when a window has no positive value the reference falls
back to the window's own maximum (a constant, no gradient), which also keeps an all-zero NAP finite.
The gradient is reverse mode (jax.grad, jax.vjp): the image blend has a hand-written backward
pass (`_blend`), so forward mode (jax.jvp, jax.jacfwd) raises a TypeError.
"""
import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dal_widgets.errors import ParameterError
from dal_widgets.finite import has_nonfinite
from dal_widgets.pytree import pytree_dataclass

ALPHA_OFFSET = 0.025  # blend weight (0.025 + peak)/(0.5 + peak): 0.05 .. ~1 (google/carfac sai.py)
ALPHA_HALF = 0.5  # peak at which the blend weight is ~0.5 (same source)
DEFAULT_FRAME_MS = 100.0  # hop between frames = input segment (golden (d): 2205 samples at 22050 Hz)
DEFAULT_WIDTH_MS = 20.0  # image width (golden file (d): 441 lags at 22050 Hz)
DEFAULT_NUM_TRIGGERS = 4  # trigger windows per frame (golden file (d))
TRIGGER_WINDOW_PER_WIDTH = 2  # trigger window = 2 x image width (golden file (d): 882 = 2 x 441)
# Trigger windows are unrolled in the compiled program: on 100 ms frames at 22050 Hz a 10 ms
# image needs 9 (first call 1.1 s on 2 cores), a 1 ms image 99 (8.5 s), a 0.125 ms image 734.
# Images are 10-40 ms wide in use.
MAX_NUM_TRIGGERS = 64
# Trigger search in blocks of this many samples (`_argmax_first`): XLA's CPU argmax (a two-operand
# reduce) is scalar code; a plain max per block first, then argmax over the block maxima and
# within one block, took 16 -> 1.6 ms for 40 frames x 4 windows x 640 samples x 65 channels.
ARGMAX_BLOCK = 32


@dataclasses.dataclass(frozen=True)
class SaiParams:
  """Static SAI design, all in samples (hashable: pass as a static argument to jit).

  Attributes:
    num_channels: Channels of the NAP (rows of a frame).
    sai_width: Lags per frame (columns).
    future_lags: Lags after the trigger, 0 <= future_lags < sai_width; the other
      `sai_width - future_lags - 1` lags are in the past.
    num_triggers_per_frame: Trigger windows blended into each frame.
    trigger_window_width: Samples searched for one trigger; must exceed sai_width.
    input_segment_width: New NAP samples consumed per frame (the hop); must be
      less than `buffer_width`.
  """
  num_channels: int
  sai_width: int
  future_lags: int
  num_triggers_per_frame: int
  trigger_window_width: int
  input_segment_width: int

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ParameterError(f"{f.name}: expected an int, got {v!r} ({type(v).__name__})")
      object.__setattr__(self, f.name, int(v))
    for name in ("num_channels", "sai_width", "num_triggers_per_frame", "input_segment_width"):
      if getattr(self, name) < 1:
        raise ParameterError(f"{name}: expected >= 1, got {getattr(self, name)}")
    if not 0 <= self.future_lags < self.sai_width:
      raise ParameterError(f"future_lags: expected 0 <= future_lags < sai_width={self.sai_width} "
                           f"(zero lag must be in the frame), got {self.future_lags}")
    if self.trigger_window_width <= self.sai_width:
      raise ParameterError(f"trigger_window_width: expected > sai_width={self.sai_width}, "
                           f"got {self.trigger_window_width}")
    if self.input_segment_width >= self.buffer_width:
      raise ParameterError(
          f"input_segment_width: expected < buffer_width={self.buffer_width} (= sai_width + "
          f"(1 + (num_triggers_per_frame - 1) / 2) * trigger_window_width), got "
          f"{self.input_segment_width}; use more or wider trigger windows or shorter segments")

  @property
  def buffer_width(self) -> int:
    """Samples kept in the input buffer: the image plus the 50%-overlapping trigger windows."""
    return (self.sai_width + self.trigger_window_width
            + (self.num_triggers_per_frame - 1) * self.trigger_window_width // 2)

  @property
  def past_lags(self) -> int:
    """Lags before the trigger; also the column index of zero lag."""
    return self.sai_width - self.future_lags - 1


@pytree_dataclass
class SaiState:
  """SAI state: `buffer` [buffer_width, n_ch] latest NAP samples, `frame` [n_ch, sai_width] image."""
  buffer: jnp.ndarray
  frame: jnp.ndarray


def sai_params_for(sr: float, n_ch: int, *, frame_ms: float = DEFAULT_FRAME_MS,
                   width_ms: float = DEFAULT_WIDTH_MS, future_ms: Optional[float] = None,
                   num_triggers: Optional[int] = None) -> SaiParams:
  """SAI design for a NAP at `sr` Hz with `n_ch` channels.

  Args:
    sr: Sample rate of the NAP, Hz.
    n_ch: Number of NAP channels.
    frame_ms: Hop between frames (input segment), ms.
    width_ms: Image width (all lags), ms.
    future_ms: Lags after the trigger, ms; None gives a symmetric image
      ((width - 1) // 2 future lags).
    num_triggers: Trigger windows per frame; None: 4, or more if needed so the
      buffer covers the segment.
  Returns:
    SaiParams; at 22050 Hz with defaults: width 441, future_lags 220, 4 triggers,
    trigger window 882, segment 2205 (the golden configuration).
  Raises:
    ParameterError: for non-positive or non-finite values or an inconsistent design.
  """
  for name, v in (("sr", sr), ("frame_ms", frame_ms), ("width_ms", width_ms)):
    if not (isinstance(v, (int, float, np.number)) and math.isfinite(v) and v > 0):
      raise ParameterError(f"{name}: expected a finite number > 0, got {v!r}")
  sai_width = int(round(width_ms * sr / 1000))
  if sai_width < 2:
    raise ParameterError(f"width_ms: expected at least 2 samples at sr={sr}, got {width_ms} ms")
  segment = int(round(frame_ms * sr / 1000))
  if segment < 1:
    raise ParameterError(f"frame_ms: expected at least 1 sample at sr={sr}, got {frame_ms} ms")
  if future_ms is None:
    future_lags = (sai_width - 1) // 2
  elif isinstance(future_ms, (int, float, np.number)) and math.isfinite(future_ms) and future_ms >= 0:
    future_lags = int(round(future_ms * sr / 1000))
  else:
    raise ParameterError(f"future_ms: expected None or a finite number >= 0, got {future_ms!r}")
  window = TRIGGER_WINDOW_PER_WIDTH * sai_width
  auto = num_triggers is None
  if auto:
    num_triggers = DEFAULT_NUM_TRIGGERS
    while sai_width + window + (num_triggers - 1) * window // 2 <= segment:
      num_triggers += 1
  if not (isinstance(num_triggers, (int, np.integer)) and not isinstance(num_triggers, bool)
          and 1 <= num_triggers <= MAX_NUM_TRIGGERS):
    why = (f" (a {width_ms:g} ms image on {frame_ms:g} ms frames needs that many; widen the "
           "image or shorten the frames)" if auto else "")
    raise ParameterError(f"num_triggers: expected 1..{MAX_NUM_TRIGGERS} trigger windows per frame, "
                         f"got {num_triggers!r}{why}")
  return SaiParams(num_channels=n_ch, sai_width=sai_width, future_lags=future_lags,
                   num_triggers_per_frame=num_triggers, trigger_window_width=window,
                   input_segment_width=segment)


def sai_lags_s(params: SaiParams, sr: float) -> np.ndarray:
  """Lag of each frame column, seconds, shape [sai_width] (negative = past, 0 at column past_lags)."""
  if not (isinstance(sr, (int, float, np.number)) and math.isfinite(sr) and sr > 0):
    raise ParameterError(f"sr: expected a finite number > 0, got {sr!r}")
  return (np.arange(params.sai_width) - params.past_lags) / float(sr)


def init_sai_state(params: SaiParams, dtype=jnp.float32) -> SaiState:
  """Zero buffer and zero image (as the reference's Reset)."""
  return SaiState(buffer=jnp.zeros((params.buffer_width, params.num_channels), dtype),
                  frame=jnp.zeros((params.num_channels, params.sai_width), dtype))


def _trigger_window(width: int):
  """Half-sine weights sin(pi k / width), k = 1..width (google/carfac sai.py); float64 numpy."""
  return np.sin(np.pi * np.arange(1, width + 1) / width)


def _argmax_first(x, block: int = ARGMAX_BLOCK):
  """Index of the first maximum along axis 0 of x [n, ...] (as jnp.argmax), shape x.shape[1:].

  The first block holding the maximum, then the first maximum inside it; n is padded to whole
  blocks with -inf.
  """
  n = x.shape[0]
  pad = -n % block
  if pad:
    x = jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], -jnp.inf, x.dtype)])
  blocks = jnp.reshape(x, (-1, block) + x.shape[1:])
  which = jnp.argmax(jnp.max(blocks, axis=1), axis=0)
  inside = jnp.take_along_axis(blocks, which[None, None], axis=0)[0]  # [block, ...]
  return which * block + jnp.argmax(inside, axis=0)


def _window_layout(params: SaiParams):
  """(first, hop): start of a frame's first trigger window in its buffer, and the hop between
  windows (50% overlap). The last window ends future_lags before the buffer end, so the future
  lags of every trigger are in the buffer."""
  p = params
  hop = p.trigger_window_width // 2
  return (p.buffer_width - p.future_lags - p.trigger_window_width
          - (p.num_triggers_per_frame - 1) * hop), hop


def _triggers(x, n_frames: int, params: SaiParams):
  """Trigger positions in x and whether each window had a positive value (no gradient).

  x: [buffer_width + n_frames * input_segment_width, n_ch], the buffer before the first frame
  followed by the new NAP; frame f sees the buffer x[(f + 1) * segment:][:buffer_width].
  Returns (trigger [n_frames, num_triggers, n_ch] int, found [same] bool).
  """
  p = params
  window_np = _trigger_window(p.trigger_window_width)
  window = jnp.asarray(window_np, x.dtype)[:, None]
  fallback_index = int(np.argmax(window_np))  # used when a window has no positive value
  first_start, hop = _window_layout(p)

  def frame(_, f):
    shift = (f + 1) * p.input_segment_width  # x index of the frame's buffer start
    buffer = lax.dynamic_slice_in_dim(x, shift, p.buffer_width)
    out = []
    for w in range(p.num_triggers_per_frame):  # static, small
      start = first_start + w * hop
      weighted = buffer[start:start + p.trigger_window_width] * window  # [window, n_ch]
      index = _argmax_first(weighted)  # first maximum, as numpy
      found = jnp.max(weighted, axis=0) > 0
      out.append((shift + start + jnp.where(found, index, fallback_index), found))
    return None, tuple(jnp.stack(v) for v in zip(*out))

  _, (trigger, found) = lax.scan(frame, None, jnp.arange(n_frames))
  return lax.stop_gradient(trigger), found


def _run(state: SaiState, nap, params: SaiParams):
  """Frames of a NAP [n_frames * input_segment_width, n_ch] from `state`, no checks.

  The trigger search (no gradient) runs first; then every frame's NAP runs at its triggers are
  cut from the NAP at once and blended in a loop over frames, so the gradient
  adds each run to the NAP once instead of carrying the whole buffer's gradient through frames.
  """
  p = params
  dtype = state.buffer.dtype
  n_frames = nap.shape[0] // p.input_segment_width
  if n_frames == 0:
    return jnp.zeros((0,) + state.frame.shape, dtype), state
  x = jnp.concatenate([state.buffer, nap.astype(dtype)], axis=0)
  trigger, found = _triggers(lax.stop_gradient(x), n_frames, p)
  window_np = _trigger_window(p.trigger_window_width)
  first_start, hop = _window_layout(p)
  starts = ((np.arange(n_frames)[:, None] + 1) * p.input_segment_width + first_start
            + np.arange(p.num_triggers_per_frame)[None, :] * hop)[..., None]  # window starts in x
  window = jnp.asarray(window_np, dtype)
  # the weighted NAP at the trigger: gradient to that one sample; where no value was positive,
  # the window's own maximum (a constant), as the reference
  weighted_peak = x[trigger, jnp.arange(p.num_channels)] * window[trigger - starts]
  peak = jnp.where(found, weighted_peak, jnp.asarray(window_np.max(), dtype))
  alpha = (ALPHA_OFFSET + peak) / (ALPHA_HALF + peak)  # [n_frames, num_triggers, n_ch]
  # each channel's image row is one contiguous run of that channel's NAP
  run = lambda row, first: lax.dynamic_slice(row, (first,), (p.sai_width,))
  per_channel = jax.vmap(run)  # [n_ch, len], [n_ch] -> [n_ch, sai_width]
  runs = jax.vmap(jax.vmap(per_channel, (None, 0)), (None, 0))(x.T, trigger - p.past_lags)
  frames = _blend(state.frame, runs, alpha)
  return frames, SaiState(buffer=x[x.shape[0] - p.buffer_width:], frame=frames[-1])


def _blend_frame(image, frame_runs, frame_alpha):
  """One frame's blends: image [n_ch, sai_width] <- image (1 - alpha) + alpha run, for each of
  frame_runs [triggers, n_ch, sai_width] with frame_alpha [triggers, n_ch]."""
  for w in range(frame_runs.shape[0]):  # static, small
    a = frame_alpha[w][:, None]
    image = image * (1 - a) + a * frame_runs[w]
  return image


@jax.custom_vjp
def _blend(frame, runs, alpha):
  """Frames [frames, n_ch, sai_width]: the runs [frames, triggers, n_ch, sai_width] blended in
  turn, with alpha [frames, triggers, n_ch], into the running image, from `frame`."""
  def one_frame(f, carry):
    image, frames = carry
    image = _blend_frame(image, _at(runs, f), _at(alpha, f))
    return image, lax.dynamic_update_index_in_dim(frames, image, f, 0)

  empty = jnp.zeros((runs.shape[0],) + frame.shape, frame.dtype)
  return lax.fori_loop(0, runs.shape[0], one_frame, (frame, empty))[1]


def _at(a, f):
  """a[f] for a traced index, as a dynamic slice. The blend loops read and write frames this way,
  not as scan inputs and outputs: under vmap, scan moves the batch axis behind the frame axis
  and XLA:CPU transposed the whole runs array to do it (bench/RESULTS.md)."""
  return lax.dynamic_index_in_dim(a, f, 0, keepdims=False)


def _blend_fwd(frame, runs, alpha):
  frames = _blend(frame, runs, alpha)
  return frames, (frame, runs, alpha, frames)


def _blend_bwd(residuals, frames_bar):
  """A reverse loop over frames that re-blends each frame from the one before it. (JAX's own
  gradient of the scan kept every blend's image: under vmap, as the loss calls it, the SAI
  gradient took 48 ms per clip with it and 28 ms with this; 16 kHz, 1 s.) Each alpha's gradient
  is a dot product over lags, an einsum: XLA:CPU runs it as a dot, where a sum over lags in the
  loop ran slower and one after the loop kept a runs-sized array (bench/RESULTS.md)."""
  frame, runs, alpha, frames = residuals
  n_frames, n_blends = runs.shape[:2]

  def one_frame(i, carry):
    image_bar, runs_bar, alpha_bar = carry
    f = n_frames - 1 - i
    frame_runs, frame_alpha = _at(runs, f), _at(alpha, f)
    before = [jnp.where(f == 0, frame, _at(frames, jnp.maximum(f - 1, 0)))]  # image before f
    for w in range(n_blends - 1):
      a = frame_alpha[w][:, None]
      before.append(before[-1] * (1 - a) + a * frame_runs[w])
    image_bar = image_bar + _at(frames_bar, f)
    frame_runs_bar, frame_alpha_bar = [None] * n_blends, [None] * n_blends
    for w in reversed(range(n_blends)):
      a = frame_alpha[w][:, None]
      frame_runs_bar[w] = a * image_bar
      frame_alpha_bar[w] = jnp.einsum("cl,cl->c", image_bar, frame_runs[w] - before[w])
      image_bar = image_bar * (1 - a)
    put = lambda whole, part: lax.dynamic_update_index_in_dim(whole, jnp.stack(part), f, 0)
    return image_bar, put(runs_bar, frame_runs_bar), put(alpha_bar, frame_alpha_bar)

  init = (jnp.zeros_like(frame), jnp.zeros_like(runs), jnp.zeros_like(alpha))
  return lax.fori_loop(0, n_frames, one_frame, init)


_blend.defvjp(_blend_fwd, _blend_bwd)


def _check_nap(nap, params: SaiParams, name: str) -> None:
  shape = jnp.shape(nap)
  if len(shape) != 2 or shape[1] != params.num_channels:
    raise ParameterError(f"{name}: expected shape [n_samp, num_channels={params.num_channels}] "
                         f"(time first), got {tuple(shape)}")
  if has_nonfinite(nap):
    raise ParameterError(f"{name}: expected finite values, got NaN or inf")


def _check_state(state: SaiState, params: SaiParams) -> None:
  want = ((params.buffer_width, params.num_channels), (params.num_channels, params.sai_width))
  got = (tuple(jnp.shape(state.buffer)), tuple(jnp.shape(state.frame)))
  if got != want:
    raise ParameterError(f"state: expected buffer/frame shapes {want} for these params, got {got}")


def sai_step(state: SaiState, segment, params: SaiParams):
  """Consumes one NAP segment and returns the new SAI frame.

  Args:
    state: SaiState from `init_sai_state` or a previous step.
    segment: NAP, shape [input_segment_width, num_channels] (time first).
    params: SaiParams (static).
  Returns:
    (frame, state): frame [num_channels, sai_width] in NAP units, and the new state.
  Raises:
    ParameterError: if shapes do not match `params`.
  """
  _check_nap(segment, params, "segment")
  if jnp.shape(segment)[0] != params.input_segment_width:
    raise ParameterError(f"segment: expected {params.input_segment_width} samples "
                         f"(input_segment_width), got {jnp.shape(segment)[0]}")
  _check_state(state, params)
  frames, state = _run(state, jnp.asarray(segment), params)
  return frames[0], state


def sai_run(state: SaiState, nap, params: SaiParams):
  """Streams a NAP whose length is a whole number of segments through the SAI.

  Args:
    state: SaiState (carried across calls, so chunked == unchunked).
    nap: NAP, shape [n_frames * input_segment_width, num_channels].
    params: SaiParams (static).
  Returns:
    (frames, state): frames [n_frames, num_channels, sai_width] and the new state.
  Raises:
    ParameterError: if shapes do not match `params` or the length is not a multiple
      of input_segment_width.
  """
  _check_nap(nap, params, "nap")
  _check_state(state, params)
  n_samp = jnp.shape(nap)[0]
  if n_samp % params.input_segment_width:
    raise ParameterError(f"nap: expected a multiple of input_segment_width="
                         f"{params.input_segment_width} samples, got {n_samp}")
  return _run(state, jnp.asarray(nap), params)


def sai_frames(nap, params: SaiParams):
  """SAI frames of a whole NAP, from a zero state; a trailing partial segment is dropped.

  Frame i is computed after NAP samples [0, (i + 1) * input_segment_width) have been seen
  (the last `nap.shape[0] % input_segment_width` samples produce no frame).

  Args:
    nap: NAP, shape [n_samp, num_channels] (time first), n_samp >= input_segment_width.
      Float64 input stays float64 only when jax x64 is enabled; otherwise float32.
    params: SaiParams (static; e.g. `jax.jit(sai_frames, static_argnames="params")`).
  Returns:
    frames, shape [n_samp // input_segment_width, num_channels, sai_width], NAP units.
  Raises:
    ParameterError: for a wrong shape or a NAP shorter than one segment.
  """
  _check_nap(nap, params, "nap")
  nap = jnp.asarray(nap)
  n_frames = nap.shape[0] // params.input_segment_width
  if n_frames == 0:
    raise ParameterError(f"nap: expected at least input_segment_width={params.input_segment_width} "
                         f"samples, got {nap.shape[0]}")
  dtype = jnp.promote_types(nap.dtype, jnp.float32)
  state = init_sai_state(params, dtype)
  frames, _ = sai_run(state, nap[:n_frames * params.input_segment_width], params)
  return frames
