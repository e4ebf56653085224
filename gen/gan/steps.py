"""The GAN family: alternating D/G updates in one compiled step, R1, DiffAugment, EMA sampling.

One `train_step` does, with the step's RNG split explicitly between them:
1. a discriminator update on real images and a batch of generated ones (the generator's
   output is behind `stop_gradient`, so the D loss cannot move G), plus the gradient of the
   R1 penalty gamma/2 E||grad_x D(x_real)||^2 (Mescheder et al. 2018) every `gan.r1_every`
   steps, scaled by `r1_every` (lazy regularization, Karras et al. 2020). That gradient is
   a forward-over-reverse product (see `r1_param_grad`), not a second reverse pass;
2. a generator update against the just-updated discriminator (D's parameters are not
   differentiated, and only G's optimizer is stepped).
DiffAugment (`gan.augment`), when set, transforms every image D sees: real and fake, in
both updates and in R1.

Both networks and both optimizer states live in one `GANState`. Learning rates are two
timescale: `optim.lr` for G, `gan.d_lr` for D, the rest of `optim` (Adam betas, schedule,
clipping) shared. Samples come from an EMA of the generator's weights (`optim.ema_decay`)
with batch-norm statistics recomputed for those weights ("standing statistics").

Every step is a module-level function whose leading arguments are its dependencies: the
generator `gen`, the discriminator `disc` (flax modules) and `s`, the `GANSettings` read
from the config; `make` binds them with `functools.partial`. `parts(config, spec)` gives
those three, validated, for calling the steps directly.

Train metrics, to see a GAN fail: `loss_d`, `loss_g` (and `loss` = `loss_d`, the progress
bar's number), the mean logits `d_real` / `d_fake`, discriminator accuracy on real and fake
batches (`d_acc_real`, `d_acc_fake`: D's output sign), `r1` = E||grad_x D(x_real)||^2
(measured every step, also when the penalty is off), and the gradient norms `d_grad_norm`,
`g_grad_norm`. Signs of trouble: both accuracies pinned at 1 with `loss_g` climbing (D has
won; G gets no signal), `r1` or `d_grad_norm` growing without bound, or samples that all
look alike (mode collapse). `eval_step` reports, per test image, D's logit, accuracy and
loss on it and on one EMA-generator sample: a falling `d_acc_real` on test images while the
training accuracy stays high means D is memorizing the training set.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from gen.core import xla
from gen.core.config import ConfigError
from gen.core.family import DataSpec, Pipeline, TrainState, make_optimizer
from gen.gan import losses
from gen.gan.augment import diff_augment, parse_policy
from gen.gan.models import Discriminator, Generator
from gen.nn.interpolate import slerp_grid

# The fixed latents whose batch statistics normalize the generator at sampling time.
STATS_SEED = 12345


class GANState(struct.PyTreeNode):
  """Both networks: G with its EMA copy, D with its spectral-norm vectors (`d_stats`)."""

  step: jax.Array
  g: TrainState
  d: TrainState
  d_stats: Any  # Spectral-norm power-iteration vectors; {} without spectral norm.

  @property
  def sample_params(self):
    """The generator's EMA weights (its raw weights when EMA is off)."""
    return self.g.sample_params


@dataclasses.dataclass(frozen=True)
class GANSettings:
  """The config values the steps read (hashable: safe to close over in traced code)."""

  loss: str  # gan.loss: nonsaturating | hinge
  r1_gamma: float  # gan.r1_gamma; 0 turns the penalty off.
  r1_every: int  # gan.r1_every: lazy R1 period.
  num_classes: int  # Classes G and D are conditioned on; 0 when unconditional.
  latent_dim: int  # model.latent_dim
  augment: tuple[str, ...]  # The parsed gan.augment policy; () for none.
  standing_stats: int  # gan.standing_stats: latents for G's sampling statistics.
  ema_decay: float  # optim.ema_decay of the generator's weights.


