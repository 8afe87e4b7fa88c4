"""Training a DAL hearing aid: SEANet (flax linen) + optax, data parallel over the local devices.

The library in the style of the flax examples:

    state = create_train_state(rng, model_cfg, train_cfg)
    step = make_train_step(model_cfg, train_cfg, normal, impaired)   # train_step(state, batch)
    state, metrics = step(state, batch)
    result = train(cfg, workdir)                                     # the whole loop

One step: the normal ear's target NAP/SAI of the clean speech (no gradient), then
value_and_grad of the DAL loss (losses.dal_loss), clipped AdamW. A step whose loss, gradients or
new parameters are not finite is skipped inside jit (parameters and optimizer state unchanged)
and reported as metrics["finite"] == False; `train` raises TrainingError after
cfg.max_bad_steps such steps in a row, keeping (and saving) the last good parameters.

Devices: a 1-D Mesh over the devices (all local ones by default); the batch is sharded on its
leading axis, state and ears are replicated, so XLA averages the gradients across devices. One
device is the same code path with a mesh of one.

Compilation: the jitted step is one module-level function whose static part is (model config,
loss config, decay kind, CARFAC hypers, mesh); the ears' arrays and the optimizer's numbers are
arguments. A second run in the same process with another audiogram, seed, learning rate or step
count reuses the compiled step (compiling CARFAC's gradient takes tens of seconds on a laptop CPU).

Randomness: SEANet has no stochastic layers, so a step needs no PRNG key; the data of step k is
np.random.default_rng((data.seed, k)) (loop.data), the parameters come from PRNGKey(cfg.seed).
"""
import contextlib
import dataclasses
import functools
import logging
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from dal_widgets.aid.seanet import (SEANET_SIZES, SeanetConfig, apply_to_recording,
                                    condition_from_audiogram, init_seanet)
from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import designs
from dal_widgets.errors import ParameterError, TrainingError
from dal_widgets.hearing.fit import fit_cochlea
from dal_widgets.hearing.presets import preset
from dal_widgets.loop import checkpoint, losses
from dal_widgets.loop.config import TrainConfig
from dal_widgets.loop.data import SpeechSource

PROGRESS_INTERVAL_S = 0.1  # on_progress at most 10 Hz (DESIGN: throttle UI updates to ~10 Hz)
DATA_AXIS = "data"  # mesh axis the batch is split over
RESULT_LOSS_STEPS = 10  # TrainResult.loss averages the last this many finite steps

logger = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
  """Everything a step changes (a pytree; checkpointed as is).

  Attributes:
    params: SEANet parameters.
    opt_state: optax state of make_optimizer(cfg).
    step: Steps taken so far, int32 scalar (skipped non-finite steps count).
  """
  params: Any
  opt_state: Any
  step: jnp.ndarray


@dataclasses.dataclass
class TrainResult:
  """What `train` returns.

  Attributes:
    params: Final (last good) SEANet parameters, host numpy arrays.
    history: One dict per step of this call: "step" (1-based count after the step), "loss",
      the loss terms ("nap", "sai", "level", "spectral"), "level_db_spl", "grad_norm",
      "learning_rate", "finite" (False: the step was skipped), "time_s" (since the call began).
      With a workdir, every step of the run so far (earlier calls too) is in its history.csv
      (checkpoint.read_history).
    stopped_early: True when should_stop() ended the run before cfg.steps.
    steps_done: Steps of the run so far (cfg.steps when it completed; includes resumed steps).
    skipped_steps: Non-finite steps skipped in this call.
    checkpoint: The last checkpoint written, or None.
  """
  params: Any
  history: list
  stopped_early: bool
  steps_done: int
  skipped_steps: int = 0
  checkpoint: Path | None = None

  @property
  def loss(self) -> float:
    """Mean loss of the last RESULT_LOSS_STEPS finite steps (nan when there are none)."""
    finite = [h["loss"] for h in self.history if h["finite"]][-RESULT_LOSS_STEPS:]
    return float(np.mean(finite)) if finite else float("nan")


