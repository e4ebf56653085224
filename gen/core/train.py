"""The generic training loop over a family's pure functions.

`train(config, workdir)` initializes (or resumes) the state, then runs the family's
`train_step` compiled once with `jax.jit` (state donated and replicated, the batch
sharded over the `data` mesh axis). Along the way it logs metrics one step late so the
device never waits on the host, stops on a non-finite loss, evaluates, writes sample
grids, and checkpoints the state together with the data iterator's position. SIGTERM
or SIGINT makes it checkpoint at the next step boundary and return.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gen.core import config as config_lib
from gen.core import images as images_lib
from gen.core import parallel, stop, xla
from gen.core.checkpoint import Checkpointer, CheckpointError, abstract_like, data_checker
from gen.core.data import Data, postprocess
from gen.core.logging import MetricWriter, progress
from gen.core.family import DataSpec, TrainState
from gen.core.lora import LoraState
from gen.core.lora import summary as lora_summary
from gen.core.runs import CONFIG_FILE, build, complete, keys, load_workdir, open_data
from gen.core.workdir import workdir_lock

log = logging.getLogger("gen")

class TrainingError(RuntimeError):
  """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


def _is_loss(name: str) -> bool:
  return name == "loss" or name.startswith("loss_") or name.endswith("_loss")


def evaluate(eval_fn, state, data: Data, put, rng, max_batches: int = 0,
             bar: bool = False, batch_size: int | None = None) -> dict[str, float]:
  """Averages the per-example metrics of `eval_fn` over the eval split (padding masked)."""
  sums: dict[str, float] = {}
  count = 0.0
  bs = batch_size or data.cfg.eval_batch_size
  pbar = progress(data.num_eval_batches(max_batches, bs), 0, bar)
  for i, batch in enumerate(data.eval_batches(max_batches, batch_size)):
    batch = put(batch)
    out, mask = parallel.to_host((eval_fn(state, batch, jax.random.fold_in(rng, i)),
                                  batch["mask"]))
    for k, v in out.items():
      v = np.asarray(v, np.float64)
      if v.ndim == 0:
        raise ValueError(f"eval_step must return per-example values; '{k}' is a scalar")
      sums[k] = sums.get(k, 0.0) + float((v * mask).sum())
    count += float(mask.sum())
    pbar.update(1)
  pbar.close()
  out = {k: v / count for k, v in sums.items()}
  out["num_examples"] = int(count)
  return out