def _check(config, spec: DataSpec):
  m, gc = config.model, config.gan
  if gc.loss not in losses.LOSSES:
    raise ConfigError(f"gan.loss must be one of {losses.LOSSES}, got '{gc.loss}'")
  if spec.preprocess not in ("scale", "dequantize"):
    raise ConfigError("the GAN generator ends in tanh: data.preprocess must be 'scale' or "
                      f"'dequantize' (images in [-1, 1]), got '{spec.preprocess}'")
  if m.conditional and spec.num_classes < 1:
    raise ConfigError("model.conditional=True needs a labelled dataset; this one has no classes")
  if len(m.g_channels) < 1 or len(m.d_channels) < 1:
    raise ConfigError("model.g_channels and model.d_channels need at least one entry each")
  h, w, _ = spec.shape
  ups = Generator.upsamplings(m.g_channels, m.g_out_conv)
  if h % 2 ** ups or w % 2 ** ups:
    raise ConfigError(
        f"image size {h}x{w} must be divisible by 2**{ups} = {2 ** ups}: the generator "
        f"upsamples {ups} times (len(model.g_channels)"
        f"{' - 1 with model.g_out_conv' if m.g_out_conv else ''}); use fewer stages")
  if m.d_convs_per_stage < 1:
    raise ConfigError(f"model.d_convs_per_stage must be >= 1, got {m.d_convs_per_stage}")
  if gc.r1_gamma < 0:
    raise ConfigError(f"gan.r1_gamma must be >= 0 (0 turns R1 off), got {gc.r1_gamma}")
  if gc.r1_every < 1:
    raise ConfigError(f"gan.r1_every must be >= 1, got {gc.r1_every}")
  if gc.d_lr <= 0:
    raise ConfigError(f"gan.d_lr must be positive, got {gc.d_lr}")
  if gc.standing_stats < 2:
    raise ConfigError(f"gan.standing_stats must be >= 2, got {gc.standing_stats}")
  try:
    return parse_policy(gc.augment)
  except ValueError as e:
    raise ConfigError(f"gan.augment: {e}") from None


def parts(config, spec: DataSpec) -> tuple[Generator, Discriminator, GANSettings]:
  """The validated generator, discriminator and settings of `config` (raises ConfigError)."""
  policy = _check(config, spec)
  m, gc = config.model, config.gan
  nc = spec.num_classes if m.conditional else 0
  gen = Generator(tuple(spec.shape), tuple(m.g_channels), nc, m.g_out_conv)
  disc = Discriminator(tuple(m.d_channels), nc, m.spectral_norm, m.d_convs_per_stage)
  s = GANSettings(loss=gc.loss, r1_gamma=float(gc.r1_gamma), r1_every=int(gc.r1_every),
                  num_classes=nc, latent_dim=int(m.latent_dim), augment=tuple(policy),
                  standing_stats=int(gc.standing_stats), ema_decay=config.optim.ema_decay)
  return gen, disc, s


# ------------------------------------------------------------------------ building blocks

def latents(s: GANSettings, rng, n: int, truncation: float = 0.0):
  """z ~ N(0, I), or truncated to [-t, t] per coordinate when `truncation` t > 0."""
  if truncation > 0:
    return jax.random.truncated_normal(rng, -truncation, truncation, (n, s.latent_dim))
  return jax.random.normal(rng, (n, s.latent_dim))


def random_labels(s: GANSettings, rng, n: int):
  """Uniform class labels [n]; zeros (unused) when unconditional."""
  return jax.random.randint(rng, (n,), 0, max(s.num_classes, 1))


def labels_of(s: GANSettings, batch):
  """The batch's labels as int32, or zeros when unconditional."""
  x = batch["image"]
  if s.num_classes:
    return batch["label"].astype(jnp.int32)
  return jnp.zeros((x.shape[0],), jnp.int32)


def augment(s: GANSettings, x, rng):
  """DiffAugment with the `gan.augment` policy (the identity for none)."""
  return diff_augment(x, rng, s.augment)


def g_apply(gen: Generator, params, z, y):
  """The generator in training mode: batch norm with the batch's own statistics."""
  return gen.apply({"params": params}, z, y)


def standing_stats(gen: Generator, s: GANSettings, params):
  """Batch-norm statistics of `params` on `gan.standing_stats` fixed latents."""
  n = s.standing_stats
  z = jax.random.normal(jax.random.key(STATS_SEED), (n, s.latent_dim))
  y = jnp.arange(n, dtype=jnp.int32) % max(s.num_classes, 1)
  _, variables = gen.apply({"params": params}, z, y, mutable=["stats"])
  return variables["stats"]


