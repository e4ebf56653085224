"""`gen train | sample | eval`: parse flags, load the config, call the core.

  gen train --config=FILE[:ARG]|WORKDIR --workdir=DIR [--config.a.b=VALUE ...]
            [--coordinator=auto | --coordinator=HOST:PORT --num_processes=N --process_id=I]
  gen sample --workdir=DIR [--num=N] [--out=FILE] [--seed=0] [--step=N] [--ncol=N] [--KEY=VALUE ...]
  gen eval --workdir=DIR [--num_batches=N] [--out=FILE.json] [--config.a.b=VALUE ...]
  gen eval --workdir=DIR --metric=fd|fid [--num_samples=10000] [--fd_classifier=DIR]
           [--inception=WEIGHTS] [--reference=train] [--real=SPLIT] [--KEY=VALUE ...]
  gen eval --workdir=DIR --metric=captions --judge=DIR [--guidance=0,1,2,4] [--num_samples=N]
           [--batch_size=B] [--real=test,test_held_out [--autoencoder=DIR]] [--KEY=VALUE ...]
  gen import --from=FOLDER --workdir=DIR [--config.a.b=VALUE ...]
  gen import --lora=ADAPTER --from=WORKDIR --workdir=DIR [--scale=1.0]
  gen export --workdir=DIR --to=FOLDER [--step=N] [--lora=ADAPTER_FOLDER]
  gen export --workdir=DIR --lora=ADAPTER_FOLDER [--step=N]

`--config=WORKDIR` starts from a run's own config (an imported model's, with
`--config.init_from=WORKDIR` to fine-tune it). Flags are absl-style (`--name=value`). In `gen sample`, flags it does not know go to the
family: its sampler's keyword arguments (e.g. `--sampler=heun --steps=18` for a diffusion
model, `--max_new_tokens=500 --temperature=0.8` for a language model) and the flags the
family reads itself (a language model's `--prompt=TEXT` / `--prompt_file=FILE`, a
text-to-image run's `--prompt`, `--negative_prompt` and `--init_image`, a diffusion model's
`--classifier=WORKDIR`); so are they in `gen eval --metric=fd|fid`.
`gen eval --metric=captions` asks a text-to-image run for images of the captions of a captioned
dataset (`captions:NAME`) and has a judge run (`gen.classifier.configs.captions_mnist`) read them
back: the share of faithful images per guidance scale, on seen and held-out compositions
(`gen.eval.captions`); `--real` scores the real scenes instead (with `--autoencoder=DIR`, after a
round trip through that autoencoder run's latents: a latent run's ceiling).
`--num` defaults to 64 images, or what the family chooses (a language model: 4 samples, or
1 per prompt). Samples are written as an image grid, or as the family's own files (text;
MIDI, WAV and a piano roll for music). `gen import` turns another library's checkpoint
folder into a new workdir (the family whose importer reads it does the work; see
`gen.core.interop`): it is written whole or not at all; `gen import --lora` writes a new
workdir with a LoRA adapter (PEFT's, for a language model; a diffusers or kohya file, for a
Stable Diffusion run) merged into another run's weights, times `--scale`. `gen export` writes a
run back as another library's folder, when its family can express it; a LoRA run is written
merged, or with `--lora=FOLDER` as its frozen base (`--to`) and its adapter (`--lora`); with
`--lora` alone only the adapter is written (a Stable Diffusion LoRA run's: the diffusion family
exports no base).
Exit codes: 0 success, 1 a run failed (data, checkpoint, non-finite loss), 2 bad usage or
config.
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import os
import sys
import time

USAGE = __doc__.split("\n\n")[1]


class UsageError(ValueError):
  pass


def _parse(argv, flags: dict[str, object], allow_config=False, allow_extra=False):
  """Parses `--name=value` flags. Returns (values, config_overrides, extra)."""
  values = dict(flags)
  overrides, extra = [], {}
  for arg in argv:
    if not arg.startswith("--"):
      raise UsageError(f"unexpected argument '{arg}' (flags look like --name=value)")
    name, eq, value = arg[2:].partition("=")
    if allow_config and name.startswith("config."):
      if not eq:
        raise UsageError(f"'{arg}' needs a value: --{name}=VALUE")
      overrides.append(arg)
    elif name in flags:
      if not eq and not isinstance(flags[name], bool):
        raise UsageError(f"flag --{name} needs a value: --{name}=VALUE")
      default = flags[name]
      if isinstance(default, bool):
        values[name] = (value.lower() not in ("0", "false", "no")) if eq else True
      elif isinstance(default, int) and default is not None:
        try:
          values[name] = int(value)
        except ValueError:
          raise UsageError(f"flag --{name} expects an integer, got '{value}'") from None
      else:
        values[name] = value
    elif allow_extra:
      try:
        extra[name] = ast.literal_eval(value) if eq else True
      except (ValueError, SyntaxError):
        extra[name] = value
    else:
      known = ", ".join(f"--{f}" for f in flags)
      raise UsageError(f"unknown flag '--{name}' (known: {known})")
  return values, overrides, extra


def _require(values, *names):
  for n in names:
    if not values.get(n):
      raise UsageError(f"--{n} is required")


def _setup_jax():
  import jax

  cache = os.environ.get("GEN_COMPILATION_CACHE",
                         os.path.join(os.path.expanduser("~"), ".cache", "gen", "jax"))
  if cache and cache.lower() not in ("0", "off", "none"):
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def cmd_train(argv):
  from gen.core import stop

  stop.catch_early()  # (`main` did already; a no-op then.)
  try:
    return _train(argv)
  finally:
    stop.release_early()


def _train(argv):
  from gen.core import config as config_lib
  from gen.core import train

  flags = {"config": "", "workdir": "", "coordinator": "", "num_processes": 0,
           "process_id": -1, "coordinator_bind": ""}
  values, overrides, _ = _parse(argv, flags, allow_config=True)
  _require(values, "config", "workdir")
  if os.path.isdir(values["config"]):  # A workdir: its config (e.g. an imported model's).
    from gen.core import runs

    config = runs.load_config(values["config"])
    config.unlock()
    config_lib.apply_overrides(config, overrides)
    config_lib.validate(config)
    config.lock()
  else:
    config = config_lib.load(values["config"], overrides)  # Errors here write nothing.
  if values["coordinator"]:  # Multi-host: before anything touches a device.
    from gen.core import parallel

    try:
      parallel.initialize_distributed(values["coordinator"], values["num_processes"],
                                      values["process_id"], values["coordinator_bind"])
    except ValueError as e:
      raise UsageError(str(e)) from None
  _setup_jax()
  train.train(config, values["workdir"])
  return 0

def cmd_sample(argv):
  values, _, extra = _parse(
      argv, {"workdir": "", "num": 0, "out": "", "seed": 0, "step": -1, "ncol": 0},
      allow_extra=True)
  _require(values, "workdir")
  given = {a[2:].partition("=")[0] for a in argv}
  if "num" in given and values["num"] < 1:  # (Absent: the family's default number.)
    raise UsageError(f"--num must be a positive integer, got {values['num']}")
  if values["ncol"] < 0:
    raise UsageError(f"--ncol must be >= 0 (0: a square grid), got {values['ncol']}")
  _check_out_folder(values["out"])
  _setup_jax()
  import jax

  from gen.core import images, runs

  config, spec, pipeline, state, step = runs.load_workdir(
      values["workdir"], step=None if values["step"] < 0 else values["step"])
  if pipeline.sample is None:
    raise UsageError(f"the {config.family} family draws no samples")
  num, kwargs = values["num"] or 64, dict(extra)
  if pipeline.sample_options is not None:  # The family's flags (prompts, a classifier...).
    try:
      num, kwargs = pipeline.sample_options(values["num"], kwargs)
    except OSError as e:  # A --prompt_file that is not there.
      raise UsageError(f"{e.filename}: {e.strerror}" if e.filename else str(e)) from None
    except ValueError as e:
      raise UsageError(str(e)) from None
  _check_sampler_args(pipeline, kwargs, config.family)
  t0 = time.time()
  try:
    fn = runs.compile_sampler(pipeline, num, kwargs)
    x = jax.device_get(fn(pipeline.sample_params(state), jax.random.key(values["seed"])))
  except ValueError as e:  # Bad sampler values, a prompt longer than the context.
    raise UsageError(str(e)) from None
  seconds = time.time() - t0
  ext = ".png" if pipeline.write_samples is None else ".txt"
  out = values["out"] or os.path.join(values["workdir"], f"samples_step{step}{ext}")
  if pipeline.write_samples is None:
    paths = [images.save_grid(out, postprocess_for(spec, x), values["ncol"] or None)]
  else:
    paths = pipeline.write_samples(x, out)
  if pipeline.preview is not None:
    print(pipeline.preview(x))
  print(f"wrote {num} samples from step {step} to {', '.join(paths[:4])}"
        f"{' ...' if len(paths) > 4 else ''} ({seconds:.1f}s)", file=sys.stderr)
  return 0


def _check_out_folder(out: str) -> None:
  """Before anything is computed: `--out` must be in a folder that exists."""
  folder = os.path.dirname(os.path.abspath(out)) if out else ""
  if folder and not os.path.isdir(folder):
    raise UsageError(f"--out={out}: the folder {folder} does not exist")


def postprocess_for(spec, x):
  from gen.core.data import postprocess

  return postprocess(x, spec.preprocess)


def _check_sampler_args(pipeline, extra, family):
  params = set(inspect.signature(pipeline.sample).parameters)
  unknown = sorted(set(extra) - params)
  if unknown:
    known = sorted(params - {"params", "rng", "num"})
    raise UsageError(f"the {family} sampler takes no argument(s) "
                     f"{', '.join('--' + u for u in unknown)}"
                     f" (it takes: {', '.join('--' + k for k in known) or 'none'})")


EVAL_FLAGS = {"workdir": "", "num_batches": 0, "out": "", "step": -1, "batch_size": 0,
              "metric": "", "num_samples": 10000, "fd_classifier": "", "inception": "",
              "reference": "train", "real": "", "data": "", "seed": 0, "judge": "",
              "autoencoder": ""}


def cmd_eval(argv):
  values, overrides, extra = _parse(argv, EVAL_FLAGS, allow_config=True, allow_extra=True)
  if values["metric"] == "captions":
    return _eval_captions(values, overrides, extra)
  for name in ("judge", "autoencoder"):
    if values[name]:
      raise UsageError(f"--{name}=DIR goes with --metric=captions")
  if values["metric"] in ("fd", "fid"):
    return _eval_samples(values, overrides, extra)
  if values["metric"]:
    raise UsageError(f"--metric must be fd or fid (sample quality), captions (a judge reads "
                     f"the images of captions) or absent (the eval split's metrics), got "
                     f"'{values['metric']}'")
  if extra:
    known = ", ".join(f"--{f}" for f in EVAL_FLAGS)
    raise UsageError(f"unknown flag '--{next(iter(extra))}' (known: {known})")
  _require(values, "workdir")
  for name in ("num_batches", "batch_size"):
    if values[name] < 0:
      raise UsageError(f"--{name} must be >= 0 (0: the whole split, the config's size), "
                       f"got {values[name]}")
  _setup_jax()
  import jax

  from gen.core import parallel, runs, train, xla
  from gen.eval import likelihood

  config, spec, pipeline, state, step = runs.load_workdir(
      values["workdir"], overrides, step=None if values["step"] < 0 else values["step"])
  data = runs.open_data(config, reuse=(values["workdir"],))
  mesh = parallel.make_mesh()
  bsh = parallel.batch_sharding(mesh)
  eval_fn = xla.jit(pipeline.final_eval_step or pipeline.eval_step, pipeline.compiler_options)
  t0 = time.time()
  metrics = train.evaluate(eval_fn, state, data, lambda b: parallel.put_batch(b, bsh),
                           jax.random.key(config.seed + 1), values["num_batches"], bar=True,
                           batch_size=values["batch_size"] or None)
  metrics.update(data.derived_metrics(metrics))
  metrics.update(likelihood.units(metrics, spec))
  convention = likelihood.convention(metrics, spec)
  result = {"step": step, "family": config.family, "data": config.data.name,
            "split": config.data.eval_split, **metrics, "seconds": round(time.time() - t0, 1)}
  if convention:
    result["convention"] = convention
  out = values["out"] or os.path.join(values["workdir"], "eval.json")
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))
  print(f"wrote {out}", file=sys.stderr)
  return 0


def _eval_samples(values, overrides, extra):
  """`gen eval --metric=fd|fid`: sample, featurize, compare with the real reference split."""
  if not values["workdir"] and not (values["real"] and values["data"]):
    raise UsageError("--workdir is required (or --real=SPLIT with --data=NAME)")
  if values["num_samples"] < 2:
    raise UsageError(f"--num_samples must be >= 2, got {values['num_samples']}")
  _setup_jax()
  from gen.eval import fd

  try:  # Its ValueErrors are about the arguments: no feature network, a grid sampler...
    result = fd.evaluate(
        values["workdir"], metric=values["metric"], num_samples=values["num_samples"],
        batch=values["batch_size"] or 500, seed=values["seed"],
        step=None if values["step"] < 0 else values["step"], ref_split=values["reference"],
        real_split=values["real"], dataset=values["data"],
        classifier=values["fd_classifier"], inception=values["inception"], overrides=overrides,
        sampler_args=extra, check_args=_check_sampler_args)
  except ValueError as e:
    raise UsageError(str(e)) from None
  out = values["out"] or (os.path.join(values["workdir"], f"{values['metric']}.json")
                          if values["workdir"] else f"{values['metric']}-{values['data']}.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))
  print(fd.summary(result))
  if "warning" in result:
    print(result["warning"], file=sys.stderr)
  print(f"wrote {out}", file=sys.stderr)
  return 0


def _guidance_scales(value) -> tuple:
  """`--guidance=2` or `--guidance=0,1,2,4` as a tuple of floats; absent: (None,), the run's
  default."""
  if value is None:
    return (None,)
  scales = value if isinstance(value, (tuple, list)) else (value,)
  if not scales or not all(isinstance(g, (int, float)) and not isinstance(g, bool)
                           for g in scales):
    raise UsageError(f"--guidance takes a number or numbers joined by ',' (0,1,2,4), got "
                     f"'{value}'")
  return tuple(float(g) for g in scales)


def _eval_captions(values, overrides, extra):
  """`gen eval --metric=captions`: a run's images of captions, read back by a judge run."""
  _require(values, "judge")
  if not values["workdir"] and not values["real"]:
    raise UsageError("--metric=captions scores --workdir=RUN (or the real scenes: "
                     "--real=test,test_held_out)")
  if values["num_samples"] < 2:
    raise UsageError(f"--num_samples must be >= 2, got {values['num_samples']}")
  if values["batch_size"] < 0:
    raise UsageError(f"--batch_size must be >= 0 (0: 500), got {values['batch_size']}")
  real = tuple(s for s in values["real"].split(",") if s)
  if real and extra:
    raise UsageError(f"--real scores real scenes: it takes no sampler flag (got "
                     f"--{next(iter(extra))})")
  guidance = _guidance_scales(extra.pop("guidance", None))
  _check_out_folder(values["out"])
  _setup_jax()
  from gen.eval import captions

  batch = values["batch_size"] or 500
  try:  # Its ValueErrors are about the arguments: no judge, a run that takes no captions...
    judge = captions.load_judge(values["judge"], batch)
    through = None
    if values["autoencoder"]:
      if not real:
        raise ValueError("--autoencoder=RUN sends the real scenes through its latents: it goes "
                         "with --real=SPLITS")
      through = captions.load_autoencoder(values["autoencoder"], batch)
    run = None
    if not real:
      run = captions.load_run(values["workdir"], overrides,
                              None if values["step"] < 0 else values["step"])
    result = captions.evaluate(judge, run, guidance=guidance, num_samples=values["num_samples"],
                               batch=batch, seed=values["seed"], real_splits=real,
                               sampler_args=extra, check_args=_check_sampler_args,
                               through=through)
  except ValueError as e:
    raise UsageError(str(e)) from None
  folder = values["workdir"] or values["judge"]
  out = values["out"] or os.path.join(folder, "captions_real.json" if real else "captions.json")
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  print(captions.table(result))
  if "warning" in result:
    print(result["warning"], file=sys.stderr)
  print(f"wrote {out}", file=sys.stderr)
  return 0