class _Run:
  """Everything one call to `train` holds: compiled functions, data, writers."""

  def __init__(self, config, workdir: str):
    self.config, self.workdir = config, workdir
    # Data errors surface before anything is written. A resumed run reuses what its data
    # saved (e.g. a vocabulary); a fine-tuning run (`init_from`) that of the run it starts from.
    self.data = open_data(config, reuse=(workdir, config.get("init_from", "")))
    _ = self.data.eval_source  # Open every split now: a bad file fails before step 0.
    self.spec = self.data.spec
    self.pipeline = build(config, self.spec)
    pc = config.get("parallel") or config_lib.base_config().parallel
    if pc.mode not in parallel.MODES:
      raise config_lib.ConfigError(
          f"parallel.mode must be one of {parallel.MODES}, got '{pc.mode}'")
    if pc.mode == "pmap" and pc.fsdp != 1:
      raise config_lib.ConfigError("parallel.fsdp > 1 needs parallel.mode='jit'")
    if pc.mode == "pmap" and jax.process_count() > 1:
      raise config_lib.ConfigError("parallel.mode='pmap' runs on one process; use 'jit' "
                                   "across hosts")
    self.pc = pc
    self.mesh = parallel.make_mesh(pc.fsdp)
    parallel.check_batch_size(config.data.batch_size, self.mesh)
    # Eval batches are padded (and the padding masked), so round them up to fill every device.
    n = self.mesh.devices.size
    self.eval_batch_size = -(-config.data.eval_batch_size // n) * n
    self.repl = parallel.replicated(self.mesh)
    self.bsh = parallel.batch_sharding(self.mesh)
    self.keys = keys(config.seed)
    p = self.pipeline
    self.eval_step = xla.jit(p.eval_step, p.compiler_options)
    num = config.train.num_samples
    self.sample = None
    if p.sample is not None:
      self.sample = xla.jit(lambda params, rng: p.sample(params, rng, num), p.compiler_options)
    self.visualize = xla.jit(p.visualize, p.compiler_options) if p.visualize else None
    self.all_finite = jax.jit(lambda t: jnp.all(jnp.array(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(t)
         if jnp.issubdtype(x.dtype, jnp.inexact)] or [jnp.array(True)])))

  def put(self, batch):
    return parallel.put_batch(batch, self.bsh)

  def put_train(self, batch):
    """A training batch as the compiled step takes it (pmap: split per device)."""
    if self.pc.mode == "pmap":
      return parallel.split_batch(batch, jax.local_device_count())
    return self.put(batch)

  def view(self, state):
    """The state as eval, sampling and checkpoints see it: one (possibly sharded) copy."""
    return parallel.unstack(state, self.mesh) if self.pc.mode == "pmap" else state

  def init_or_restore(self, ckpt: Checkpointer, iterator):
    """The state (fresh, pre-trained or resumed), placed for the step, and its step."""
    example = self.put(self.data.example_batch())
    abstract = jax.eval_shape(self.pipeline.init, self.keys["init"], example)
    shardings = self.repl
    if self.pc.mode == "jit":
      shardings = parallel.state_shardings(abstract, self.mesh, self.pc.fsdp_min_size)
    # An unreadable checkpoint (its arrays, or an iterator state this iterator refuses) is
    # moved aside: the run goes on from the previous one and writes that step again.
    restored = ckpt.restore(abstract_like(abstract, shardings),
                            check_data=data_checker(iterator), move_aside=True)
    if restored is not None:
      start, state, _ = restored  # The checker has put the iterator at its saved position.
      log.info("resumed from step %d in %s", start, ckpt.directory)
    else:
      start = 0
      state = jax.jit(self.pipeline.init, out_shardings=shardings)(self.keys["init"], example)
      if self.config.get("init_from", ""):
        state = self._load_pretrained(state, self.config.init_from)
    if self.pc.mode == "pmap":
      return parallel.stack(state), start
    self.state_shardings = shardings
    return state, start

  def compile_step(self, state, batch):
    """Compiles the train step for `state` and a batch like `batch`; logs its memory."""
    p = self.pipeline
    if self.pc.mode == "pmap":
      def pmap_step(state, batch, key):
        key = jax.random.fold_in(jax.random.fold_in(key, state.step), jax.lax.axis_index("d"))
        with parallel.pmap_axis("d"):
          state, metrics = p.train_step(state, batch, key)
        return state, jax.lax.pmean(metrics, "d")

      fn = jax.pmap(pmap_step, axis_name="d", in_axes=(0, 0, None), donate_argnums=0)
    else:
      def step(state, batch, key):
        return p.train_step(state, batch, jax.random.fold_in(key, state.step))

      fn = jax.jit(step, in_shardings=(self.state_shardings, self.bsh, self.repl),
                   out_shardings=(self.state_shardings, self.repl), donate_argnums=0)
    compiled = fn.lower(state, batch, self.keys["train"]).compile(
        xla.for_backend(p.compiler_options))
    parallel.barrier("compiled_step")
    view = self.view(state)
    params = getattr(view, "base", None) if isinstance(view, LoraState) else getattr(
        view, "params", None)
    log.info("%s", parallel.memory_report(view, compiled, params))
    return compiled

  def _load_pretrained(self, state, source: str):
    """Puts the params of `source`'s newest checkpoint (EMA when kept) into `state`."""
    _, _, src_pipeline, src_state, src_step = load_workdir(source)
    params = src_pipeline.sample_params(src_state)
    _check_fits(params, self.pipeline.sample_params(state), source)
    params = jax.device_put(params, self.repl)
    if self.pipeline.load_pretrained is not None:
      state = self.pipeline.load_pretrained(state, params)
    elif not isinstance(state, TrainState):
      raise CheckpointError(f"config.family='{self.config.family}' keeps no single params "
                            "tree and defines no load_pretrained: init_from is not supported")
    else:
      ema = None if state.ema_params is None else jax.tree.map(jnp.copy, params)
      state = state.replace(params=params, ema_params=ema)
    log.info("initialized from step %d of %s", src_step, source)
    return state

  def write_samples(self, state, step: int, writer: MetricWriter, bar=None) -> list[str]:
    """Samples to `images/samples_STEP.*` and `samples.*`, in the family's own files
    (`write_samples`) or as an image grid, and the family's pictures (`visualize`)."""
    p = self.pipeline
    parallel.barrier("samples")
    pictures = {}
    if self.sample is not None:
      pictures["samples"] = self.sample(p.sample_params(state), self.keys["sample"])
    if self.visualize is not None:
      batch = next(self.data.eval_batches(1, self.eval_batch_size))
      pictures.update(self.visualize(state, self.put(batch), self.keys["sample"]))
    pictures = {k: parallel.to_host(v) for k, v in pictures.items()}
    paths = []
    if jax.process_index() != 0:
      return paths
    if p.write_samples is not None and "samples" in pictures:
      samples = pictures.pop("samples")
      p.write_samples(samples, os.path.join(self.workdir, "images", f"samples_{step:07d}"))
      paths += p.write_samples(samples, os.path.join(self.workdir, "samples"))
      if p.preview is not None:
        text = p.preview(samples)
        writer.text(step, "samples", text)
        if bar is not None:
          bar.write(f"step {step} sample: " + text[:300].replace("\n", "\n  "))
    for name, imgs in pictures.items():
      pic = images_lib.grid(postprocess(np.asarray(imgs), self.spec.preprocess))
      images_lib.save_png(os.path.join(self.workdir, "images", f"{name}_{step:07d}.png"), pic)
      paths.append(images_lib.save_png(os.path.join(self.workdir, f"{name}.png"), pic))
      writer.image(step, name, pic)
    return paths