def generate(gen: Generator, s: GANSettings, params, z, y, stats=None):
  """Images from latents with fixed (standing) statistics: each sample is independent."""
  stats = standing_stats(gen, s, params) if stats is None else stats
  return gen.apply({"params": params, "stats": stats}, z, y, use_stats=True)


def d_apply(disc: Discriminator, params, d_stats, x, y, update: bool = False):
  """Logits [B], and the spectral-norm vectors (advanced one power step if `update`)."""
  if not disc.spectral_norm:
    return disc.apply({"params": params}, x, y), d_stats
  variables = {"params": params, "batch_stats": d_stats}
  if update:
    out, new = disc.apply(variables, x, y, update_stats=True, mutable=["batch_stats"])
    return out, new["batch_stats"]
  return disc.apply(variables, x, y), d_stats


# --------------------------------------------------------------------------------- losses

def d_loss(gen: Generator, disc: Discriminator, s: GANSettings, d_params, d_stats, g_params,
           batch, rng):
  """D's adversarial loss on a real batch and as many fakes; G's output is a constant."""
  x, y = batch["image"], labels_of(s, batch)
  b = x.shape[0]
  kz, ky, ka = jax.random.split(rng, 3)
  y_fake = random_labels(s, ky, b)
  fake = jax.lax.stop_gradient(g_apply(gen, g_params, latents(s, kz, b), y_fake))
  xs = augment(s, jnp.concatenate([x, fake]), ka)
  logits, new_stats = d_apply(disc, d_params, d_stats, xs, jnp.concatenate([y, y_fake]), True)
  real, fake_logits = logits[:b], logits[b:]
  loss = (jnp.mean(losses.d_loss_real(real, s.loss))
          + jnp.mean(losses.d_loss_fake(fake_logits, s.loss)))
  return loss, (real, fake_logits, new_stats)


def r1_sq(disc: Discriminator, s: GANSettings, d_params, d_stats, batch, rng):
  """||grad_x D(augment(x))||^2 on the real images, per example [B]."""
  y = labels_of(s, batch)
  return losses.grad_sq_norm(
      lambda v: d_apply(disc, d_params, d_stats, augment(s, v, rng), y)[0], batch["image"])


def r1_input_grad(disc: Discriminator, s: GANSettings, d_params, d_stats, batch, rng):
  """grad_x D(augment(x)) on the real images: [B, H, W, C]."""
  y = labels_of(s, batch)
  return jax.grad(
      lambda v: jnp.sum(d_apply(disc, d_params, d_stats, augment(s, v, rng), y)[0]))(
          batch["image"])


def r1_param_grad(disc: Discriminator, s: GANSettings, d_params, d_stats, batch, rng, g):
  """grad_params of mean_B ||grad_x D||^2, given g = grad_x D (forward-over-reverse).

  With g held fixed, grad_params (g . grad_x D) = d/de grad_params D(x + e g), a Jacobian-
  vector product of D's parameter gradient: about one more D forward and backward,
  several times cheaper on CPU than differentiating the input gradient in reverse mode.
  """
  y = labels_of(s, batch)
  x = batch["image"]
  grad_p = jax.grad(lambda p, v: jnp.sum(d_apply(disc, p, d_stats, augment(s, v, rng), y)[0]))
  _, hvp = jax.jvp(lambda v: grad_p(d_params, v), (x,), (jax.lax.stop_gradient(g),))
  return jax.tree.map(lambda h: h * (2.0 / x.shape[0]), hvp)


def g_loss(gen: Generator, disc: Discriminator, s: GANSettings, g_params, d_params, d_stats,
           batch_size: int, rng):
  """G's adversarial loss on `batch_size` fakes against a fixed D, and D's logits on them."""
  kz, ky, ka = jax.random.split(rng, 3)
  y = random_labels(s, ky, batch_size)
  fake = g_apply(gen, g_params, latents(s, kz, batch_size), y)
  logits, _ = d_apply(disc, d_params, d_stats, augment(s, fake, ka), y)
  return jnp.mean(losses.g_loss(logits, s.loss)), logits


# ---------------------------------------------------------------------------------- steps