def _learning_rate(count, hp, cosine: bool):
  """Linear warm-up over the first hp["warmup_steps"] steps (count 0 trains at peak / warmup,
  count warmup - 1 at the peak: no step at a rate of 0), then cosine decay to
  hp["final_lr_fraction"] * peak at hp["steps"] (or constant). Works on traced hp."""
  count = jnp.asarray(count, jnp.float32)
  peak, warmup = hp["learning_rate"], hp["warmup_steps"]
  warm = peak * (count + 1.0) / jnp.maximum(warmup, 1.0)
  if cosine:
    done = jnp.clip((count - warmup) / jnp.maximum(hp["steps"] - warmup, 1.0), 0.0, 1.0)
    final = hp["final_lr_fraction"]
    after = peak * (final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * done)))
  else:
    after = peak
  return jnp.where(count < warmup, warm, after)


def _hyperparams(cfg: TrainConfig) -> dict:
  """The optimizer's numbers as float32 scalars: arguments of the jitted step, so changing them
  (or the number of steps) does not recompile it."""
  names = ("learning_rate", "warmup_steps", "steps", "final_lr_fraction", "weight_decay",
           "clip_norm")
  return {n: jnp.asarray(getattr(cfg, n), jnp.float32) for n in names}


def _optimizer(hp: dict, cosine: bool) -> optax.GradientTransformation:
  schedule = lambda count: _learning_rate(count, hp, cosine)
  return optax.chain(optax.clip_by_global_norm(hp["clip_norm"]),
                     optax.adamw(schedule, weight_decay=hp["weight_decay"]))


def make_schedule(cfg: TrainConfig):
  """Learning rate per step (0-based): linear warm-up, then cosine decay (or constant)."""
  hp, cosine = _hyperparams(cfg), cfg.decay == "cosine"
  return lambda count: _learning_rate(count, hp, cosine)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """Global-norm gradient clipping, then AdamW (decoupled weight decay) on make_schedule(cfg)."""
  return _optimizer(_hyperparams(cfg), cfg.decay == "cosine")


def create_train_state(rng: jax.Array, model_cfg: SeanetConfig,
                       train_cfg: TrainConfig) -> TrainState:
  """A fresh state: identity-start SEANet parameters, optimizer state, step 0."""
  if not isinstance(train_cfg, TrainConfig):
    raise ParameterError(f"train_cfg: expected a TrainConfig, got {type(train_cfg).__name__}")
  params = init_seanet(rng, model_cfg)
  return TrainState(params=params, opt_state=_optimizer_init(train_cfg)(params),
                    step=jnp.zeros((), jnp.int32))


@functools.lru_cache(maxsize=16)
def _optimizer_init(train_cfg: TrainConfig):
  """make_optimizer(train_cfg).init, jitted once per config: op by op, each moment's zeros
  compiled a tiny program per layer shape (0.8 s for the small SEANet on 2 cores)."""
  return jax.jit(make_optimizer(train_cfg).init)


class _StepSpec(NamedTuple):
  """Static (hashable) part of a step."""
  model_cfg: SeanetConfig
  loss_cfg: Any
  cosine: bool  # learning-rate decay kind
  hypers: cf.CarfacHypers
  mesh: Mesh


def default_devices(batch_size: int) -> list:
  """The most local devices (in order) whose count divides `batch_size`: every one for a batch
  that splits evenly, fewer for one that does not (batch 1: one device). On the CPU with the
  compiled CARFAC kernel, one device: the kernel spreads the batch over the cores itself, and
  splitting the step over CPU devices was slower (batch 2 x 1 s, 16 kHz: 367 vs 199 ms,
  bench/RESULTS.md)."""
  local = jax.local_devices()
  if local[0].platform == "cpu" and cf.native_lib.default():
    return local[:1]
  n = max(k for k in range(1, len(local) + 1) if batch_size % k == 0)
  return local[:n]