def _shapes(tree) -> dict[str, tuple]:
  return {jax.tree_util.keystr(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _check_fits(params, like, source: str) -> None:
  """Raises a CheckpointError listing every param of `params` that does not fit `like`."""
  want, got = _shapes(like), _shapes(params)
  problems = [f"{k}: {want[k]} here, {got.get(k, 'missing')} in {source}"
              for k in want if got.get(k) != want[k]]
  problems += [f"{k}: not in this model" for k in got if k not in want]
  if problems:
    raise CheckpointError(f"init_from={source}: its params do not fit this model:\n  "
                          + "\n  ".join(problems[:20]))


def _write_run_files(config, workdir: str, data: Data) -> None:
  if jax.process_index() != 0:
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{os.getpid()}")
    open(probe, "w").close()
    os.remove(probe)
  except OSError as e:
    raise TrainingError(f"cannot write the workdir {workdir}: {e.strerror or e}") from None
  data.save(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  new = config_lib.to_json(config)
  if os.path.exists(path):
    with open(path) as f:
      old = f.read().strip()
    if old != new.strip():
      before, after = json.loads(old), json.loads(new)
      diff = sorted(k for k in set(config_lib.flat_keys(config_lib.ConfigDict(before)))
                    | set(config_lib.flat_keys(config)) if _get(before, k) != _get(after, k))
      log.warning("config differs from the one %s was started with (%s); using the new one",
                  workdir, ", ".join(diff) or "formatting")
  with open(path, "w") as f:
    f.write(new + "\n")
  data.spec.save(workdir)


def _get(d, dotted):
  for k in dotted.split("."):
    if not isinstance(d, dict) or k not in d:
      return None
    d = d[k]
  return d


# Keys whose change on a restart would not fit the saved state: refused, nothing written.
SHAPE_KEYS = ("family", "model")


def check_restart(config, workdir: str, spec: DataSpec) -> None:
  """Raises a ConfigError naming the keys when `workdir` holds a run of another family, model
  or data layout than `config` would make (other changes are logged when the files are
  written)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return
  with open(path) as f:
    before = json.load(f)
  before = complete(before)  # The keys its family added since, as such runs had them.
  after = json.loads(config_lib.to_json(config))
  names = set(config_lib.flat_keys(config_lib.ConfigDict(before))) | set(config_lib.flat_keys(config))
  diff = sorted(k for k in names if k.split(".")[0] in SHAPE_KEYS and _get(before, k) != _get(after, k))
  diff += _lora_changes(before, after)
  old_spec = DataSpec.load(workdir)
  if old_spec is not None and old_spec != spec:
    diff += [f"data ({f})" for f in ("shape", "num_classes", "preprocess", "kind", "fields",
                                     "extra") if getattr(old_spec, f) != getattr(spec, f)]
  if diff:
    shown = ", ".join(f"{k}: {_get(before, k)!r} -> {_get(after, k)!r}" if "(" not in k else k
                      for k in diff[:8])
    raise config_lib.ConfigError(
        f"{workdir} holds a run that this config does not fit ({shown}{' ...' if len(diff) > 8 else ''}); "
        "use a new --workdir, or the same settings to resume")


# The LoRA settings that shape the state (LoRA on or off, which factors, the base's dtype).
LORA_SHAPE_KEYS = ("rank", "targets", "base_dtype")


def _lora_changes(before: dict, after: dict) -> list[str]:
  """The `optim.lora` keys whose change would not fit the saved state (a run saved before
  the section existed had LoRA off)."""
  old, new = _get(before, "optim.lora") or {}, _get(after, "optim.lora") or {}
  if not old.get("rank") and not new.get("rank"):
    return []
  return [f"optim.lora.{k}" for k in LORA_SHAPE_KEYS if old.get(k) != new.get(k)]


@contextlib.contextmanager
def _removed_on_failure(workdir: str):
  """Takes back what a run wrote into `workdir` if it fails before its first training step
  (a value that only fails when compiled, say): a failed start leaves the folder as it was.
  The caller sets `started["step"]` once a step has run."""
  existed = os.path.isdir(workdir)
  before = set(os.listdir(workdir)) if existed else set()
  started = {"step": False}
  try:
    yield started
  except Exception:
    folder = os.path.join(workdir, "checkpoints")
    saved = os.path.isdir(folder) and any(d.isdigit() for d in os.listdir(folder))
    if not (saved or started["step"]) and jax.process_index() == 0 and os.path.isdir(workdir):
      if not existed:
        shutil.rmtree(workdir, ignore_errors=True)
      else:
        for name in set(os.listdir(workdir)) - before:
          target = os.path.join(workdir, name)
          if os.path.isdir(target):
            shutil.rmtree(target, ignore_errors=True)
          else:
            os.remove(target)
    raise


def train(config, workdir: str, *, stop_at_step: int | None = None,
          handle_signals: bool = True) -> Any:
  """Trains `config` in `workdir`, resuming from its latest checkpoint. Returns the state.

  `stop_at_step` stops early as if preempted there (checkpoint, then return); tests use
  it to compare an interrupted run with a straight one. The signal handlers are installed
  first, and nothing is written until the config, the data (every split) and the pipeline
  are built and checked against what the workdir already holds.
  """
  with stop.on_signals(handle_signals) as flag:
    run = _Run(config, workdir)
    check_restart(config, workdir, run.spec)
    # One run per workdir; the lock is taken before anything is written into it.
    with workdir_lock(workdir, jax.process_index()), _removed_on_failure(workdir) as started:
      return _train(config, workdir, run, flag, stop_at_step, started)


def _train(config, workdir: str, run: _Run, flag: dict, stop_at_step: int | None,
           started: dict) -> Any:
  tc = config.train
  _write_run_files(config, workdir, run.data)
  ckpt = Checkpointer(workdir, keep=tc.keep_checkpoints, async_save=tc.async_checkpoints)
  writer = MetricWriter(workdir)
  iterator = run.data.train_iterator()
  state, start = run.init_or_restore(ckpt, iterator)
  if isinstance(run.view(state), LoraState):
    log.info("%s", lora_summary(run.view(state)))
  n_params = sum(x.size for x in jax.tree.leaves(run.pipeline.sample_params(run.view(state))))
  log.info("%s: %s params, %d devices (%s, mesh %s), global batch %d, steps %d -> %d",
           config.family, f"{n_params:,}", run.mesh.devices.size, run.pc.mode,
           dict(run.mesh.shape), config.data.batch_size, start, tc.num_steps)
  step_fn = None

  last_saved = start if start else None
  bar = progress(tc.num_steps, start, tc.progress)
  sums: dict[str, float] = {}
  n_summed, t_log = 0, time.time()
  pending = None  # (step, device metrics) of the previous step: fetched one step late.

  def drain():
    """Fetches the pending metrics, stops on a non-finite loss, logs every `log_every`."""
    nonlocal pending, sums, n_summed, t_log
    if pending is None:
      return
    s, metrics = pending
    pending = None
    values = jax.device_get(metrics)
    for k, v in values.items():
      if _is_loss(k) and not np.all(np.isfinite(v)):
        ckpt.wait()
        raise TrainingError(
            f"non-finite {k}={float(np.asarray(v).ravel()[0])} at step {s}; stopped. "
            f"The last good checkpoint is step {last_saved} in {ckpt.directory}.")
      sums[k] = sums.get(k, 0.0) + float(np.mean(v))
    n_summed += 1
    if (tc.log_every and s % tc.log_every == 0) or s == tc.num_steps:
      now = time.time()
      means = {k: v / n_summed for k, v in sums.items()}
      means["steps_per_sec"] = n_summed / max(now - t_log, 1e-9)
      writer.write(s, means)
      bar.set_postfix({k: f"{v:.4f}" for k, v in means.items() if _is_loss(k)}, refresh=False)
      if not getattr(bar, "live", True) and tc.progress:  # No terminal: one line instead.
        log.info("step %d/%d: %s, %.2f steps/s", s, tc.num_steps, ", ".join(
            f"{k} {v:.4f}" for k, v in means.items() if _is_loss(k)), means["steps_per_sec"])
      sums, n_summed, t_log = {}, 0, now

  def save(s: int):
    nonlocal last_saved
    drain()
    view = run.view(state)
    if not bool(run.all_finite(view)):
      ckpt.wait()
      raise TrainingError(f"non-finite parameters at step {s}; not saved. The last good "
                          f"checkpoint is step {last_saved} in {ckpt.directory}.")
    ckpt.save(s, view, {"iterator": iterator.get_state(), "step": s})
    last_saved = s

  def run_eval(s: int):
    drain()
    parallel.barrier("eval")
    metrics = evaluate(run.eval_step, run.view(state), run.data, run.put, run.keys["eval"],
                       tc.eval_batches, batch_size=run.eval_batch_size)
    metrics.update(run.data.derived_metrics(metrics))
    writer.write(s, metrics, split="eval")
    bar.write(f"step {s} eval: " + ", ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))

  stopped_by = None
  sync = parallel.StopSync()
  try:
    # The loop; a signal anywhere since `train` began stops it at a step boundary.
    for step in range(start, tc.num_steps):
      batch = run.put_train(next(iterator))
      if step_fn is None:
        step_fn = run.compile_step(state, batch)
      state, metrics = step_fn(state, batch, run.keys["train"])
      started["step"] = True
      drain()  # The previous step's metrics; this step runs meanwhile.
      s = step + 1
      pending = (s, metrics)
      bar.update(1)
      if tc.eval_every and s % tc.eval_every == 0 and s != tc.num_steps:
        run_eval(s)
      if tc.sample_every and s % tc.sample_every == 0 and s != tc.num_steps:
        run.write_samples(run.view(state), s, writer, bar)
      signalled = sync.should_stop(s, flag["signal"] is not None)
      preempted = signalled or (stop_at_step is not None and s >= stop_at_step)
      if (tc.checkpoint_every and s % tc.checkpoint_every == 0) or preempted:
        save(s)
      if preempted:
        stopped_by = ((flag["signal"] or "another process's signal") if signalled
                      else f"stop_at_step={stop_at_step}")
        break
    drain()
    final = run.view(state)
    end = int(jax.device_get(final.step))
    if stopped_by is None:
      if last_saved != end:
        save(end)
      run_eval(end)
      paths = run.write_samples(final, end, writer, bar)
      bar.close()
      log.info("done at step %d; wrote %s", end, ", ".join(paths))
    else:
      bar.close()
      log.info("stopped by %s at step %d; checkpoint saved, re-run the same command to resume",
               stopped_by, end)
  except BaseException:
    bar.close()
    for close in (ckpt.close, writer.close):  # Their errors would hide the one raised here.
      try:
        close()
      except Exception as e:
        log.warning("while stopping: %s: %s", type(e).__name__, (str(e) or " ").splitlines()[0])
    raise
  bar.close()
  ckpt.close()
  writer.close()
  return final
