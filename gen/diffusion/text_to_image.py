"""Text to image: a Stable Diffusion 1.x / 2.x pipeline as a kind (`model.kind = "text_to_image"`).

The model is three networks with diffusers' layouts (`gen.diffusion.diffusers`): CLIP's text
encoder, the AutoencoderKL and the UNet2DConditionModel, their fields in
`model.text_to_image` (`text_encoder`, `vae`, `unet`, as `gen import` writes them from a
`StableDiffusionPipeline` folder), on a `discrete` process (`diffusion.discrete`, the folder's
scheduler table; `diffusion.objective` eps or v). The run's `data_spec.json` holds the image
shape (the default height and width) and CLIP's tokenizer (`extra["tokenizer"]`).

`sample` is the text-to-image step of diffusers' StableDiffusionPipeline in one program:
the prompts' token ids through the text encoder (negative prompts as the unconditional
batch), the process's sampler (`gen.diffusion.sampling`: pndm, ddim, euler, euler_a,
dpmpp_2m, ...) on the classifier-free guided UNet output uncond + w (cond - uncond), and the
VAE's decoding of latents / scaling_factor. Guidance, step count and given latents are
traced; a new image size compiles once. `sample_options` tokenizes eagerly (`--prompt`,
`--prompt_file`, `--negative_prompt`), cutting a prompt over the tokenizer's 77 tokens as
diffusers does with one warning line. With `--init_image` (and `--strength`) it is
StableDiffusionImg2ImgPipeline's step: the image's VAE latents noised to a step of the grid
and sampled from there, in the same program.

For a notebook: `load(workdir)`, `encode(model, prompts)`, `generate(model, prompts, ...)`
(images in [0, 1] as the pipeline's `output_type="np"`; given `latents` like its `latents=`).

Training is not here yet: a run is imported (`gen import`), sampled and evaluated only.
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from gen.core import xla
from gen.core.config import ConfigError
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer
from gen.diffusion import networks, sampling, schedulers
from gen.diffusion.diffusers import autoencoder_kl, clip, stable_diffusion
from gen.diffusion.models import DTYPES

DEFAULT_NUM = 4  # Images of one --prompt without --num.
MAX_STEPS = 1000  # The longest step count img2img's strength table covers.
OBJECTIVES = ("eps", "v")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the sampler reads of the config and the data spec."""

  sampler: str
  sample_steps: int
  guidance: float
  clip_skip: int
  image_shape: tuple[int, int, int]
  max_length: int  # The tokenizer's (and text encoder's) context: ids are [B, max_length].


def tokenizer_of(spec: DataSpec) -> clip.CLIPTokenizer:
  if not spec.extra or "tokenizer" not in spec.extra:
    raise ConfigError("a text_to_image run's data_spec.json holds its tokenizer "
                      "(extra.tokenizer), as `gen import` writes it; this one has none")
  return clip.CLIPTokenizer.from_json(spec.extra["tokenizer"])


def check(config, spec: DataSpec):
  d, m = config.diffusion, config.model
  if d.schedule != "discrete" or d.objective not in OBJECTIVES:
    raise ConfigError(f"model.kind='text_to_image' samples a discrete process "
                      f"(diffusion.schedule='discrete', objective eps or v), got schedule "
                      f"'{d.schedule}', objective '{d.objective}'")
  if m.dtype not in DTYPES:
    raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got '{m.dtype}'")
  if config.train.num_steps > 0:
    raise ConfigError("model.kind='text_to_image' runs are imported (gen import) and sampled; "
                      "training one is not implemented: train.num_steps must be 0")
  if d.sampler not in networks.SAMPLER_NAMES:
    raise ConfigError(f"diffusion.sampler must be one of {', '.join(networks.SAMPLER_NAMES)}, "
                      f"got '{d.sampler}'")
  t = m.text_to_image
  if t.unet.cross_attention_dim != t.text_encoder.hidden_size:
    raise ConfigError(f"model.text_to_image.unet.cross_attention_dim = "
                      f"{t.unet.cross_attention_dim} must be the text encoder's hidden_size = "
                      f"{t.text_encoder.hidden_size}")
  if t.clip_skip < 0 or t.clip_skip >= t.text_encoder.num_hidden_layers:
    raise ConfigError(f"model.text_to_image.clip_skip must be in [0, "
                      f"{t.text_encoder.num_hidden_layers}), got {t.clip_skip}")
  check_size(t, spec.shape[0], spec.shape[1], "the data spec's image")