def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def _is_schedule_count(path, _) -> bool:
  """optax tree filter: the step count of the learning-rate schedule (not Adam's own)."""
  return getattr(path[-1], "tuple_name", None) == "ScaleByScheduleState"


def _train_step_impl(state, batch, ears, condition, hp, spec: _StepSpec):
  normal, impaired = (spec.hypers, *ears[0]), (spec.hypers, *ears[1])
  target = losses.targets(batch.clean, normal, spec.loss_cfg)
  loss_fn = functools.partial(losses.dal_loss, model_cfg=spec.model_cfg, loss_cfg=spec.loss_cfg,
                              normal=normal, impaired=impaired, target=target,
                              condition=condition)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
  updates, opt_state = _optimizer(hp, spec.cosine).update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params)
  keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
  # A skipped step keeps the parameters and Adam's moments but still advances the learning-rate
  # schedule, which counts steps (state.step), not updates: else the decay ends late.
  kept_opt = optax.tree_utils.tree_set(
      keep(opt_state, state.opt_state), _is_schedule_count,
      count=optax.tree_utils.tree_get(opt_state, "count", filtering=_is_schedule_count))
  new_state = TrainState(params=keep(params, state.params), opt_state=kept_opt,
                         step=state.step + 1)
  new_state = jax.lax.with_sharding_constraint(new_state, NamedSharding(spec.mesh, P()))
  metrics = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads), finite=finite,
                 learning_rate=_learning_rate(state.step, hp, spec.cosine))
  return new_state, metrics


@functools.lru_cache(maxsize=None)
def _train_step_jit(backend: str):
  """The jitted step for `backend`, with CARFAC's compiler options (built on first use)."""
  return jax.jit(_train_step_impl, static_argnames="spec", donate_argnums=0,
                 compiler_options=cf.compiler_options(backend))


class TrainStep:
  """`train_step(state, batch) -> (state, metrics)` for one model, loss, optimizer, pair of ears.

  Built by `make_train_step`. Calling it places the batch (sharded on its leading axis) and runs
  the jitted step; the incoming state is donated (do not use it afterwards). Place a state made
  elsewhere with `place_state` first.

  Attributes:
    mesh: The 1-D device mesh (axis "data").
  """

  def __init__(self, model_cfg, train_cfg, normal, impaired, *, condition=None, devices=None):
    if not isinstance(model_cfg, SeanetConfig):
      raise ParameterError(f"model_cfg: expected a SeanetConfig, got {type(model_cfg).__name__}")
    if not isinstance(train_cfg, TrainConfig):
      raise ParameterError(f"train_cfg: expected a TrainConfig, got {type(train_cfg).__name__}")
    normal, impaired = _as_ear(normal, "normal"), _as_ear(impaired, "impaired")
    if normal[0] != impaired[0]:
      raise ParameterError("impaired: expected the same CARFAC design (hypers) as normal, got "
                           f"sr {impaired[0].sr} / {impaired[0].n_ch} channels vs "
                           f"sr {normal[0].sr} / {normal[0].n_ch} channels")
    if model_cfg.film_dim and condition is None:
      raise ParameterError(f"condition: expected a vector of {model_cfg.film_dim} values for a "
                           "FiLM-conditioned model, got None")
    devices = default_devices(train_cfg.batch_size) if devices is None else list(devices)
    if not devices:
      raise ParameterError("devices: expected at least one device, got none")
    self.mesh = Mesh(np.asarray(devices), (DATA_AXIS,))
    self._replicated = NamedSharding(self.mesh, P())
    self._sharded = NamedSharding(self.mesh, P(DATA_AXIS))
    self._spec = _StepSpec(model_cfg, train_cfg.loss, train_cfg.decay == "cosine", normal[0],
                           self.mesh)
    self._hp = jax.device_put(_hyperparams(train_cfg), self._replicated)
    self._ears = jax.device_put((tuple(normal[1:]), tuple(impaired[1:])), self._replicated)
    self._condition = (None if not model_cfg.film_dim else
                       jax.device_put(jnp.asarray(condition, jnp.float32), self._replicated))

  @property
  def n_devices(self) -> int:
    return self.mesh.devices.size

  def place_state(self, state: TrainState) -> TrainState:
    """The state replicated on every device of the mesh."""
    return jax.device_put(state, self._replicated)

  def place_batch(self, batch):
    """The batch sharded on its leading axis (batch size must divide by the device count)."""
    size = int(np.shape(batch.noisy)[0])
    if size % self.n_devices:
      raise ParameterError(f"batch_size: expected a multiple of the {self.n_devices} devices "
                           f"(data parallel), got {size}")
    return jax.device_put(batch, self._sharded)

  def __call__(self, state: TrainState, batch):
    step = _train_step_jit(jax.default_backend())
    return step(state, self.place_batch(batch), self._ears, self._condition, self._hp,
                spec=self._spec)


