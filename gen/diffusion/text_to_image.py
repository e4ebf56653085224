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

Training (`gen train`) fine-tunes an imported run as diffusers' `train_text_to_image.py` and
`train_text_to_image_lora.py` do: a step encodes the batch's images ([-1, 1]) with the frozen
VAE, draws from its posterior (`latent_dist.sample()`, not the mean) and scales by
scaling_factor; draws a timestep per image uniformly from the discrete table's
[0, num_train_timesteps) and unit noise; noises the latents as the scheduler's `add_noise`
(sqrt(alphas_cumprod[t]) x0 + sqrt(1 - alphas_cumprod[t]) eps); and regresses the UNet's
output on the run's target (`diffusion.objective`: eps, or v = alpha eps - sigma x0, the
scheduler's `get_velocity`): the mean squared error over every latent element (`loss`). The
captions come tokenized by the run's CLIP tokenizer, padded to its 77 tokens (longer ones cut,
as the script's `truncation=True`), and each is replaced by the empty prompt with probability
`model.text_to_image.caption_dropout` (the script's `--proportion_empty_prompts`; default 0),
so that guidance against "" keeps working. The VAE is always frozen; without LoRA
(`optim.lora.rank = 0`) only the UNet trains, as in the full fine-tuning script: the params
keep all three networks (a `TextToImageState`), and the optimizer state and EMA hold the
UNet's alone. With LoRA (`gen.core.lora`) the three are the frozen base and the factors are
trained where `optim.lora.targets` matches: UNet kernels (`unet/.../kernel`) and, if it says
so, text encoder kernels (`text_encoder/...`, whose gradient then flows through the text
encoder); a target in the VAE or on an embedding is refused, as no Stable Diffusion LoRA file
can hold it. `eval_step` reports the same loss per test image, with fixed draws.

The data (`make_data`) is any captioned image source (`captions:mnist`, ...: records with a
`caption(i)`), tokenized with the tokenizer in the data spec of the run it starts from
(`init_from`, or a resumed run's own); `data.resolution = r > 0` resizes each image (bilinear,
its shorter side to r, then a centre crop to r x r, as the scripts' `--resolution`). The
image's side must be a multiple of the VAE's downscale times the UNet's: otherwise a one-line
error names that multiple. The first test captions are the spec's `prompts`: the trainer's
samples draw them, and so does `gen sample` without --prompt. The run keeps the imported
networks' config: start from the imported run's own config (`--config=IMPORTED_WORKDIR`, or
`configs/diffusion/sd_lora_captions.py:IMPORTED_WORKDIR`); a `model.text_to_image` that differs
from `init_from`'s is a one-line error naming the key.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen.core import parallel, xla
from gen.core.config import ConfigError
from gen.core.data import Data, preprocess, sources
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer
from gen.core.lora import LoraState, named_leaves
from gen.diffusion import networks, sampling, schedulers
from gen.diffusion.diffusers import autoencoder_kl, clip, stable_diffusion
from gen.diffusion.models import DTYPES
from gen.diffusion.process import bcast

DEFAULT_NUM = 4  # Images of one --prompt without --num.
MAX_STEPS = 1000  # The longest step count img2img's strength table covers.
OBJECTIVES = ("eps", "v")
PARTS = ("text_encoder", "vae", "unet")  # The networks, as `params` holds them.
PROMPTS = 8  # Test captions a trained run's spec keeps as its default prompts.


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the sampler reads of the config and the data spec."""

  sampler: str
  sample_steps: int
  guidance: float
  clip_skip: int
  image_shape: tuple[int, int, int]
  max_length: int  # The tokenizer's (and text encoder's) context: ids are [B, max_length].
  null: tuple[int, ...] = ()  # The empty prompt's ids: caption dropout's, the default negative.
  prompts: tuple[tuple[int, ...], ...] = ()  # The spec's default prompts' ids (a trained run).
  caption_dropout: float = 0.0  # P(a training caption becomes the empty prompt).


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
  dropout = m.text_to_image.get("caption_dropout", 0.0)
  if not 0.0 <= dropout < 1.0:
    raise ConfigError(f"model.text_to_image.caption_dropout must be in [0, 1), got {dropout}")
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


class TextToImageState(TrainState):
  """The three networks' params (`params["text_encoder" | "vae" | "unet"]`), of which only the
  UNet trains: the optimizer state and the EMA (`ema_params = {"unet": ...}`, or None) are the
  UNet's, and the VAE and text encoder pass from step to step untouched. (A LoRA run's state,
  `gen.core.lora`, trains its factors instead; its base holds all three.)"""

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation, ema_decay: float = 0.0):
    ema = {"unet": jax.tree.map(jnp.copy, params["unet"])} if ema_decay > 0 else None
    return cls(step=jnp.zeros((), jnp.int32), params=params, ema_params=ema,
               opt_state=tx.init(params["unet"]), tx=tx, ema_decay=ema_decay)

  def apply_gradients(self, grads) -> TextToImageState:
    """Updates the UNet with its gradients (`grads` may hold the others': they are unused)."""
    grads = parallel.mean_over_devices(grads["unet"])
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params["unet"])
    unet = optax.apply_updates(self.params["unet"], updates)
    ema = self.ema_params
    if self.ema_decay > 0:
      ema = {"unet": self.ema_update(unet, ema["unet"], opt_state)}
    return self.replace(step=self.step + 1, params={**self.params, "unet": unet},
                        ema_params=ema, opt_state=opt_state)

  @property
  def sample_params(self):
    return self.params if self.ema_params is None else {**self.params, **self.ema_params}


def load_pretrained(state: TextToImageState, params) -> TextToImageState:
  """`init_from`: an imported (or trained) run's three networks; the UNet's EMA starts there."""
  ema = None if state.ema_params is None else {"unet": jax.tree.map(jnp.copy, params["unet"])}
  return state.replace(params=params, ema_params=ema)


def init(sd: stable_diffusion.StableDiffusion, tx, ema_decay: float, rng, batch):
  """The three networks' params, zeros (their shapes only: an import or `init_from` replaces
  them; a training run must start from one)."""
  f = sd.image_shape[0] // sd.latent_shape[0]
  ids = jnp.zeros((1, batch["ids"].shape[-1]), jnp.int32)
  shapes = {
      "text_encoder": jax.eval_shape(sd.text_encoder.init, rng, ids)["params"],
      "vae": jax.eval_shape(sd.vae.init, rng, jnp.zeros((1, 2 * f, 2 * f,
                                                          sd.vae.in_channels)))["params"],
      "unet": jax.eval_shape(sd.unet.init, rng, jnp.zeros((1, *sd.latent_shape)), 0.0,
                             jnp.zeros((1, 1, sd.text_encoder.hidden_size)))["params"]}
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return TextToImageState.create(params, tx, ema_decay)


# ---------------------------------------------------------------------------- training


def encode_images(sd: stable_diffusion.StableDiffusion, vae_params, images, rng):
  """The diffusion model's latents of images [B, H, W, 3] in [-1, 1]: a draw of the VAE's
  posterior (diffusers' `latent_dist.sample()`) times scaling_factor (less shift_factor)."""
  mean, logvar = sd.vae.apply({"params": vae_params}, images,
                              method=autoencoder_kl.AutoencoderKL.encode)
  z = autoencoder_kl.sample_posterior(rng, mean, logvar)
  return autoencoder_kl.to_latents(z, sd.scaling_factor, sd.shift_factor)


def drop_captions(cfg: Settings, ids, rng):
  """`ids` [B, L] with each row replaced by the empty prompt's with probability
  caption_dropout."""
  if cfg.caption_dropout <= 0:
    return ids
  drop = jax.random.bernoulli(rng, cfg.caption_dropout, ids.shape[:1])
  return jnp.where(drop[:, None], jnp.asarray(cfg.null, ids.dtype), ids)


def per_example_loss(sd, process, objective, params, x0, t, eps, cond):
  """The mean squared error of the UNet's output at the noised latents against the
  objective's target, per example [B]."""
  a, s = (bcast(v, x0) for v in process.alpha_sigma(t))
  x = a * x0 + s * eps  # The scheduler's add_noise.
  raw = sd.unet.apply({"params": params["unet"]}, x, t, cond).astype(jnp.float32)
  return jnp.mean(jnp.square(raw - objective.target(x0, eps, a, s)), axis=(1, 2, 3))


def trained(state) -> tuple[str, ...]:
  """The networks whose weights a step changes: the UNet, or a LoRA run's adapted parts."""
  if isinstance(state, LoraState):
    return tuple(p for p in ("unet", "text_encoder")
                 if any(t.path.startswith(p + "/") for t in state.plan.targets))
  return ("unet",)


def grad_norm(state, grads):
  """The global norm of what trains: the UNet's gradient, or a LoRA run's adapted weights'."""
  if isinstance(state, LoraState):
    named = named_leaves(grads)
    return optax.global_norm([named[t.path] for t in state.plan.targets])
  return optax.global_norm(grads["unet"])


def batch_draws(sd, process, cfg: Settings, params, batch, rng):
  """(latents, timesteps, noise, caption ids) of a batch; `rng` is split into the VAE
  posterior's, the timesteps', the noise's and the caption dropout's keys, in that order."""
  k_latent, k_t, k_noise, k_drop = jax.random.split(rng, 4)
  x0 = jax.lax.stop_gradient(encode_images(sd, params["vae"], batch["image"], k_latent))
  t = process.sample_t(k_t, x0.shape[:1])  # Uniform integers in [0, num_train_timesteps).
  eps = jax.random.normal(k_noise, x0.shape)
  return x0, t, eps, drop_captions(cfg, batch["ids"], k_drop)


def train_step(sd, process, objective, cfg: Settings, state, batch, rng):
  """One step (see the module docstring): metrics `loss` and `grad_norm` (of what trains)."""
  x0, t, eps, ids = batch_draws(sd, process, cfg, state.params, batch, rng)
  with_text = "text_encoder" in trained(state)
  frozen_cond = None if with_text else jax.lax.stop_gradient(
      stable_diffusion.encode_prompt(sd, state.params, ids, None, cfg.clip_skip))

  def loss_fn(params):
    cond = frozen_cond if frozen_cond is not None else stable_diffusion.encode_prompt(
        sd, params, ids, None, cfg.clip_skip)
    return jnp.mean(per_example_loss(sd, process, objective, params, x0, t, eps, cond))

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads), {"loss": loss, "grad_norm": grad_norm(state, grads)}


