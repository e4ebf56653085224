"""Our diffusion samplers and train steps against diffusers' models of the same layout.

  python benchmarks/peers/diffusion.py --config=configs/diffusion/digits.py [--steps=50]
      [--batch=64] [--train_batch=0] [--no_compile] [--json] [--config.a.b=V ...]
  python benchmarks/peers/diffusion.py --model=ddpm-cifar10 [--steps=10 --batch=8 ...]
  python benchmarks/peers/diffusion.py --model=dit-s2 [--steps=10 --batch=8 ...]

`--model` picks the network:
- `config` (default): our UNet from `--config`; diffusers' UNet2DModel is built from that
  config with random weights, float32: the same channels per level, residual blocks per level
  (one more on the way up), self-attention at the same resolutions and in the middle,
  GroupNorm groups, scale-shift time conditioning, strided-conv downsampling and nearest +
  conv upsampling.
- `ddpm-cifar10`: diffusers' UNet2DModel in google/ddpm-cifar10-32's layout (32x32x3,
  block_out_channels (128, 256, 256, 256), 2 layers per block, attention at 16x16 with one
  head, 32 GroupNorm groups; DDPM's dropout 0.1 for training), random weights written with
  `save_pretrained` beside DDPM's scheduler config and imported as `gen import` does
  (`gen.diffusion.diffusers.importer`): the same network on both sides, gen's `unet2d`.
  Training uses DDPM's Adam (lr 2e-4), clipping at 1 and EMA 0.9999.
- `dit-s2`: DiT-S/2's shape on 32x32x4 latents, class-conditional on 1000 classes (width
  384, depth 12, 6 heads, patch 2, MLP 4x, label dropout 0.1): our DiT (`model.arch=dit`,
  eps objective) against diffusers' DiTTransformer2DModel of the same shape, out_channels 4
  (no learned variance). diffusers' blocks each carry their own timestep MLP and label table
  (AdaLayerNormZero's embedding), ours share one, so theirs has more parameters (both
  counts are printed); the extra work is on [B, 384] vectors. Training: DiT's Adam (lr
  1e-4, no clipping), EMA 0.9999.

Sampling: DDIM with the same step count and batch (ours: `sampler=ddim`, one compiled loop;
theirs: `DDIMScheduler` around the model, eager and `torch.compile`d; a conditional model
gets the classes in turn). Training: one step at the config's batch (or --train_batch), the
config's optimizer settings on both sides, MSE on the noise (ours: the config's objective).
`--config.a.b=V` overrides apply to `--model`'s config as well. Each group is timed in
turns; `ratio_*` is our throughput over theirs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import tempfile
from collections.abc import Callable

import compare
import jax
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel, UNet2DModel

import measure
import sampling
import train_step
from gen.core import config as config_lib
from gen.core.family import DataSpec
from gen.core.train import build
from gen.diffusion.config import default_config
from gen.diffusion.models import num_groups

# google/ddpm-cifar10-32's config.json (diffusers' UNet2DModel), with DDPM's dropout.
DDPM_CIFAR10 = {
    "sample_size": 32, "in_channels": 3, "out_channels": 3,
    "block_out_channels": (128, 256, 256, 256), "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": None, "norm_num_groups": 32, "norm_eps": 1e-6, "freq_shift": 1,
    "flip_sin_to_cos": False, "downsample_padding": 0, "dropout": 0.1}
DDPM_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                  "beta_schedule": "linear", "clip_sample": True, "variance_type": "fixed_small"}
# What DDPM trained it with (Ho et al. 2020).
DDPM_TRAIN = {"optim.lr": 2e-4, "optim.schedule": "constant", "optim.warmup_steps": 0,
              "optim.grad_clip": 1.0, "optim.ema_decay": 0.9999, "optim.name": "adamw",
              "optim.b1": 0.9, "optim.b2": 0.999, "optim.weight_decay": 0.0}
LATENT_SHAPE, IMAGENET_CLASSES = (32, 32, 4), 1000


@dataclasses.dataclass
class Setup:
  """What both sides run: our config, data spec and pipeline (`params` to sample with, or
  None for a random init), and diffusers' model with its call `(model, x, t, labels)`."""

  config: object
  spec: DataSpec
  pipe: object
  params: object
  torch_model: Callable[[], torch.nn.Module]
  call: Callable
  conditional: bool = False