def make_train_step(model_cfg: SeanetConfig, train_cfg: TrainConfig, normal, impaired, *,
                    condition=None, devices=None) -> TrainStep:
  """The training step of a run.

  Args:
    model_cfg: SeanetConfig of the hearing aid.
    train_cfg: TrainConfig (its loss config and optimizer settings are used).
    normal, impaired: The two ears, each a Carfac / (hypers, coeffs, weights, state) of the same
      design; only the weights differ.
    condition: FiLM vector [film_dim] for a conditioned model (aid.seanet.condition_from_audiogram).
    devices: Devices to split the batch over; default `default_devices(train_cfg.batch_size)`.

  Returns:
    TrainStep: call it as step(state, batch) -> (state, metrics); metrics are scalars "loss",
    the loss terms, "level_db_spl", "grad_norm", "learning_rate" and "finite".

  Raises:
    ParameterError: mismatched ears or configs.
  """
  return TrainStep(model_cfg, train_cfg, normal, impaired, condition=condition, devices=devices)


def _as_ear(ear, name):
  if not (isinstance(ear, tuple) and len(ear) == 4 and isinstance(ear[0], cf.CarfacHypers)):
    raise ParameterError(f"{name}: expected a Carfac (hypers, coeffs, weights, state), "
                         f"got {type(ear).__name__}")
  cf.check_weights(ear[2])
  return ear


def listener_audiogram(cfg: TrainConfig):
  """The Audiogram of cfg.audiogram (a preset name or an Audiogram)."""
  return preset(cfg.audiogram) if isinstance(cfg.audiogram, str) else cfg.audiogram


def ears_for(cfg: TrainConfig, ear=None):
  """(normal, impaired) Carfac models at cfg.data.sr and cfg.style.

  Args:
    cfg: TrainConfig.
    ear: The listener: an ImpairedEar (anything with `.weights()`, e.g. hearing.fit.fit_cochlea's
      result) or CarfacWeights; None fits CARFAC to cfg.audiogram (hearing.fit.fit_cochlea).

  Raises:
    ParameterError: an ear of another sample rate, style or channel count.
  """
  sr = float(cfg.data.sr)
  normal = designs.designed(sr, cfg.style)
  if ear is None:
    ear = fit_cochlea(listener_audiogram(cfg), sr, style=cfg.style)
  if isinstance(ear, cf.CarfacWeights):
    weights = ear
  elif callable(getattr(ear, "weights", None)):
    ear_sr, ear_style = float(getattr(ear, "sr", sr)), getattr(ear, "style", cfg.style)
    if ear_sr != sr or cf.STYLES.get(ear_style) != cf.STYLES[cfg.style]:
      raise ParameterError(f"ear: fitted for sr={ear_sr:g} Hz, style {ear_style!r}; the run uses "
                           f"sr={sr:g} Hz, style {cfg.style!r}")
    weights = ear.weights()
  else:
    raise ParameterError(f"ear: expected an ImpairedEar (with .weights()), CarfacWeights or None, "
                         f"got {type(ear).__name__}")
  if np.shape(weights.ohc_health) != (normal.hypers.n_ch,):
    raise ParameterError(f"ear: expected weights of {normal.hypers.n_ch} channels, got shape "
                         f"{np.shape(weights.ohc_health)}")
  return normal, normal._replace(weights=weights)


