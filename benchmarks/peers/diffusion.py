"""Our UNet sampler and train step against diffusers' UNet2DModel of the same layout.

  python benchmarks/peers/diffusion.py --config=configs/diffusion/digits.py [--steps=50]
      [--batch=64] [--train_batch=0] [--no_compile] [--json] [--config.a.b=V ...]

diffusers' model is built from our config with random weights, float32: the same
channels per level, residual blocks per level (one more on the way up), self-attention at
the same resolutions and in the middle, GroupNorm groups, scale-shift time conditioning,
strided-conv downsampling and nearest + conv upsampling. Sampling: DDIM with the same
step count and batch (ours: `sampler=ddim`, one compiled loop; theirs: `DDIMScheduler`
around the model, eager and `torch.compile`d). Training: one step at the config's batch
(or --train_batch), Adam with the config's learning rate, global-norm clipping and an EMA
of the weights, MSE on the noise (ours: the config's objective). Each group is timed in
turns; `ratio_*` is our throughput over theirs.
"""

from __future__ import annotations

import argparse

import compare
import jax
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel

import measure
import sampling
import train_step
from gen.diffusion.models import num_groups


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


def sample_fn(unet, spec, steps: int, batch: int):
  sched = DDIMScheduler(num_train_timesteps=1000)
  sched.set_timesteps(steps)
  h, w, c = spec.shape

  def run():
    with torch.inference_mode():
      x = torch.randn(batch, c, h, w)
      for t in sched.timesteps:
        x = sched.step(unet(x, t).sample, t, x).prev_sample
  return run


def train_fn(unet, config, spec, batch: int, compiled: bool):
  o = config.optim
  sched = DDIMScheduler(num_train_timesteps=1000)
  params = list(unet.parameters())
  opt = torch.optim.Adam(params, lr=o.lr, betas=(o.b1, o.b2))
  ema = [p.detach().clone() for p in params]
  h, w, c = spec.shape
  x0 = torch.rand(batch, c, h, w) * 2 - 1
  unet.train()
  forward = torch.compile(unet) if compiled else unet

  def run():
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (batch,))
    loss = F.mse_loss(forward(sched.add_noise(x0, noise, t), t).sample, noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if o.grad_clip > 0:
      torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
    opt.step()
    if o.ema_decay > 0:
      with torch.no_grad():
        torch._foreach_lerp_(ema, params, 1.0 - o.ema_decay)
  return run


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--config", default="configs/diffusion/digits.py")
  ap.add_argument("--steps", type=int, default=50, help="DDIM steps")
  ap.add_argument("--batch", type=int, default=64, help="images sampled at once")
  ap.add_argument("--train_batch", type=int, default=0, help="default: data.batch_size")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--no_compile", action="store_true", help="skip torch.compile")
  ap.add_argument("--json", action="store_true")
  args, overrides = ap.parse_known_args(argv)
  versions = compare.setup(args.threads)
  config, spec, pipe = measure.load(args.config, overrides)
  peak = measure.peaks(measure.dtype_of(config))
  out = {"config": args.config, **measure.device_info(), **versions, "peak": peak}
  variants = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])

  bench, = sampling.benches(config, spec, pipe, [args.batch], [f"ddim:{args.steps}"])
  runs, compile_s = {"ours": bench.run}, {}
  for name, compiled in variants:
    unet = unet_like(config, spec).eval()
    runs[name] = sample_fn(torch.compile(unet) if compiled else unet, spec, args.steps,
                           args.batch)
    compile_s[name] = compare.first_call(runs[name])
  t = compare.alternate(runs, args.repeats)
  row = bench.result(t["ours"], peak)
  row["diffusers_params"] = sum(p.numel() for p in unet.parameters())
  row["our_params"] = sum(x.size for x in jax.tree.leaves(sampling.init_params(pipe, spec)))
  for name, _ in variants:
    row[f"diffusers_{name}_images_per_s"] = args.batch / t[name]
    row[f"diffusers_{name}_first_call_s"] = compile_s[name]
    row[f"ratio_{name}"] = t[name] / t["ours"]
  out["sample"] = [row]

  ours = train_step.bench(config, spec, pipe, args.train_batch or None)
  runs, compile_s = {"ours": ours.run}, {}
  for name, compiled in variants:
    runs[name] = train_fn(unet_like(config, spec), config, spec, ours.meta["batch"], compiled)
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