def cmd_import(argv):
  values, overrides, _ = _parse(argv, {"from": "", "workdir": "", "lora": "", "scale": "1.0"},
                                allow_config=True)
  _require(values, "from", "workdir")
  _setup_jax()
  from gen.core import interop

  if values["lora"]:
    if overrides:
      raise UsageError("--lora keeps the run's config: no --config overrides")
    try:
      scale = float(values["scale"])
    except ValueError:
      raise UsageError(f"--scale expects a number, got '{values['scale']}'") from None
    try:
      summary = interop.import_lora(values["lora"], values["from"], values["workdir"], scale)
    except interop.InputError as e:
      raise UsageError(str(e)) from None
    print(f"{summary}\nwrote {values['workdir']}", file=sys.stderr)
    return 0
  if values["scale"] != "1.0":
    raise UsageError("--scale scales a LoRA adapter: give --lora=ADAPTER")
  try:
    importer = interop.find(values["from"])
    summary = interop.write_new_workdir(
        values["workdir"], lambda tmp: importer.write(values["from"], tmp, overrides))
  except interop.InputError as e:
    raise UsageError(str(e)) from None
  print(f"{summary}\nwrote {values['workdir']}", file=sys.stderr)
  return 0


def cmd_export(argv):
  values, _, _ = _parse(argv, {"workdir": "", "to": "", "step": -1, "lora": ""})
  _require(values, "workdir")
  if not values["to"] and not values["lora"]:
    raise UsageError("export needs --to=FOLDER, --lora=ADAPTER_FOLDER (a LoRA run) or both")
  _setup_jax()
  from gen.core import interop

  try:
    summary = interop.export(values["workdir"], values["to"],
                             None if values["step"] < 0 else values["step"], lora=values["lora"])
  except interop.InputError as e:
    raise UsageError(str(e)) from None
  wrote = " and ".join(values[k] for k in ("to", "lora") if values[k])
  print(f"{summary}\nwrote {wrote}", file=sys.stderr)
  return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "import": cmd_import,
            "export": cmd_export}