def _check_run(cfg: TrainConfig, n_devices: int):
  if not isinstance(cfg, TrainConfig):
    raise ParameterError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
  if cfg.batch_size % n_devices:
    raise ParameterError(f"batch_size: expected a multiple of the {n_devices} devices "
                         f"(data parallel), got {cfg.batch_size}")
  if cfg.loss.w_sai > 0:
    segment_s = cfg.loss.sai_frame_ms / 1000.0
    if cfg.data.clip_s + 1e-9 < segment_s:
      raise ParameterError(f"data.clip_s: expected at least one SAI frame (loss.sai_frame_ms = "
                           f"{cfg.loss.sai_frame_ms} ms), got {cfg.data.clip_s} s")


def resumable(workdir, cfg: TrainConfig):
  """The latest checkpoint of `workdir` that a run of `cfg` would resume (None: none), checked
  before any work.

  Raises:
    ParameterError: the checkpoint holds another model size or another listener's model.
    CheckpointError: it cannot be read.
  """
  found = checkpoint.latest(workdir) if workdir is not None else None
  if found is None:
    return None
  ckpt = checkpoint.restore(workdir)  # config first: a clearer error than mismatched shapes
  found = ckpt.path  # the newest readable one (checkpoint._read)
  fresh = ("use another workdir, or start afresh there (resume=False; `dal train --fresh`), "
           "which moves its checkpoints into a subfolder")
  if ckpt.config.model_config != cfg.model_config:
    raise ParameterError(f"workdir: {found} holds a {_size_name(ckpt.config.model_config)} "
                         f"SEANet, this run trains a {_size_name(cfg.model_config)} one; {fresh}")
  if not ckpt.state.get("opt_state"):  # checkpoint.aid_bytes: the parameters alone
    raise ParameterError(f"workdir: {found} holds an aid's parameters alone (e.g. one downloaded "
                         "from the fine-tune panel), without the optimizer state a run resumes "
                         f"from; {fresh}")
  if listener_audiogram(ckpt.config) != listener_audiogram(cfg):
    raise ParameterError(f"workdir: {found} holds a model for listener "
                         f"{_listener_name(ckpt.config)}, this run trains for {_listener_name(cfg)}; "
                         "to continue that run give its listener again (`dal train "
                         f"--preset/--audiogram/--ear`), or {fresh}")
  return ckpt


def _size_name(model_cfg: SeanetConfig) -> str:
  current = dataclasses.replace(model_cfg, checkerboard_free=True, dc_block=True)
  name = next((f'"{k}"' for k, v in SEANET_SIZES.items() if v == current), None)
  if name is None:
    return str(model_cfg)
  if current == model_cfg:
    return name
  return f"{name} before version 2 (plain transposed convs, no DC blocker)"


def _listener_name(cfg):
  name = listener_audiogram(cfg).name
  return repr(name) if name else "a custom audiogram"