def multiple(t) -> int:
  """What an image's height and width must be divisible by: the VAE's downscale times the
  UNet's."""
  return 2 ** (len(t.vae.block_out_channels) - 1) * 2 ** (len(t.unet.block_out_channels) - 1)


def check_size(t, h: int, w: int, what: str = "--height / --width"):
  f = multiple(t)
  if h < 1 or w < 1 or h % f or w % f:
    raise ValueError(f"{what} {h}x{w} must be positive multiples of {f} (the VAE's and the "
                     "UNet's downscales)")


def init(sd: stable_diffusion.StableDiffusion, tx, rng, batch):
  """The three networks' params, zeros (their shapes only: an import replaces them, and no
  training starts from them here)."""
  f = sd.image_shape[0] // sd.latent_shape[0]
  ids = jnp.zeros((1, batch["ids"].shape[-1]), jnp.int32)
  shapes = {
      "text_encoder": jax.eval_shape(sd.text_encoder.init, rng, ids)["params"],
      "vae": jax.eval_shape(sd.vae.init, rng, jnp.zeros((1, 2 * f, 2 * f,
                                                          sd.vae.in_channels)))["params"],
      "unet": jax.eval_shape(sd.unet.init, rng, jnp.zeros((1, *sd.latent_shape)), 0.0,
                             jnp.zeros((1, 1, sd.text_encoder.hidden_size)))["params"]}
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return TrainState.create(params, tx, 0.0)


def not_trained(*_):
  raise ValueError("model.kind='text_to_image' has no training or eval step yet (no captioned "
                   "image data here): sample it, or use its parts")


def guided_denoiser(sd, params, process, objective, cond, uncond, w):
  """(x, t) -> (x0_hat, eps_hat) of the classifier-free guided UNet output, as the pipeline
  guides it: uncond + w (cond - uncond) when w > 1 (w may be traced), else cond alone."""
  def denoise(x, t):
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
    if uncond is None:
      raw = stable_diffusion.guided_eps(sd, params, x, t, cond)
    else:
      u, c = stable_diffusion.unet_pair(sd, params, x, t, cond, uncond)
      raw = u + w * (c - u)
      if not sampling.concrete(w):  # No guidance at w <= 1, as the pipeline (from one call).
        raw = jnp.where(w > 1, raw, c)
    a, s = (v.reshape((-1,) + (1,) * (x.ndim - 1)) for v in process.alpha_sigma(t))
    return objective.to_x0(x, raw, a, s), objective.to_eps(x, raw, a, s)
  return denoise