def eval_step(sd, process, objective, cfg: Settings, state, batch, rng):
  """The training loss per example, with the sampling params (EMA when kept), the captions as
  given and the draws of `rng`."""
  params = state.sample_params
  x0, t, eps, _ = batch_draws(sd, process, cfg, params, batch, rng)
  cond = stable_diffusion.encode_prompt(sd, params, batch["ids"], None, cfg.clip_skip)
  return {"loss": per_example_loss(sd, process, objective, params, x0, t, eps, cond)}


def lora_in_axes(path: str, shape: tuple[int, ...]) -> int:
  """Every axis but the last (a Dense kernel, a convolution's kh, kw, in); refuses a target
  that no Stable Diffusion LoRA file holds, in the VAE (frozen) or not a kernel."""
  if path.startswith("vae/"):
    raise ConfigError(f"optim.lora.targets matches {path}: the VAE stays frozen; target the "
                      "UNet's kernels (unet/...) and the text encoder's (text_encoder/...)")
  if not path.endswith("/kernel"):
    raise ConfigError(f"optim.lora.targets matches {path}: Stable Diffusion LoRA files hold "
                      "linear layers and convolutions (.../kernel) only")
  return len(shape) - 1


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
  (`sample_options`). Without ids, a trained run draws its spec's prompts (cycled), guided
  against the empty prompt, as the trainer's samples do.

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
  if ids is None and cfg.prompts:  # A trained run's default prompts, guided against "".
    ids = np.asarray(cfg.prompts, np.int32)[np.arange(num) % len(cfg.prompts)]
    negative_ids = np.asarray([cfg.null] * num, np.int32)
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