def _resume(workdir, cfg, template):
  """The state to start from: the latest checkpoint of workdir if any, else the template."""
  ckpt = resumable(workdir, cfg)
  if ckpt is None:
    return template
  if ckpt.config.replace(steps=cfg.steps) != cfg:
    changed = _config_changes(ckpt.config, cfg)
    warnings.warn(f"resuming {ckpt.path} (step {ckpt.step}), whose config differs from this "
                  f"run's in {', '.join(changed)}; continuing with this run's config",
                  stacklevel=3)
  elif ckpt.config.steps != cfg.steps and cfg.decay == "cosine" and ckpt.step < cfg.steps:
    was, now = (f"{float(make_schedule(c)(ckpt.step)):.3g}" for c in (ckpt.config, cfg))
    when = (f"after the warm-up (step {cfg.warmup_steps})" if now == was else
            f"so step {ckpt.step + 1} trains at {now} (the old run: {was})")
    warnings.warn(f"resuming {ckpt.path} (step {ckpt.step}) of a {ckpt.config.steps}-step run "
                  f"as a {cfg.steps}-step one: the cosine learning rate decays over the new "
                  f"total, {when}", stacklevel=3)
  return checkpoint.restore(ckpt.path, target=template).state


def _config_changes(old: TrainConfig, new: TrainConfig) -> list:
  """"name old -> new" for each setting but steps that differs (loss and data settings by their
  dotted names, e.g. "data.clip_s 0.5 -> 1")."""
  show = lambda v: f"{v:g}" if isinstance(v, float) else str(v)
  a, b = old.to_dict(), new.to_dict()
  changes = []
  for name in b:
    if name == "steps" or a[name] == b[name]:
      continue
    if name in ("loss", "data"):
      changes += [f"{name}.{k} {show(a[name].get(k))} -> {show(v)}"
                  for k, v in b[name].items() if a[name].get(k) != v]
    elif isinstance(a[name], dict) or isinstance(b[name], dict):  # a model or an audiogram
      changes.append(name)
    else:
      changes.append(f"{name} {show(a[name])} -> {show(b[name])}")
  return changes


def _start_from(template, params, cfg):
  """template with `params` (shape-checked) and a fresh optimizer state for them."""
  want = jax.tree.map(lambda a: (a.shape, a.dtype), template.params)
  got = jax.tree.map(lambda a: (np.shape(a), np.asarray(a).dtype), params)
  if jax.tree.structure(want) != jax.tree.structure(got) or jax.tree.leaves(want) != jax.tree.leaves(got):
    raise ParameterError("init_params: parameters do not fit the model of this configuration "
                         f"({cfg.model_config})")
  params = jax.tree.map(jnp.asarray, params)
  return template.replace(params=params, opt_state=make_optimizer(cfg).init(params))