def sample(sd: stable_diffusion.StableDiffusion, process, objective, cfg: Settings, params, rng,
           num, ids=None, negative_ids=None, sampler=None, steps=None, guidance=None, eta=0.0,
           churn=0.0, height=0, width=0, latents=None, timesteps=None, sigmas=None,
           init_image=None, strength=0.8, decode=True):
  """`num` images of the prompts' token ids [num, L] (and negative ones; None: no guidance).
  `gen sample` makes the ids of --prompt=TEXT or --prompt_file=FILE and --negative_prompt=TEXT
  (`sample_options`).

  sampler / steps: the process's sampler and its step count (may be traced; None: the
  config's); eta (ddim), churn (euler): their options. guidance: the scale w (may be traced;
  None: diffusion.guidance); guidance at w > 1 only, as diffusers. height / width: image size
  (0: the data spec's; a multiple of the downscales). latents: the start noise [num, h, w, c]
  (unit variance: the sampler scales it as diffusers' prepare_latents does); None: drawn from
  rng. init_image: img2img (diffusers' StableDiffusionImg2ImgPipeline), images [num, H, W, 3]
  in [-1, 1] (their size is the output's): the VAE's posterior draw (from rng) times
  scaling_factor, noised to step n - min(int(n * strength), n) of the n-step grid, and
  sampled from there; `strength` a Python float, or `strength_table(strength)` (traced).
  Returns images in [-1, 1] (decode False: the final latents).
  """
  if ids is None:
    raise ValueError("the text_to_image sampler needs prompts: --prompt=TEXT or "
                     "--prompt_file=FILE")
  sampler = cfg.sampler if sampler is None else sampler
  steps = cfg.sample_steps if steps is None and timesteps is None and sigmas is None else steps
  fn, steps, opts = sampling.resolve(process, sampler, steps, eta=eta, churn=churn,
                                     timesteps=timesteps, sigmas=sigmas)
  w = cfg.guidance if guidance is None else guidance
  h, wd = (height or cfg.image_shape[0]), (width or cfg.image_shape[1])
  if init_image is not None:
    h, wd = init_image.shape[1:3]
  f = sd.image_shape[0] // sd.latent_shape[0]
  shape = (num, h // f, wd // f, sd.latent_shape[2])
  k_noise, k_run = jax.random.split(rng)
  noise = (jax.random.normal(k_noise, shape) if latents is None
           else jnp.asarray(latents, jnp.float32).reshape(shape))
  if init_image is not None:
    opts.update(img2img(sd, params, process, fn, sampler, steps, init_image, strength,
                        jax.random.fold_in(k_noise, 1)))
  ids = jnp.asarray(ids)[:num]
  if negative_ids is None or (sampling.concrete(w) and w <= 1):
    cond, uncond = stable_diffusion.encode_prompt(sd, params, ids, None, cfg.clip_skip), None
  else:
    cond, uncond = stable_diffusion.encode_prompt(sd, params, ids,
                                                  jnp.asarray(negative_ids)[:num], cfg.clip_skip)
  denoise = guided_denoiser(sd, params, process, objective, cond, uncond, w)
  x = fn(denoise, process, noise, k_run, steps, **opts)
  if not decode:
    return x
  images = stable_diffusion.decode_latents(sd, params, x)  # [0, 1], as output_type "np".
  return images * 2.0 - 1.0


def strength_table(strength: float) -> np.ndarray:
  """min(int(n * strength), n) for n = 0..MAX_STEPS, as diffusers' get_timesteps computes it
  (in float64): int32 [MAX_STEPS + 1], a traced argument in place of the float."""
  if not 0.0 <= strength <= 1.0:
    raise ValueError(f"--strength must be in [0, 1], got {strength}")
  return np.array([min(int(n * float(strength)), n) for n in range(MAX_STEPS + 1)], np.int32)


def img2img(sd, params, process, fn, sampler: str, steps, init_image, strength, rng) -> dict:
  """The sampler options (`init`, `start`) of an img2img run: the VAE's posterior draw of
  `init_image` (diffusers' retrieve_latents, sample mode) as latents, and the first step."""
  if sampler not in schedulers.IMG2IMG or sampling.table(process) is not schedulers:
    raise ValueError(f"--init_image: the sampler '{sampler}' cannot start from an image; "
                     f"img2img takes {', '.join(schedulers.IMG2IMG)}")
  table = strength_table(strength) if sampling.concrete(strength) else jnp.asarray(strength)
  n = jnp.asarray(steps, jnp.int32)
  start = jnp.maximum(n - table[jnp.minimum(n, table.shape[0] - 1)], 0)
  mean, logvar = sd.vae.apply({"params": params["vae"]}, jnp.asarray(init_image, jnp.float32),
                              method=autoencoder_kl.AutoencoderKL.encode)
  z = autoencoder_kl.sample_posterior(rng, mean, logvar)
  return {"init": autoencoder_kl.to_latents(z, sd.scaling_factor, sd.shift_factor),
          "start": start}


def read_image(path: str, num: int) -> np.ndarray:
  """A PNG (or any image PIL reads) as RGB in [-1, 1], [num, H, W, 3]."""
  from PIL import Image

  with Image.open(path) as im:
    x = np.asarray(im.convert("RGB"), np.float32) / 255.0
  return np.repeat((2.0 * x - 1.0)[None], num, axis=0)


def prompts_of(flags: dict) -> list[str]:
  """--prompt, or --prompt_file's lines (blank ones skipped)."""
  prompt, path = flags.pop("prompt", None), flags.pop("prompt_file", None)
  if (prompt is None) == (path is None):
    raise ValueError("give --prompt=TEXT or --prompt_file=FILE (one prompt a line)")
  if path is not None:
    with open(str(path), encoding="utf-8") as f:
      prompts = [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
      raise ValueError(f"--prompt_file={path} holds no prompt")
    return prompts
  return [str(prompt)]


def tokenize(tokenizer: clip.CLIPTokenizer, prompts, warn=True) -> np.ndarray:
  """int32 ids [len(prompts), 77]; prompts over the context are cut as diffusers does, with one
  warning line on stderr."""
  ids, lengths = tokenizer.encode(list(prompts))
  over = [(i, n) for i, n in enumerate(lengths) if n > tokenizer.model_max_length]
  if over and warn:
    print("warning: CLIP's context is " f"{tokenizer.model_max_length} tokens; truncated "
          + ", ".join(f"prompt {i + 1} ({n} tokens)" for i, n in over), file=sys.stderr)
  return ids


def sample_options(cfg: Settings, spec: DataSpec, sd, num: int, flags: dict
                   ) -> tuple[int, dict]:
  """`gen sample`'s flags as `sample`'s arguments, eagerly: the prompts (--prompt or
  --prompt_file, cycled over `num` images; `num` 0: 4 images of one prompt, one image per line
  of a file) and --negative_prompt become token ids; --guidance and --steps become arrays
  (traced: changing them does not recompile)."""
  kwargs = dict(flags)
  prompts = prompts_of(kwargs)
  negative = kwargs.pop("negative_prompt", None)
  num = num or (DEFAULT_NUM if len(prompts) == 1 else len(prompts))
  chosen = [prompts[i % len(prompts)] for i in range(num)]
  tokenizer = sd.tokenizer or tokenizer_of(spec)
  kwargs["ids"] = tokenize(tokenizer, chosen)
  kwargs["negative_ids"] = tokenize(tokenizer, [str(negative or "")] * num)
  for name in ("height", "width"):
    v = kwargs.get(name)
    if v is not None and (type(v) is not int or v < 1):
      raise ValueError(f"--{name} must be a positive integer, got {v!r}")
  if kwargs.get("init_image") is not None:
    if kwargs.get("height") or kwargs.get("width"):
      raise ValueError("--init_image sets the size: leave --height / --width out")
    kwargs["init_image"] = read_image(str(kwargs["init_image"]), num)
    h, w = kwargs["init_image"].shape[1:3]
    check_size_of(sd, h, w, "--init_image's size")
    kwargs["strength"] = strength_table(float(kwargs.get("strength", 0.8)))
  elif kwargs.get("strength") is not None:
    raise ValueError("--strength applies with --init_image=IMAGE (img2img)")
  else:
    check_size_of(sd, kwargs.get("height") or cfg.image_shape[0],
                  kwargs.get("width") or cfg.image_shape[1])
  if kwargs.get("guidance") is not None:
    kwargs["guidance"] = np.asarray(kwargs["guidance"], np.float32)
  if kwargs.get("steps") is not None:
    steps = kwargs["steps"]
    if type(steps) is not int or steps < 1:
      raise ValueError(f"--steps must be a positive integer, got {steps!r}")
    kwargs["steps"] = np.asarray(steps, np.int32)
  return num, kwargs


def check_size_of(sd: stable_diffusion.StableDiffusion, h: int, w: int,
                  what: str = "--height / --width"):
  f = sd.image_shape[0] // sd.latent_shape[0] * 2 ** (len(sd.unet.block_out_channels) - 1)
  if h % f or w % f:
    raise ValueError(f"{what} {h}x{w} must be multiples of {f} (the VAE's and the UNet's "
                     "downscales)")


def networks_of(config, spec: DataSpec, tokenizer=None) -> stable_diffusion.StableDiffusion:
  return stable_diffusion.from_config(config.model.text_to_image, tokenizer, spec.shape,
                                      DTYPES[config.model.dtype])


def make(config, spec: DataSpec) -> Pipeline:
  """The pipeline; the tokenizer (the `tokenizers` library) is read from the spec only when
  `sample_options` tokenizes: the compiled steps take token ids."""
  check(config, spec)
  sd = networks_of(config, spec)
  process, objective = networks.process_and_objective(config.diffusion)
  d = config.diffusion
  cfg = Settings(d.sampler, d.sample_steps, float(d.guidance),
                 int(config.model.text_to_image.clip_skip), tuple(spec.shape),
                 int(spec.fields["ids"][0][0]) if "ids" in spec.fields else 77)
  tx = make_optimizer(config.optim, max(config.train.num_steps, 1))
  return Pipeline(init=functools.partial(init, sd, tx), train_step=not_trained,
                  eval_step=not_trained,
                  sample=functools.partial(sample, sd, process, objective, cfg),
                  sample_options=functools.partial(sample_options, cfg, spec, sd),
                  compiler_options=networks.compiler_options(config.model))


# ------------------------------------------------------------------------ for a notebook


@dataclasses.dataclass
class TextToImage:
  """A loaded text_to_image run: `sd` (its networks and tokenizer), `params`, and the
  programs compiled so far (one per sampler, image count and size)."""

  config: object
  spec: DataSpec
  pipeline: Pipeline
  sd: stable_diffusion.StableDiffusion
  params: dict
  compiled: dict = dataclasses.field(default_factory=dict)


def load(workdir: str, step: int | None = None) -> TextToImage:
  """The run in `workdir` (as `gen import --from=PIPELINE_FOLDER` writes it)."""
  from gen.core import runs

  config, spec, pipeline, state, _ = runs.load_workdir(workdir, step=step)
  if config.model.kind != "text_to_image":
    raise ValueError(f"{workdir} is a model.kind='{config.model.kind}' run, not text_to_image")
  return TextToImage(config, spec, pipeline, networks_of(config, spec, tokenizer_of(spec)),
                     pipeline.sample_params(state))


def encode(model: TextToImage, prompts, negative_prompts=None):
  """(cond, uncond) encoder states [B, 77, width] of the prompts, as diffusers'
  encode_prompt gives them (negative prompts "" by default)."""
  ids, neg = stable_diffusion.tokenize(model.sd, prompts, negative_prompts)
  fn = model.compiled.get("encode")
  if fn is None:
    clip_skip = int(model.config.model.text_to_image.clip_skip)
    fn = model.compiled["encode"] = jax.jit(
        lambda p, i, n: stable_diffusion.encode_prompt(model.sd, p, i, n, clip_skip))
  return fn(model.params, ids, neg)


def generate(model: TextToImage, prompts, negative_prompts=None, *, num: int | None = None,
             guidance=7.5, steps: int | None = None, sampler: str | None = None, seed: int = 0,
             latents=None, height: int = 0, width: int = 0, init_image=None,
             strength: float = 0.8) -> np.ndarray:
  """Images [num, H, W, 3] in [0, 1] (diffusers' output_type "np") of `prompts` (a string or a
  list, cycled over `num` images; default one image each), negative prompts (one, or one per
  image; "" by default). `latents` [num, h, w, c] replaces the drawn start noise as the
  pipeline's `latents=` does; `seed` draws the rest (and euler_a's step noise). guidance and
  steps are traced: new values reuse the compiled program. init_image: img2img from images
  [num, H, W, 3] (or one [H, W, 3]) in [0, 1] as the img2img pipeline takes them, `strength`
  traced too."""
  prompts = [prompts] if isinstance(prompts, str) else list(prompts)
  num = num or len(prompts)
  chosen = [prompts[i % len(prompts)] for i in range(num)]
  if negative_prompts is None or isinstance(negative_prompts, str):
    negative_prompts = [negative_prompts or ""] * num
  tok = model.sd.tokenizer
  ids, neg = tokenize(tok, chosen), tokenize(tok, list(negative_prompts), warn=False)
  sampler = sampler or model.config.diffusion.sampler
  steps = model.config.diffusion.sample_steps if steps is None else steps
  image = None
  if init_image is not None:
    image = np.asarray(init_image, np.float32)
    image = np.broadcast_to(image, (num, *image.shape[-3:])) * 2.0 - 1.0
  key = (sampler, num, height, width, latents is None,
         None if image is None else image.shape[1:3])
  fn = model.compiled.get(key)
  if fn is None:
    fn = model.compiled[key] = xla.jit(
        lambda p, rng, i, n, w, s, lat, im, st: model.pipeline.sample(
            p, rng, num, ids=i, negative_ids=n, sampler=sampler, steps=s, guidance=w,
            height=height, width=width, latents=lat, init_image=im, strength=st),
        model.pipeline.compiler_options)
  lat = None if latents is None else jnp.asarray(latents, jnp.float32)
  table = None if image is None else strength_table(strength)
  x = fn(model.params, jax.random.key(seed), ids, neg, jnp.float32(guidance), jnp.int32(steps),
         lat, image, table)
  return np.clip(np.asarray(x, np.float32) / 2 + 0.5, 0.0, 1.0)


__all__ = ["TextToImage", "encode", "generate", "load", "make"]
