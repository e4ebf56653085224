"""Text to image from scratch: a denoiser conditioned on a caption (`model.kind = "text_denoiser"`).

The network is a text encoder (`gen.diffusion.text.TextEncoder`, `model.text`: CLIP's text
transformer or a bidirectional one, trained jointly from scratch; or, with
`model.text.pretrained`, an imported Stable Diffusion run's CLIP text encoder, frozen) whose
states every backbone block reads by cross-attention: `model.arch = "unet2d_condition"`,
diffusers' UNet2DConditionModel at small widths (`model.text_to_image.unet`, the layout the SD
import loads; its cross_attention_dim is the encoder's width), or `"dit"`, gen's DiT with
PixArt-alpha's cross-attention blocks (`model.dit`; with `model.text.pooled`, the states'
mean also joins the time embedding in every block's adaLN). Everything else is the denoiser's
(`gen.diffusion.denoiser`): any process and objective, EMA, pixels or an autoencoder's
latents (`latent.autoencoder`), the same training step with the caption in place of the
class label. Training replaces a caption by the null caption (`[BOS] [EOS]`, the empty
prompt) with probability `model.text.caption_dropout`, so one network is conditional and
unconditional; sampling with guidance w uses D_null + w (D_prompt - D_null), or a negative
prompt in place of the null caption (guidance 0 is the unconditional model, 1 the plain
conditional one).

The data is any captioned image source (`captions:mnist`, ...; `gen.diffusion.text`), its
word-level tokenizer trained on the training captions and kept in the data spec. `gen sample
--prompt=TEXT` (or `--prompt_file`, `--negative_prompt`) tokenizes eagerly, refusing an
empty prompt, unknown words and prompts over `model.text.max_length`; the sampler encodes the
ids inside the compiled program, and guidance, the prompts and the noise are traced, so
another prompt or scale reuses the program. Without a prompt the sampler draws the data
spec's `prompts` (the first `model.text.prompts` test captions), cycled over the images.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen.core.config import ConfigError
from gen.core.data import captions
from gen.core.family import DataSpec, Pipeline, make_optimizer
from gen.diffusion import denoiser, networks, sampling, text
from gen.diffusion import latent as latent_lib
from gen.diffusion.diffusers import unet2d_condition
from gen.diffusion.guidance import guided
from gen.diffusion.models import DTYPES, TIME_SCALE, DiT

DEFAULT_NUM = 16  # Images of one --prompt without --num.
ARCHS = ("unet2d_condition", "dit")


class SlotParser(nn.Module):
  """Text states [B, L, W] -> per slot, logits of each attribute: one learned query per slot
  reads the states by one attention (no MLP after it), then a linear layer per attribute.
  So the states must hold each object's attributes where a query for its place can find
  them, as the backbone's cross-attention reads them."""

  counts: tuple[int, ...]  # Classes of each attribute (identity, colour, size; 0: empty).
  slots: int
  heads: int

  @nn.compact
  def __call__(self, states):
    b, _, w = states.shape
    queries = self.param("queries", nn.initializers.normal(1.0), (self.slots, w))
    q = jnp.broadcast_to(queries, (b, self.slots, w))
    h = nn.MultiHeadDotProductAttention(self.heads, name="attention")(q, states)
    return [nn.Dense(c, name=f"head_{k}")(h) for k, c in enumerate(self.counts)]