def train(cfg: TrainConfig, workdir=None, *, ear=None, source=None, on_progress=None,
          should_stop=None, resume: bool = True, progress: bool = False,
          devices=None, init_params=None) -> TrainResult:
  """Trains (or resumes training) a DAL hearing aid for one listener.

  Args:
    cfg: TrainConfig.
    workdir: Folder for checkpoints (resumed from, saved every cfg.checkpoint_every steps, at
      the end and when stopped); None trains in memory only.
    ear: The listener (see `ears_for`); None fits CARFAC to cfg.audiogram.
    source: Object with make_batch(step, batch_size) -> data.Batch; default
      data.SpeechSource(cfg.data, "train").
    on_progress: Optional callable(step, total, metrics) called at most every
      PROGRESS_INTERVAL_S and after the last step (from the calling thread).
    should_stop: Optional callable() -> bool checked before every step (e.g. Event.is_set);
      True saves a checkpoint and returns with stopped_early=True.
    resume: Continue from the latest checkpoint of workdir if there is one; False starts afresh
      and first moves any checkpoints of workdir into a subfolder (checkpoint.set_aside).
    progress: Show a tqdm progress bar.
    devices: Devices to split each batch over; default `default_devices(cfg.batch_size)`.
    init_params: Start from these SEANet parameters (a fine-tune, e.g. of
      loop.pretrained.load_pretrained()) instead of the identity initialisation; ignored when a
      checkpoint is resumed. Must have the shapes of cfg.model_config.

  Returns:
    TrainResult.

  Raises:
    ParameterError: bad configuration, ear, or a workdir holding another model.
    TrainingError: cfg.max_bad_steps non-finite steps in a row, or an error during the run (a
      corpus file that cannot be read, a checkpoint that cannot be written, ...; the original is
      its __cause__). The last good parameters are saved (when workdir is given and writable)
      and attached as the exception's `result`.
    KeyboardInterrupt: Ctrl-C (main thread); the step that runs finishes and is saved first (a
      second Ctrl-C aborts it).
  """
  devices = default_devices(cfg.batch_size) if devices is None else list(devices)
  _check_run(cfg, len(devices))
  workdir = None if workdir is None else checkpoint.check_writable(workdir)  # before any work
  normal, impaired = ears_for(cfg, ear)
  model_cfg = cfg.model_config
  condition = None
  if model_cfg.film_dim:
    condition = condition_from_audiogram(getattr(ear, "audiogram", None) or listener_audiogram(cfg))
  step_fn = make_train_step(model_cfg, cfg, normal, impaired, condition=condition, devices=devices)
  template = create_train_state(jax.random.PRNGKey(cfg.seed), model_cfg, cfg)
  if init_params is not None:
    template = _start_from(template, init_params, cfg)
  if workdir is not None and not resume:
    aside = checkpoint.set_aside(workdir)
    if aside is not None:
      logger.info("moved the earlier run's checkpoints to %s", aside)
  state = step_fn.place_state(_resume(workdir, cfg, template) if resume else template)
  source = SpeechSource(cfg.data, "train") if source is None else source
  return _loop(cfg, state, step_fn, source, workdir, on_progress, should_stop, progress)


@contextlib.contextmanager
def _interrupt_after_step():
  """Holds back a Ctrl-C (SIGINT under Python's default handler, main thread) that arrives during
  a step until the step has returned its new state: the step consumes (donates) the state it is
  given, so a KeyboardInterrupt inside the call would leave no state to save. A second Ctrl-C
  interrupts at once (an abort: the steps since the last checkpoint are lost)."""
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield  # a worker thread, or a caller's own handler (e.g. `dal train`'s)
    return
  caught = []
  def hold(signum, frame):
    if caught:
      raise KeyboardInterrupt
    caught.append(signum)
    logger.warning("interrupted: finishing this step to save it (Ctrl-C again to abort)")
  signal.signal(signal.SIGINT, hold)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, signal.default_int_handler)
  if caught:
    raise KeyboardInterrupt