def init(gen: Generator, disc: Discriminator, s: GANSettings,
         g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation, rng, batch):
  """Both networks' params and optimizer states (G with an EMA copy) at step 0."""
  kg, kd = jax.random.split(rng)
  x = batch["image"][:1]
  y = labels_of(s, batch)[:1]
  g_params = gen.init(kg, jnp.zeros((1, s.latent_dim)), y)["params"]
  d_vars = disc.init(kd, x, y)
  return GANState(step=jnp.zeros((), jnp.int32),
                  g=TrainState.create(g_params, g_tx, s.ema_decay),
                  d=TrainState.create(d_vars["params"], d_tx, 0.0),
                  d_stats=d_vars.get("batch_stats", {}))


def d_step(gen: Generator, disc: Discriminator, s: GANSettings, state: GANState, batch, rng):
  """One discriminator update (+ lazy R1). G's params and optimizer are untouched."""
  k_loss, k_r1 = jax.random.split(rng)
  d_params = state.d.params
  (loss, (real, fake, new_stats)), grads = jax.value_and_grad(
      functools.partial(d_loss, gen, disc, s), has_aux=True)(
          d_params, state.d_stats, state.g.params, batch, k_loss)
  # R1 is measured every step (a cheap input gradient); its parameter gradient is added
  # every `r1_every` steps, scaled by `r1_every` (lazy regularization).
  g = r1_input_grad(disc, s, d_params, state.d_stats, batch, k_r1)
  r1 = jnp.mean(jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=-1))
  if s.r1_gamma > 0:
    scale = 0.5 * s.r1_gamma * s.r1_every

    def penalty_grads(g):
      return jax.tree.map(lambda t: scale * t,
                          r1_param_grad(disc, s, d_params, state.d_stats, batch, k_r1, g))

    if s.r1_every == 1:
      r1_grads = penalty_grads(g)
    else:
      # Note: XLA:CPU runs convolutions inside a conditional several times slower than
      # outside; on a CPU, r1_every=1 is usually the faster choice.
      r1_grads = jax.lax.cond(state.step % s.r1_every == 0, penalty_grads,
                              lambda g: jax.tree.map(jnp.zeros_like, d_params), g)
    grads = jax.tree.map(jnp.add, grads, r1_grads)
  d = state.d.apply_gradients(grads)
  metrics = {"loss_d": loss, "d_real": jnp.mean(real), "d_fake": jnp.mean(fake),
             "d_acc_real": jnp.mean((real > 0).astype(jnp.float32)),
             "d_acc_fake": jnp.mean((fake < 0).astype(jnp.float32)),
             "r1": r1, "d_grad_norm": optax.global_norm(grads)}
  return state.replace(d=d, d_stats=new_stats), metrics


def g_step(gen: Generator, disc: Discriminator, s: GANSettings, state: GANState,
           batch_size: int, rng):
  """One generator update against the current D. D's params and optimizer are untouched."""
  (loss, _), grads = jax.value_and_grad(functools.partial(g_loss, gen, disc, s), has_aux=True)(
      state.g.params, state.d.params, state.d_stats, batch_size, rng)
  return state.replace(g=state.g.apply_gradients(grads)), {
      "loss_g": loss, "g_grad_norm": optax.global_norm(grads)}


def train_step(gen: Generator, disc: Discriminator, s: GANSettings, state: GANState, batch,
               rng):
  """`d_step`, then `g_step` against the updated D, on one split of `rng`."""
  k_d, k_g = jax.random.split(rng)
  state, d_metrics = d_step(gen, disc, s, state, batch, k_d)
  state, g_metrics = g_step(gen, disc, s, state, batch["image"].shape[0], k_g)
  state = state.replace(step=state.step + 1)
  return state, {"loss": d_metrics["loss_d"], **d_metrics, **g_metrics}


def eval_step(gen: Generator, disc: Discriminator, s: GANSettings, state: GANState, batch,
              rng):
  """Per-example D scores on real test images and on as many EMA-generator samples."""
  x, y = batch["image"], labels_of(s, batch)
  b = x.shape[0]
  real, _ = d_apply(disc, state.d.params, state.d_stats, x, y)
  kz, ky = jax.random.split(rng)
  y_fake = random_labels(s, ky, b)
  fake_img = generate(gen, s, state.sample_params, latents(s, kz, b), y_fake)
  fake, _ = d_apply(disc, state.d.params, state.d_stats, fake_img, y_fake)
  return {"d_real": real, "d_fake": fake,
          "d_acc_real": (real > 0).astype(jnp.float32),
          "d_acc_fake": (fake < 0).astype(jnp.float32),
          "d_loss_real": losses.d_loss_real(real, s.loss),
          "d_loss_fake": losses.d_loss_fake(fake, s.loss)}