def prompts_of(flags: dict, default=()) -> list[str]:
  """--prompt, or --prompt_file's lines (blank ones skipped); neither: `default` (a trained
  run's spec's prompts), if any."""
  prompt, path = flags.pop("prompt", None), flags.pop("prompt_file", None)
  if prompt is None and path is None and default:
    return list(default)
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
  of a file; neither: a trained run's default prompts, one image each) and --negative_prompt
  become token ids; --guidance and --steps become arrays (traced: changing them does not
  recompile)."""
  kwargs = dict(flags)
  prompts = prompts_of(kwargs, spec.extra.get("prompts", ()) if spec.extra else ())
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
  """The pipeline. The tokenizer (the `tokenizers` library) is read from the spec when a run
  trains or has default prompts (the empty prompt's and the prompts' ids), else only when
  `sample_options` tokenizes: the compiled steps take token ids."""
  check(config, spec)
  sd = networks_of(config, spec)
  process, objective = networks.process_and_objective(config.diffusion)
  d, t = config.diffusion, config.model.text_to_image
  null, prompts = (), ()
  if config.train.num_steps > 0 or (spec.extra and spec.extra.get("prompts")):
    tokenizer = tokenizer_of(spec)
    null = tuple(int(i) for i in tokenizer([""])[0])
    prompts = tuple(tuple(int(i) for i in row)
                    for row in tokenize(tokenizer, spec.extra.get("prompts") or [], False))
  cfg = Settings(d.sampler, d.sample_steps, float(d.guidance), int(t.clip_skip),
                 tuple(spec.shape), int(spec.fields["ids"][0][0]) if "ids" in spec.fields
                 else 77, null, prompts, float(t.get("caption_dropout", 0.0)))
  tx = make_optimizer(config.optim, max(config.train.num_steps, 1))
  bound = (sd, process, objective, cfg)
  return Pipeline(init=functools.partial(init, sd, tx, float(config.optim.ema_decay)),
                  train_step=functools.partial(train_step, *bound),
                  eval_step=functools.partial(eval_step, *bound),
                  sample=functools.partial(sample, *bound),
                  sample_options=functools.partial(sample_options, cfg, spec, sd),
                  load_pretrained=load_pretrained, lora_in_axes=lora_in_axes,
                  compiler_options=networks.compiler_options(config.model))


# -------------------------------------------------------------------------------- data


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, C] with its shorter side resized to `size` (bilinear, antialiased as PIL's
  resize is) and centre-cropped to size x size; `size` 0: as it is."""
  from PIL import Image

  h, w, c = image.shape
  if not size or (h, w) == (size, size):
    return image
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  pic = Image.fromarray(image[..., 0] if c == 1 else image)
  out = np.asarray(pic.resize((nw, nh), Image.Resampling.BILINEAR))
  top, left = (nh - size) // 2, (nw - size) // 2
  out = out[top:top + size, left:left + size]
  return out[..., None] if c == 1 else out