def _loop(cfg, state, step_fn, source, workdir, on_progress, should_stop, progress):
  start = int(jax.device_get(state.step))
  history, stopped, bad_streak, skipped = [], False, 0, 0
  saved, saved_step, reported_step = None, None, None
  t_start, t_report = time.perf_counter(), -np.inf
  bar = tqdm(total=cfg.steps, initial=start, disable=not progress, unit="step", desc="train")

  earlier = checkpoint.read_history(workdir, start) if workdir is not None else []

  def save():
    nonlocal saved, saved_step
    step = int(jax.device_get(state.step))
    if workdir is not None and step != saved_step:
      try:  # first: a kill between the two leaves rows past the checkpoint (dropped on resume)
        checkpoint.write_history(workdir, earlier + history)
      except OSError as err:
        raise checkpoint.CheckpointError(f"{workdir / checkpoint.HISTORY}: cannot write the "
                                         f"history: {err.strerror or err}") from err
      saved, saved_step = checkpoint.save(workdir, state, cfg), step

  def result():
    return TrainResult(params=jax.device_get(state.params), history=history,
                       stopped_early=stopped, steps_done=int(jax.device_get(state.step)),
                       skipped_steps=skipped, checkpoint=saved)

  def keep_work():
    """Saves the state after an error (when it is intact); says where the last checkpoint is."""
    try:
      save()
    except Exception as save_err:  # e.g. the failed step had consumed (donated) the state
      logger.warning("could not save a checkpoint after the error: %s", save_err)
    return f"; last checkpoint: {saved} (step {saved_step})" if saved else ""

  batch = source.make_batch(start, cfg.batch_size) if start < cfg.steps else None
  try:
    for step in range(start, cfg.steps):
      if should_stop is not None and should_stop():
        stopped = True
        break
      with _interrupt_after_step():  # a Ctrl-C lands once the step is recorded
        state, metrics = step_fn(state, batch)
        try:  # the next batch is made on the host while the device computes this step
          batch = source.make_batch(step + 1, cfg.batch_size) if step + 1 < cfg.steps else None
        except Exception as err:  # raised once this step is recorded
          batch = err
        row = {k: (bool(v) if k == "finite" else float(v))
               for k, v in jax.device_get(metrics).items()}
        row.update(step=step + 1, time_s=time.perf_counter() - t_start)
        history.append(row)
      bad_streak = 0 if row["finite"] else bad_streak + 1
      skipped += not row["finite"]
      bar.update(1)
      if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
        bar.set_postfix(loss=f"{row['loss']:.4g}")
        logger.info("step %d/%d loss %.5g nap %.4g sai %.4g level %.1f dB SPL", step + 1,
                    cfg.steps, row["loss"], row["nap"], row["sai"], row["level_db_spl"])
      if bad_streak >= cfg.max_bad_steps:
        save()
        err = TrainingError(f"training diverged: {bad_streak} non-finite steps in a row (up to "
                            f"step {step + 1}); kept the parameters of the last good step"
                            + (f", saved in {saved}" if saved else ""))
        err.result = result()
        raise err
      if on_progress is not None and time.perf_counter() - t_report >= PROGRESS_INTERVAL_S:
        on_progress(step + 1, cfg.steps, row)
        t_report, reported_step = time.perf_counter(), step + 1
      if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
        save()
      if isinstance(batch, Exception):
        raise batch
  except TrainingError:
    raise
  except Exception as err:
    where = keep_work()
    try:
      partial = result()
    except Exception:  # the state is gone with the failed step; the checkpoint remains
      partial = None
    wrapped = TrainingError(f"training stopped after step {start + len(history)}: {err}{where}")
    wrapped.result = partial
    raise wrapped from err
  except BaseException:  # KeyboardInterrupt: keep the work, then let it through
    keep_work()
    raise
  finally:
    bar.close()
  if on_progress is not None and history and reported_step != history[-1]["step"]:
    on_progress(history[-1]["step"], cfg.steps, history[-1])
  if history or (workdir is not None and checkpoint.latest(workdir) is None):
    save()
  return result()


def enhance(params, model_cfg: SeanetConfig, x, condition=None) -> np.ndarray:
  """Runs a trained hearing aid on a waveform of any length.

  Args:
    params: SEANet parameters (TrainResult.params, checkpoint.restore_params, ...).
    model_cfg: The SeanetConfig they belong to.
    x: Waveform, shape [n_samp] or [batch, n_samp], digital units (rms 1.0 = 100 dB SPL).
    condition: FiLM vector for a conditioned model.

  Returns:
    Aided waveform, float32 numpy, same shape as x, digital units (levels are not normalised).

  Raises:
    ParameterError: bad shapes, non-finite samples or a wrong model_cfg.
  """
  if not isinstance(model_cfg, SeanetConfig):
    raise ParameterError(f"model_cfg: expected a SeanetConfig, got {type(model_cfg).__name__}")
  x = np.asarray(x, np.float32)
  if x.ndim not in (1, 2) or x.shape[-1] == 0:
    raise ParameterError(f"x: expected a waveform of shape [n_samp] or [batch, n_samp], got "
                         f"shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ParameterError("x: contains NaN or inf samples")
  return np.asarray(apply_to_recording(params, model_cfg, x, condition))