class TextConditioned(nn.Module):
  """`(x, cond, ids, train) -> raw output`: the text encoder's states of `ids` [B, L] read by
  the backbone's cross-attention (a UNet2DCondition sees the time as 1000 * cond, as gen's
  networks embed it); with `pooled`, the DiT's adaLN also reads their mean over all L
  positions (padding included: the encoders' padded states see the whole prompt). With a
  `parser` (`model.text.parse_weight`), `parse(ids)` gives its logits of the caption's
  objects; sampling never calls it."""

  encoder: nn.Module
  backbone: nn.Module
  pooled: bool = False  # DiT: the mean of the states over the L positions joins adaLN too.
  parser: nn.Module | None = None

  def parse(self, ids):
    return self.parser(self.encoder(ids))

  def __call__(self, x, cond, ids, train: bool = False):
    context = self.encoder(ids)
    if self.parser is not None and self.is_initializing():
      self.parser(context)  # Creates its params.
    cond = jnp.asarray(cond, jnp.float32)
    if isinstance(self.backbone, DiT):
      pooled = jnp.mean(context, axis=1) if self.pooled else None
      return self.backbone(x, cond, jnp.zeros(x.shape[:1], jnp.int32), train, context, pooled)
    return self.backbone(x, TIME_SCALE * cond, context, train)


@dataclasses.dataclass(frozen=True)
class TextSettings(denoiser.DenoiserSettings):
  """The denoiser's settings with captions for labels: `null` is the null caption's ids,
  `prompts` the default prompts' ids [P, L], `label_dropout` the caption dropout."""

  null: tuple[int, ...] = ()
  prompts: tuple[tuple[int, ...], ...] = ()

  def labels(self, batch):
    return batch["ids"].astype(jnp.int32)

  def drop_labels(self, labels, rng):
    if self.label_dropout <= 0:
      return labels
    drop = jax.random.bernoulli(rng, self.label_dropout, labels.shape[:1])
    return jnp.where(drop[:, None], jnp.asarray(self.null, jnp.int32), labels)


def check(config, spec: DataSpec):
  m, t = config.model, config.model.text
  if m.arch not in ARCHS:
    raise ConfigError(f"model.kind='text_denoiser' reads text by cross-attention: model.arch "
                      f"must be one of {', '.join(ARCHS)}, got '{m.arch}'")
  if m.conditional:
    raise ConfigError("model.kind='text_denoiser' is conditioned on captions, not classes: "
                      "model.conditional must be False")
  if not 0.0 <= t.caption_dropout < 1.0:
    raise ConfigError(f"model.text.caption_dropout must be in [0, 1), got {t.caption_dropout}")
  if config.diffusion.guidance != 1.0 and not t.caption_dropout:
    raise ConfigError(f"diffusion.guidance = {config.diffusion.guidance} needs a model trained "
                      "with caption dropout (model.text.caption_dropout > 0); 1.0 means none")
  if "ids" not in spec.fields:
    raise ConfigError("a text_denoiser's data has captions (ids): open it with "
                      "gen.diffusion.make_data")
  pretrained = (spec.extra or {}).get("text_encoder")
  if bool(t.get("pretrained", "")) != bool(pretrained):
    raise ConfigError("model.text.pretrained and the data spec disagree on the text encoder: "
                      "open the data with gen.diffusion.make_data and this config")
  width = text.width_of(t, spec)
  where = (f"model.text.pretrained's hidden size {width}" if pretrained else
           f"model.text.width = {width}")
  if t.get("pooled", False) and m.arch != "dit":
    raise ConfigError("model.text.pooled feeds the DiT's adaLN: it needs model.arch='dit', "
                      f"got '{m.arch}'")
  if m.get("unet_positions", False) and m.arch != "unet2d_condition":
    raise ConfigError("model.unet_positions adds position codes to the UNet's attention: it "
                      f"needs model.arch='unet2d_condition', got '{m.arch}' (the DiT has "
                      "model.dit.positions)")
  if t.get("parse_weight", 0.0) < 0:
    raise ConfigError(f"model.text.parse_weight must be >= 0, got {t.parse_weight}")
  if m.arch == "unet2d_condition" and m.text_to_image.unet.cross_attention_dim != width:
    raise ConfigError(f"model.text_to_image.unet.cross_attention_dim = "
                      f"{m.text_to_image.unet.cross_attention_dim} must be the text encoder's "
                      f"width, {where}")


