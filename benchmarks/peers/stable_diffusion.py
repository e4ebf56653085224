"""Text-to-image sampling: gen's imported Stable Diffusion pipeline against diffusers'.

  python benchmarks/peers/stable_diffusion.py [--size=128] [--steps=20] [--batch=1,4]
      [--sampler=dpmpp_2m] [--repeats=3] [--threads=2] [--no_compile] [--json]

One random-weight pipeline of Stable Diffusion 1.x's shape at a CPU size (CLIP text encoder,
4 layers of width 128 on a 634-token BPE vocabulary; a UNet2DConditionModel with SD 1.5's
blocks, (32, 64, 128, 128) channels, 2 layers per block, 8 heads; an AutoencoderKL of (32,
64, 128, 128) channels; `--size` pixels, latents size / 8), written with diffusers'
`save_pretrained`, then imported with `gen import`. Both sides draw `--batch` images of two
prompts with negative prompts, guidance 7.5, `--steps` steps of DPM-Solver++(2M) from the same
latents, output_type "np": gen's `text_to_image.generate` (tokenizer, then one compiled
program) against `StableDiffusionPipeline.__call__`, eager and with the UNet and the VAE's
decoder `torch.compile`d. Timed in turns in one process (`measure.in_turns`); `ratio_*` is
gen's images/s over theirs; the first call (compilation) is reported apart. The images agree
to float32 rounding (`max_abs_diff`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile

import compare
import jax
import numpy as np
import torch

import measure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = ("a photo of an astronaut riding a horse on the moon",
           "portrait of a cat wearing a hat, studio lighting")
NEGATIVE = ("blurry, low quality", "")
CHANNELS = (32, 64, 128, 128)


def fixture_script():
  path = os.path.join(ROOT, "tests", "fixtures", "make_diffusers_sd.py")
  spec = importlib.util.spec_from_file_location("make_diffusers_sd", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def write_pipeline(folder: str, size: int) -> None:
  """A random SD-1.x-shaped StableDiffusionPipeline folder (PNDM's config, as 1.x ships)."""
  import diffusers
  import transformers

  maker = fixture_script()
  vocab, merges = maker.build_vocab()
  tok_dir = os.path.join(folder, "tokenizer")
  os.makedirs(tok_dir, exist_ok=True)
  with open(os.path.join(tok_dir, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump(vocab, f, ensure_ascii=False)
  with open(os.path.join(tok_dir, "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
  transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77).save_pretrained(
      tok_dir)
  text = transformers.CLIPTextConfig(
      vocab_size=len(vocab), hidden_size=128, intermediate_size=512, num_hidden_layers=4,
      num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
      eos_token_id=vocab["<|endoftext|>"], hidden_act="quick_gelu")
  transformers.CLIPTextModel(text).save_pretrained(os.path.join(folder, "text_encoder"))
  diffusers.AutoencoderKL(
      block_out_channels=CHANNELS, down_block_types=("DownEncoderBlock2D",) * 4,
      up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
      norm_num_groups=32, sample_size=size).save_pretrained(os.path.join(folder, "vae"))
  diffusers.UNet2DConditionModel(
      sample_size=size // 8, block_out_channels=CHANNELS, layers_per_block=2,
      attention_head_dim=8, cross_attention_dim=128, norm_num_groups=32).save_pretrained(
          os.path.join(folder, "unet"))
  maker.write_pipeline_files(folder, "sd1")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--size", type=int, default=128, help="image height and width")
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--batch", default="1,4", help="images per call, comma-separated")
  ap.add_argument("--sampler", default="dpmpp_2m")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--no_compile", action="store_true", help="skip torch.compile")
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args(argv)
  versions = compare.setup(args.threads)
  import diffusers

  from gen.core.interop import write_new_workdir
  from gen.diffusion import text_to_image
  from gen.diffusion.diffusers import sd_importer

  maker = fixture_script()
  out = {**measure.device_info(), **versions, "size": args.size, "steps": args.steps,
         "sampler": args.sampler, "rows": []}
  with tempfile.TemporaryDirectory() as tmp:
    folder, workdir = os.path.join(tmp, "pipeline"), os.path.join(tmp, "run")
    write_pipeline(folder, args.size)
    write_new_workdir(workdir, lambda w: sd_importer.write(folder, w))
    model = text_to_image.load(workdir)
    out["params"] = int(sum(x.size for x in jax.tree.leaves(model.params)))
    variants = [("eager", False)] + ([] if args.no_compile else [("compiled", True)])
    pipes = {}
    for name, compiled in variants:
      pipe = diffusers.StableDiffusionPipeline.from_pretrained(
          folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
      pipe.scheduler = getattr(diffusers, maker.SAMPLER_CLASSES[args.sampler]).from_config(
          pipe.scheduler.config)
      pipe.set_progress_bar_config(disable=True)
      if compiled:
        pipe.unet = torch.compile(pipe.unet)
        pipe.vae.decoder = torch.compile(pipe.vae.decoder)
      pipes[name] = pipe
    for batch in [int(b) for b in args.batch.split(",")]:
      prompts = [PROMPTS[i % 2] for i in range(batch)]
      negative = [NEGATIVE[i % 2] for i in range(batch)]
      latents = np.asarray(jax.random.normal(jax.random.key(batch),
                                             (batch, args.size // 8, args.size // 8, 4)))

      def ours():
        return text_to_image.generate(model, prompts, negative, guidance=7.5,
                                      steps=args.steps, sampler=args.sampler, latents=latents)

      def theirs(pipe):
        def run():
          lat = torch.from_numpy(latents.transpose(0, 3, 1, 2).copy())
          with torch.inference_mode():
            return pipe(prompts, negative_prompt=negative, num_inference_steps=args.steps,
                        guidance_scale=7.5, latents=lat, output_type="np").images
        return run

      runs = {"ours": ours, **{name: theirs(pipes[name]) for name, _ in variants}}
      row = {"batch": batch, "first_call_s": {k: compare.first_call(f) for k, f in runs.items()}}
      row["max_abs_diff"] = float(np.abs(ours() - runs["eager"]()).max())
      t = compare.alternate(runs, args.repeats)
      row["images_per_s"] = {k: batch / v for k, v in t.items()}
      for name, _ in variants:
        row[f"ratio_{name}"] = t[name] / t["ours"]
      out["rows"].append(row)
  if args.json:
    print(json.dumps(out))
    return out
  print(f"{args.size}x{args.size}, {args.steps} {args.sampler} steps, guidance 7.5, "
        f"{out['params']:,} params, {versions}")
  for r in out["rows"]:
    ips = ", ".join(f"{k} {v:.3f}" for k, v in r["images_per_s"].items())
    first = ", ".join(f"{k} {v:.1f}s" for k, v in r["first_call_s"].items())
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in r.items() if k.startswith("ratio_"))
    print(f"  batch {r['batch']}: images/s {ips}; gen / diffusers: {ratios}; first call "
          f"{first}; max |difference| {r['max_abs_diff']:.1e}")
  return out


if __name__ == "__main__":
  main()