class Tokenized:
  """A captioned source's records as `{"image": uint8 [H, W, C], "ids": int32 [77]}`: the
  image resized (`resolution` > 0), the caption through the CLIP tokenizer (padded to its
  length; a longer caption cut, its end token kept, as the training scripts tokenize)."""

  def __init__(self, source, tokenizer: clip.CLIPTokenizer, resolution: int = 0):
    self.source, self.tokenizer, self.resolution = source, tokenizer, int(resolution)

  @property
  def shape(self) -> tuple[int, int, int]:
    h, w, c = self.source.shape
    return (self.resolution, self.resolution, c) if self.resolution else (h, w, c)

  @property
  def num_classes(self) -> int:
    return 0

  def __len__(self) -> int:
    return len(self.source)

  def caption(self, i: int) -> str:
    return self.source.caption(i)

  def __getitem__(self, i):
    image = resize(np.asarray(self.source[i]["image"], np.uint8), self.resolution)
    return {"image": image, "ids": self.tokenizer([self.source.caption(i)])[0]}

  def __repr__(self):
    return f"Tokenized({self.source!r})"


def _reused_tokenizer(workdirs) -> dict | None:
  """The CLIP tokenizer (its JSON) in the data spec of the first of `workdirs` that has one."""
  for workdir in workdirs:
    spec = DataSpec.load(workdir)
    tok = (spec.extra or {}).get("tokenizer") if spec is not None else None
    if isinstance(tok, dict) and "bos_id" in tok:
      return tok
  return None