def parts(config, spec: DataSpec, codec: latent_lib.Codec | None = None):
  """(network, process, objective, settings) of a text_denoiser config (unchecked)."""
  m, t = config.model, config.model.text
  tokenizer = text.tokenizer_of(spec)
  shape = tuple(spec.shape) if codec is None else tuple(codec.shape)
  dtype = DTYPES[m.dtype]
  if (spec.extra or {}).get("text_encoder"):
    encoder = text.frozen_encoder(spec, dtype)
  else:
    encoder = text.encoder_of(t, tokenizer.vocab_size, dtype)
  if m.arch == "dit":
    d = m.dit
    backbone = DiT(shape[-1], d.patch, d.dim, d.depth, d.heads, d.mlp_ratio, m.dropout, 0,
                   d.positions, dtype=dtype)
  else:
    backbone = unet2d_condition.from_config(m.text_to_image.unet, shape[-1], m.dropout, dtype,
                                            bool(m.get("unet_positions", False)))
  d = config.diffusion
  prompts = tokenizer(list(spec.extra.get("prompts", ())) or [""])
  cfg = TextSettings(shape, 0, networks.process_name(d), t.caption_dropout, d.guidance,
                     d.clip_denoised, d.sampler, d.sample_steps, config.optim.ema_decay, codec,
                     tuple(int(i) for i in tokenizer([""])[0]),
                     tuple(tuple(int(i) for i in row) for row in prompts))
  parser = None
  if t.get("parse_weight", 0.0) > 0:
    heads = dict((spec.extra or {}).get("targets") or ())
    counts = tuple(c for name, c in heads.items() if name.startswith(captions.SLOTS[0] + "/"))
    parser = SlotParser(counts, len(heads) // max(len(counts), 1), int(t.heads))
  net = TextConditioned(encoder, backbone, bool(t.get("pooled", False)), parser)
  return (net, *networks.process_and_objective(d), cfg)


def parse_loss(net: TextConditioned, weight: float, params, batch):
  """`model.text.parse_weight` times the parser's cross-entropy on the batch's per-slot
  targets (mean over slots and attributes), and its metrics: `parse_loss`, and `parsed`, the
  share of captions whose every slot and attribute it reads right."""
  logits = net.apply({"params": params}, batch["ids"].astype(jnp.int32), method=net.parse)
  targets = batch["targets"].reshape(batch["targets"].shape[0], -1, len(logits))
  losses, right = [], []
  for k, z in enumerate(logits):
    losses.append(optax.softmax_cross_entropy_with_integer_labels(z, targets[..., k]))
    right.append(jnp.argmax(z, -1) == targets[..., k])
  loss = jnp.mean(jnp.stack(losses))
  parsed = jnp.mean(jnp.all(jnp.stack(right), axis=(0, 2)))
  return weight * loss, {"parse_loss": loss, "parsed": parsed}


def sample(net: nn.Module, process, objective, cfg: TextSettings, params, rng, num, ids=None,
           negative_ids=None, sampler=None, steps=None, guidance=None, eta=0.0, churn=0.0,
           decode=True):
  """`num` images of the prompts' ids [num, L] (None: the default prompts, cycled), guided
  with scale `guidance` (None: diffusion.guidance; may be traced) against the null caption or
  `negative_ids` [num, L]. sampler / steps / eta / churn as the denoiser's `sample`."""
  sampler = cfg.sampler if sampler is None else sampler
  steps = cfg.sample_steps if steps is None else steps
  fn, steps, opts = sampling.resolve(process, sampler, steps, eta=eta, churn=churn)
  if guidance is not None and not cfg.label_dropout:
    raise ValueError("--guidance needs a model trained with caption dropout "
                     "(model.text.caption_dropout > 0): it has no unconditional mode")
  w = cfg.guidance if guidance is None else guidance
  if ids is None:
    ids = np.asarray(cfg.prompts, np.int32)[np.arange(num) % len(cfg.prompts)]
  ids = jnp.asarray(ids, jnp.int32)[:num]
  null = jnp.asarray(cfg.null, jnp.int32) if negative_ids is None else (
      jnp.asarray(negative_ids, jnp.int32)[:num])
  k_noise, k_run = jax.random.split(rng)
  noise = jax.random.normal(k_noise, (num,) + tuple(cfg.shape))
  denoise = denoiser.make_denoiser(denoiser.apply_fn(net, params), process, objective,
                                   cfg.clip_denoised, with_eps=sampling.table(process).WITH_EPS)
  if not (sampling.concrete(w) and w == 1.0 and negative_ids is None):
    denoise = guided(denoise, null, w)
  x = fn(lambda x, t: denoise(x, t, ids), process, noise, k_run, steps, **opts)
  if not decode:
    return x
  return jnp.clip(cfg.to_images(x), -1.0, 1.0)


def prompts_of(flags: dict) -> list[str] | None:
  """--prompt (a string, or from Python a list), or --prompt_file's lines; None: neither."""
  prompt, path = flags.pop("prompt", None), flags.pop("prompt_file", None)
  if prompt is not None and path is not None:
    raise ValueError("give --prompt=TEXT or --prompt_file=FILE, not both")
  if path is not None:
    with open(path) as f:
      prompts = [line.strip() for line in f if line.strip()]
    if not prompts:
      raise ValueError(f"--prompt_file={path} holds no prompt")
    return prompts
  if prompt is None:
    return None
  prompts = [str(p) for p in prompt] if isinstance(prompt, (list, tuple)) else [str(prompt)]
  if not prompts or any(not p.strip() for p in prompts):
    raise ValueError("an empty prompt: give some words (the unconditional model is "
                     "--guidance=0 with any prompt)")
  return prompts


def sample_options(cfg: TextSettings, tokenizer, num: int, flags: dict
                   ) -> tuple[int, dict]:
  """`gen sample`'s flags as `sample`'s arguments, eagerly: --prompt / --prompt_file (cycled
  over `num` images; `num` 0: DEFAULT_NUM of one prompt, one image per line of a file, or
  the default prompts 8 times) and --negative_prompt become ids; --guidance a float32 array
  (traced: another scale reuses the program)."""
  kwargs = dict(flags)
  prompts = prompts_of(kwargs)
  negative = kwargs.pop("negative_prompt", None)
  if prompts is None:
    num = num or 8 * len(cfg.prompts)
    ids = np.asarray(cfg.prompts, np.int32)
  else:
    num = num or (DEFAULT_NUM if len(prompts) == 1 else len(prompts))
    ids = tokenizer(prompts)
  kwargs["ids"] = ids[np.arange(num) % len(ids)]
  if negative is not None:
    kwargs["negative_ids"] = tokenizer([str(negative)] * num)
  if kwargs.get("guidance") is not None:
    kwargs["guidance"] = np.asarray(kwargs["guidance"], np.float32)
  return num, kwargs


def make(config, spec: DataSpec) -> Pipeline:
  codec = latent_lib.codec(config, spec)  # Loads a latent run's autoencoder, eagerly.
  check(config, spec)
  networks.check(config, spec, None if codec is None else codec.shape)
  net, process, objective, cfg = parts(config, spec, codec)
  tx = make_optimizer(config.optim, config.train.num_steps)
  bound = (net, process, objective, cfg)
  return Pipeline(init=functools.partial(denoiser.init, net, tx, cfg),
                  train_step=functools.partial(
                      denoiser.train_step, *bound,
                      aux=functools.partial(parse_loss, net, float(config.model.text.get(
                          "parse_weight", 0.0))) if net.parser is not None else None),
                  eval_step=functools.partial(denoiser.eval_step, *bound),
                  sample=functools.partial(sample, *bound),
                  sample_options=functools.partial(sample_options, cfg,
                                                   text.tokenizer_of(spec)),
                  compiler_options=networks.compiler_options(config.model))