def _help(command: str, argv) -> int:
  """`gen COMMAND --help`: the command's usage lines; for `gen sample --workdir=W --help`, also
  the arguments the run's sampler takes (built from the workdir's config, nothing restored)."""
  usage, keep = [], False
  for line in USAGE.splitlines():
    if line.strip().startswith("gen "):
      keep = line.split()[1] == command
    if keep:
      usage.append(line)
  print("\n".join(usage))
  workdir = next((a.partition("=")[2] for a in argv if a.startswith("--workdir=")), "")
  if command == "sample" and workdir:
    from gen.core import runs
    from gen.core.family import DataSpec

    config = runs.load_config(workdir)
    spec = DataSpec.load(workdir)
    if spec is None:
      raise UsageError(f"no data_spec.json in {workdir}: is this a gen workdir?")
    pipeline = runs.build(config, spec)
    if pipeline.sample is None:
      print(f"\nthe {config.family} family draws no samples")
      return 0
    params = inspect.signature(pipeline.sample).parameters
    flags = [f"--{n}={p.default!r}" if p.default is not inspect.Parameter.empty else f"--{n}"
             for n, p in params.items() if n not in ("params", "rng", "num")]
    print(f"\n{config.family} sampler flags of {workdir} (default values; None: the config's):")
    print("  " + "\n  ".join(flags))
    doc = inspect.getdoc(getattr(pipeline.sample, "func", pipeline.sample)) or ""
    if doc:
      print("\n" + doc)
  return 0


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in ("-h", "--help", "help") or argv[0] not in COMMANDS:
    print(USAGE, file=sys.stderr)
    if argv and argv[0] not in ("-h", "--help", "help"):
      print(f"\ngen: unknown command '{argv[0]}'", file=sys.stderr)
      return 2
    return 0 if argv else 2
  if argv[0] == "train":  # Before the heavy imports: a SIGTERM during start-up is not lost.
    from gen.core import stop

    stop.catch_early()
  from gen.core.logging import setup_logging
  setup_logging()
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's deprecation chatter.

  from gen.core.checkpoint import CheckpointError
  from gen.core.config import ConfigError
  from gen.core.data import DataError
  from gen.core.train import TrainingError
  try:
    if any(a in ("-h", "--help") for a in argv[1:]):
      return _help(argv[0], argv[1:])
    return COMMANDS[argv[0]](argv[1:])
  except (UsageError, ConfigError) as e:
    print(f"gen {argv[0]}: error: {e}", file=sys.stderr)
    return 2
  except (DataError, CheckpointError, TrainingError) as e:
    print(f"gen {argv[0]}: error: {e}", file=sys.stderr)
    return 1
  except ValueError as e:  # Family and pipeline checks on config values.
    print(f"gen {argv[0]}: error: {type(e).__name__}: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