def check_source_config(config, source: str) -> None:
  """ConfigError unless `source` (a workdir, `init_from`) is a text_to_image run whose
  networks are this config's `model.text_to_image` (their fields, key by key)."""
  from gen.core import config as config_lib
  from gen.core import runs

  other = runs.load_config(source)
  kind = other.get("model", {}).get("kind")
  if other.get("family") != config.family or kind != "text_to_image":
    raise ConfigError(f"init_from={source} is a {other.get('family')} "
                      f"model.kind='{kind}' run; text_to_image training starts "
                      "from a text_to_image run (gen import of a StableDiffusionPipeline folder)")
  for part in PARTS:
    mine, theirs = config.model.text_to_image[part], other.model.text_to_image[part]
    for key in sorted(set(config_lib.flat_keys(mine)) | set(config_lib.flat_keys(theirs))):
      a, b = mine.get(key), theirs.get(key)
      if (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
        raise ConfigError(f"model.text_to_image.{part}.{key} = {a!r} here, {b!r} in "
                          f"init_from={source}: start from that run's config "
                          f"(--config={source}, or a config file that reads it, e.g. "
                          f"configs/diffusion/sd_lora_captions.py:{source})")


class CaptionData(Data):
  """Captioned images for a text_to_image run: batches `{"image": float32 [B, H, W, C] in
  [-1, 1], "ids": int32 [B, 77]}`; the spec keeps the CLIP tokenizer of the run it reuses
  (`init_from`'s, or a resumed run's own) and the first test captions as its `prompts`."""

  def __init__(self, config, process_index=None, process_count=None, reuse=()):
    super().__init__(config, process_index, process_count, reuse)
    c, t = self.cfg, config.model.text_to_image
    if c.preprocess not in ("scale", "dequantize"):
      raise ConfigError(f"text_to_image models images in [-1, 1]: data.preprocess must be "
                        f"'scale' or 'dequantize', got '{c.preprocess}'")
    resolution = int(c.get("resolution", 0) or 0)
    if resolution < 0:
      raise ConfigError(f"data.resolution must be >= 0 (0: the source's size), got {resolution}")
    tok = _reused_tokenizer(self.reuse)
    if tok is None:
      raise ConfigError("model.kind='text_to_image' trains from an imported run: set "
                        "--config.init_from=WORKDIR (gen import of a StableDiffusionPipeline "
                        "folder), whose data spec holds the CLIP tokenizer")
    init_from = config.get("init_from", "")
    if init_from and init_from in self.reuse and os.path.isfile(
        os.path.join(init_from, "config.json")):
      check_source_config(config, init_from)
    raw = sources.load(c.name, c.train_split, c.dir)
    if not hasattr(raw, "caption"):
      raise ConfigError(f"model.kind='text_to_image' trains on captioned images; data.name="
                        f"'{c.name}' has no captions (try captions:mnist)")
    if c.random_flip and getattr(raw, "targets", None):
      raise ConfigError(f"data.random_flip mirrors the images of {c.name} but not their "
                        "captions: set it False")
    self.tokenizer = clip.CLIPTokenizer.from_json(tok)
    self.resolution = resolution
    self.train_source = Tokenized(raw, self.tokenizer, resolution)
    h, w, ch = self.train_source.shape
    if ch != t.vae.in_channels:
      raise ConfigError(f"data.name='{c.name}' has {ch}-channel images; the VAE takes "
                        f"{t.vae.in_channels} (model.text_to_image.vae.in_channels)")
    f = multiple(t)
    if h % f or w % f:
      raise ConfigError(f"data.name='{c.name}' gives {h}x{w} images; the VAE and UNet take "
                        f"sides that are multiples of {f} (their downscales): set "
                        f"data.resolution to a multiple of {f}")
    length = int(tok["model_max_length"])
    self.spec = DataSpec((h, w, ch), 0, c.preprocess, "image",
                         {"image": ((h, w, ch), "float32"), "ids": ((length,), "int32")},
                         {"tokenizer": tok, "prompts": [self.eval_source.caption(i) for i in
                                                        range(min(PROMPTS,
                                                                  len(self.eval_source)))]})

  def load(self, split: str, train: bool):
    return Tokenized(sources.load(self.cfg.name, split, self.cfg.dir), self.tokenizer,
                     self.resolution)

  def prepare_train(self, batch, rng):
    return {"image": preprocess(batch["image"], self.cfg.preprocess, rng, self.cfg.random_flip),
            "ids": batch["ids"]}

  def prepare_eval(self, batch, index):
    rng = np.random.default_rng([self.seed, 7919, index])
    return {"image": preprocess(batch["image"], self.cfg.preprocess, rng), "ids": batch["ids"]}


def make_data(config, process_index=None, process_count=None, reuse=()):
  return CaptionData(config, process_index=process_index, process_count=process_count,
                     reuse=reuse)


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


__all__ = ["TextToImage", "TextToImageState", "encode", "generate", "load", "make", "make_data"]