# ------------------------------------------------------------------------------- sampling

def interpolations(gen: Generator, s: GANSettings, params, stats, rng, rows: int, steps: int,
                   truncation: float, label: int):
  """`rows` slerp paths of `steps` points between random latent pairs: [rows, steps, H, W, C]."""
  k1, k2, ky = jax.random.split(rng, 3)
  a, b = latents(s, k1, rows, truncation), latents(s, k2, rows, truncation)
  z = slerp_grid(a, b, steps).reshape(rows * steps, s.latent_dim)
  y = jnp.full((rows,), label, jnp.int32) if label >= 0 else random_labels(s, ky, rows)
  x = generate(gen, s, params, z, jnp.repeat(y, steps), stats)
  return x.reshape((rows, steps) + x.shape[1:])


def sample(gen: Generator, s: GANSettings, params, rng, num, truncation=0.0, interpolate=False,
           steps=8, label=-1):
  """`num` samples from the (EMA) generator: [num, H, W, C].

  truncation: t > 0 draws each latent coordinate from N(0, 1) truncated to [-t, t] (the
    truncation trick, Brock et al. 2019): smaller t, cleaner but less varied samples.
  interpolate: rows of `steps` images along a spherical path between two random latents
    (num // steps rows, at least one): [rows, steps, H, W, C], one path per grid row.
  label: the class to draw (conditional models); -1 draws classes uniformly.
  """
  nc = s.num_classes
  label = int(label)
  if label >= 0 and not nc:
    raise ValueError("--label needs a class-conditional model (model.conditional=True)")
  if nc and label >= nc:
    raise ValueError(f"--label must be in [0, {nc}) or -1, got {label}")
  if int(steps) < 2:
    raise ValueError(f"--steps must be >= 2, got {steps}")
  truncation = float(truncation)
  stats = standing_stats(gen, s, params)
  kz, ky = jax.random.split(rng)
  if interpolate:
    steps = int(steps)
    rows = max(1, num // steps)
    return interpolations(gen, s, params, stats, kz, rows, steps, truncation, label)
  y = jnp.full((num,), label, jnp.int32) if label >= 0 else random_labels(s, ky, num)
  return generate(gen, s, params, latents(s, kz, num, truncation), y, stats)


def visualize(gen: Generator, s: GANSettings, state: GANState, batch, rng):
  """`interpolations` [8, 10, H, W, C] (8 slerp paths of 10 points) and, if conditional,
  `classes` [min(classes, 10), 8, H, W, C] (one class per row, one latent per column)."""
  params = state.sample_params
  stats = standing_stats(gen, s, params)
  k_i, k_c = jax.random.split(rng)
  pics = {"interpolations": interpolations(gen, s, params, stats, k_i, 8, 10, 0.0, -1)}
  if s.num_classes:
    ncls, cols = min(s.num_classes, 10), 8
    z = jnp.tile(latents(s, k_c, cols), (ncls, 1))  # One latent per column, shared by rows.
    y = jnp.repeat(jnp.arange(ncls, dtype=jnp.int32), cols)
    x = generate(gen, s, params, z, y, stats)
    pics["classes"] = x.reshape((ncls, cols) + x.shape[1:])
  return pics


# --------------------------------------------------------------------------------- wiring

def make(config, spec: DataSpec) -> Pipeline:
  gen, disc, s = parts(config, spec)
  num_steps = config.train.num_steps
  g_tx = make_optimizer(config.optim, num_steps)
  d_optim = config.optim.copy_and_resolve_references()  # Shared but for D's own rate.
  d_optim.lr = config.gan.d_lr
  d_tx = make_optimizer(d_optim, num_steps)
  return Pipeline(
      init=functools.partial(init, gen, disc, s, g_tx, d_tx),
      train_step=functools.partial(train_step, gen, disc, s),
      eval_step=functools.partial(eval_step, gen, disc, s),
      sample=functools.partial(sample, gen, s),
      visualize=functools.partial(visualize, gen, s),
      compiler_options=xla.CONVNET_CPU)