def unet_like(config, spec) -> UNet2DModel:
  m, u = config.model, config.model.unet
  if m.arch != "unet":
    raise ValueError("the diffusers peer mirrors the UNet: set model.arch=unet")
  h, _, c = spec.shape
  chans = [u.channels * k for k in u.channel_mult]
  groups = {num_groups(ch, u.groups) for ch in chans}
  if len(groups) != 1:
    raise ValueError(f"diffusers uses one GroupNorm group count; this config has {groups}")
  attn = [h // 2**i in u.attn_resolutions for i in range(len(chans))]
  return UNet2DModel(
      sample_size=h, in_channels=c, out_channels=c, block_out_channels=tuple(chans),
      layers_per_block=u.num_res_blocks,
      down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
      up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
      norm_num_groups=groups.pop(), attention_head_dim=chans[-1] // u.heads,
      resnet_time_scale_shift="scale_shift", add_attention=True, dropout=m.dropout,
      time_embedding_dim=4 * u.channels)


def dit_like(config, spec) -> DiTTransformer2DModel:
  """diffusers' DiT of our DiT's shape (no learned variance: out_channels = in_channels)."""
  d, (h, _, c) = config.model.dit, spec.shape
  if d.positions != "sincos" or d.mlp_ratio != 4.0:
    raise ValueError("diffusers' DiT has sine-cosine positions and a 4x MLP")
  return DiTTransformer2DModel(
      num_attention_heads=d.heads, attention_head_dim=d.dim // d.heads, in_channels=c,
      out_channels=c, num_layers=d.depth, sample_size=h, patch_size=d.patch,
      dropout=config.model.dropout, num_embeds_ada_norm=1000)


def unet_call(model, x, t, labels):
  return model(x, t).sample


def dit_call(model, x, t, labels):
  return model(x, timestep=t.expand(x.shape[0]), class_labels=labels).sample


def from_config(args, overrides) -> Setup:
  config, spec, pipe = measure.load(args.config, overrides)
  return Setup(config, spec, pipe, None, lambda: unet_like(config, spec), unet_call)


def ddpm_cifar10(args, overrides) -> Setup:
  """google/ddpm-cifar10-32's layout written by diffusers, then imported."""
  from gen.core import runs
  from gen.core.interop import write_new_workdir
  from gen.diffusion.diffusers import importer

  with tempfile.TemporaryDirectory() as tmp:
    folder, workdir = os.path.join(tmp, "unet"), os.path.join(tmp, "run")
    UNet2DModel(**DDPM_CIFAR10).save_pretrained(folder, safe_serialization=True)
    DDPMScheduler(**DDPM_SCHEDULER).save_pretrained(folder)
    write_new_workdir(workdir, lambda w: importer.write(folder, w))
    # The imported weights for sampling; the config again with an optimizer for training.
    _, spec, frozen, state, _ = runs.load_workdir(workdir, overrides)
    params = frozen.sample_params(state)
    config = runs.load_config(workdir, [f"{k}={v}" for k, v in DDPM_TRAIN.items()]
                              + list(overrides))
    pipe = build(config, spec)
    unet = UNet2DModel.from_pretrained(folder)  # The imported weights: the same network.
  return Setup(config, spec, pipe, params, lambda: unet, unet_call)


def dit_s2_config(overrides=()):
  """Our DiT at DiT-S/2's shape, class-conditional, eps on the linear schedule."""
  c = default_config()
  c.data.batch_size = 8
  c.model.update(arch="dit", conditional=True, label_dropout=0.1, dropout=0.0)
  c.model.dit.update(dim=384, depth=12, heads=6, patch=2, mlp_ratio=4.0, positions="sincos")
  c.diffusion.update(objective="eps", schedule="linear", sampler="ddim", sample_steps=10)
  c.optim.update(name="adamw", lr=1e-4, weight_decay=0.0, schedule="constant",
                 warmup_steps=0, grad_clip=0.0, ema_decay=0.9999)
  config_lib.apply_overrides(c, overrides)
  config_lib.validate(c)
  c.lock()
  return c


def dit_s2(args, overrides) -> Setup:
  config = dit_s2_config(overrides)
  spec = DataSpec.images(LATENT_SHAPE, IMAGENET_CLASSES, "scale")
  pipe = build(config, spec)
  return Setup(config, spec, pipe, None, lambda: dit_like(config, spec), dit_call, True)


MODELS = {"config": from_config, "ddpm-cifar10": ddpm_cifar10, "dit-s2": dit_s2}


def torch_labels(setup: Setup, batch: int):
  if not setup.conditional:
    return None
  return torch.arange(batch) % setup.spec.num_classes  # Ours: the classes in turn.


def sample_fn(setup: Setup, model, steps: int, batch: int):
  sched = DDIMScheduler(num_train_timesteps=1000)
  sched.set_timesteps(steps)
  h, w, c = setup.spec.shape
  labels = torch_labels(setup, batch)

  def run():
    with torch.inference_mode():
      x = torch.randn(batch, c, h, w)
      for t in sched.timesteps:
        x = sched.step(setup.call(model, x, t, labels), t, x).prev_sample
  return run


def train_fn(setup: Setup, model, batch: int, compiled: bool):
  o = setup.config.optim
  sched = DDIMScheduler(num_train_timesteps=1000)
  params = list(model.parameters())
  opt = torch.optim.Adam(params, lr=o.lr, betas=(o.b1, o.b2))
  ema = [p.detach().clone() for p in params]
  h, w, c = setup.spec.shape
  x0 = torch.rand(batch, c, h, w) * 2 - 1
  labels = torch_labels(setup, batch)
  model.train()
  forward = torch.compile(model) if compiled else model

  def run():
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (batch,))
    loss = F.mse_loss(setup.call(forward, sched.add_noise(x0, noise, t), t, labels), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if o.grad_clip > 0:
      torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
    opt.step()
    if o.ema_decay > 0:
      with torch.no_grad():
        torch._foreach_lerp_(ema, params, 1.0 - o.ema_decay)
  return run


def fresh(setup: Setup):
  """diffusers' model, a copy for each variant (training one must not change another)."""
  return copy.deepcopy(setup.torch_model())


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--model", default="config", choices=list(MODELS))
  ap.add_argument("--config", default="configs/diffusion/digits.py", help="for --model=config")
  ap.add_argument("--steps", type=int, default=50, help="DDIM steps")
  ap.add_argument("--batch", type=int, default=64, help="images sampled at once")
  ap.add_argument("--train_batch", type=int, default=0, help="default: data.batch_size")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--no_compile", action="store_true", help="skip torch.compile")
  ap.add_argument("--json", action="store_true")
  args, overrides = ap.parse_known_args(argv)
  versions = compare.setup(args.threads)
  setup = MODELS[args.model](args, overrides)
  config, spec, pipe = setup.config, setup.spec, setup.pipe
  peak = measure.peaks(measure.dtype_of(config))
  out = {"model": args.model, **({"config": args.config} if args.model == "config" else {}),
         **measure.device_info(), **versions, "peak": peak}
  variants = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])

  params = setup.params if setup.params is not None else sampling.init_params(pipe, spec)
  bench = sampling.diffusion(pipe, config, spec, params, "ddim", args.steps, args.batch)
  runs, compile_s = {"ours": bench.run}, {}
  for name, compiled in variants:
    model = fresh(setup).eval()
    runs[name] = sample_fn(setup, torch.compile(model) if compiled else model, args.steps,
                           args.batch)
    compile_s[name] = compare.first_call(runs[name])
  t = compare.alternate(runs, args.repeats)
  row = bench.result(t["ours"], peak)
  row["diffusers_params"] = sum(p.numel() for p in model.parameters())
  row["our_params"] = sum(x.size for x in jax.tree.leaves(params))
  for name, _ in variants:
    row[f"diffusers_{name}_images_per_s"] = args.batch / t[name]
    row[f"diffusers_{name}_first_call_s"] = compile_s[name]
    row[f"ratio_{name}"] = t[name] / t["ours"]
  out["sample"] = [row]

  ours = train_step.bench(config, spec, pipe, args.train_batch or None)
  runs, compile_s = {"ours": ours.run}, {}
  for name, compiled in variants:
    runs[name] = train_fn(setup, fresh(setup), ours.meta["batch"], compiled)
    compile_s[name] = compare.first_call(runs[name])
  t = compare.alternate(runs, args.repeats)
  row = train_step.result(ours, t["ours"], peak)
  for name, _ in variants:
    row[f"diffusers_{name}_examples_per_s"] = ours.items / t[name]
    row[f"diffusers_{name}_first_call_s"] = compile_s[name]
    row[f"ratio_{name}"] = t[name] / t["ours"]
  out["train"] = [row]
  measure.report(out, args.json)


if __name__ == "__main__":
  main()
