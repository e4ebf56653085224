"""A Stable Diffusion 1.x / 2.x pipeline folder's networks, and the pieces of its text-to-image
step that are not the scheduler: prompt encoding, the guided UNet output, latent decoding.

`load(folder)` reads a `StableDiffusionPipeline.save_pretrained` folder (model_index.json,
tokenizer/, text_encoder/, vae/, unet/; the scheduler/, safety_checker/ and
feature_extractor/ are not read here) into a `StableDiffusion` record, checking that the
components fit each other before any weights are read: the text encoder's width is the UNet's
cross_attention_dim, the VAE's latent channels are the UNet's, the tokenizer's ids and length
fit the text encoder. What each does as diffusers' StableDiffusionPipeline does it:
- `encode_prompt`: the tokenizer's ids (eagerly, padded to 77 and truncated), the text
  encoder's last hidden state (with clip_skip k, the k-th block from the end through the final
  LayerNorm); for guidance, the negative prompts ("" by default) through the last hidden
  state, without clip_skip, as diffusers does;
- `guided_eps`: one UNet call on [uncond; cond] and uncond + scale * (cond - uncond);
- `decode_latents`: the VAE's decoding of latents / scaling_factor (+ shift_factor), mapped
  from [-1, 1] to [0, 1] and clipped, as the pipeline's output_type "np".
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp

from gen.core.interop import InputError, read_json
from gen.diffusion.diffusers import autoencoder_kl, clip, unet2d_condition

MODEL_INDEX = "model_index.json"
PIPELINES = ("StableDiffusionPipeline",)
# model_index.json entries this reads: the folder and the class it must hold.
COMPONENTS = {"tokenizer": ("transformers", "CLIPTokenizer", "CLIPTokenizerFast"),
              "text_encoder": ("transformers", "CLIPTextModel"),
              "vae": ("diffusers", "AutoencoderKL"),
              "unet": ("diffusers", "UNet2DConditionModel")}


@dataclasses.dataclass(frozen=True)
class StableDiffusion:
  """The networks of a pipeline folder. `params` holds "text_encoder", "vae" and "unet".
  `latent_shape`: the UNet's sample_size x sample_size x in_channels; `image_shape`: that
  times the VAE's downscale (the pipeline's default height and width)."""

  tokenizer: clip.CLIPTokenizer
  text_encoder: clip.CLIPTextModel
  vae: autoencoder_kl.AutoencoderKL
  unet: unet2d_condition.UNet2DCondition
  params: dict
  scaling_factor: float
  shift_factor: float
  latent_shape: tuple[int, int, int]
  image_shape: tuple[int, int, int]


def recognizes(folder: str) -> bool:
  """Whether `folder` is a Stable Diffusion pipeline folder (its model_index.json's class)."""
  try:
    return read_json(os.path.join(folder, MODEL_INDEX)).get("_class_name") in PIPELINES
  except InputError:
    return False


def _check_index(folder: str) -> None:
  path = os.path.join(folder, MODEL_INDEX)
  d = read_json(path)
  if d.get("_class_name") not in PIPELINES:
    raise InputError(f"{path}: _class_name={d.get('_class_name')!r} is not supported (this "
                     f"reads {', '.join(PIPELINES)})")
  for name, (library, *classes) in COMPONENTS.items():
    entry = d.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in classes):
      raise InputError(f"{path}: {name}={entry!r} is not supported (expected [{library!r}, "
                       f"{classes[0]!r}])")


def read_configs(folder: str) -> dict:
  """The checked configs of a pipeline folder's parts, before any weights: `text_encoder`,
  `vae`, `unet` (their `read_config`s) and the `tokenizer`; one-line InputErrors name the file
  and the field that does not fit."""
  _check_index(folder)
  sub = {name: os.path.join(folder, name) for name in COMPONENTS}
  text_cfg = clip.read_config(sub["text_encoder"])
  vae_cfg = autoencoder_kl.read_config(sub["vae"])
  unet_cfg = unet2d_condition.read_config(sub["unet"])
  unet_path = os.path.join(sub["unet"], unet2d_condition.CONFIG)
  if unet_cfg["cross_attention_dim"] != text_cfg["hidden_size"]:
    raise InputError(f"{unet_path}: cross_attention_dim={unet_cfg['cross_attention_dim']} is "
                     f"not the text encoder's hidden_size={text_cfg['hidden_size']}")
  latent = vae_cfg["module"]["latent_channels"]
  if unet_cfg["shape"][2] != latent or unet_cfg["module"]["out_channels"] != latent:
    raise InputError(f"{unet_path}: in_channels={unet_cfg['shape'][2]} / out_channels="
                     f"{unet_cfg['module']['out_channels']} are not the VAE's "
                     f"latent_channels={latent}")
  tokenizer = clip.load_tokenizer(sub["tokenizer"])
  if tokenizer.vocab_size > text_cfg["vocab_size"]:
    raise InputError(f"{sub['tokenizer']}: {tokenizer.vocab_size} tokens, more than the text "
                     f"encoder's vocab_size={text_cfg['vocab_size']}")
  if tokenizer.model_max_length > text_cfg["max_position_embeddings"]:
    raise InputError(f"{sub['tokenizer']}: model_max_length={tokenizer.model_max_length} is over "
                     f"the text encoder's max_position_embeddings="
                     f"{text_cfg['max_position_embeddings']}")
  return {"text_encoder": text_cfg, "vae": vae_cfg, "unet": unet_cfg, "tokenizer": tokenizer}


def load(folder: str, dtype=jnp.float32) -> StableDiffusion:
  """The networks of a StableDiffusionPipeline folder (see the module docstring); a one-line
  InputError names the file and the field or tensor that does not fit."""
  cfgs = read_configs(folder)
  sub = {name: os.path.join(folder, name) for name in COMPONENTS}
  text_encoder, text_params = clip.load_text_encoder(sub["text_encoder"], dtype)
  vae, vae_params, vae_info = autoencoder_kl.load_vae(sub["vae"], dtype)
  unet, unet_params, unet_info = unet2d_condition.load_unet(sub["unet"], dtype)
  h, w, c = unet_info["shape"]
  f = vae_info["downscale"]
  return StableDiffusion(cfgs["tokenizer"], text_encoder, vae, unet,
                         {"text_encoder": text_params, "vae": vae_params, "unet": unet_params},
                         vae_info["scaling_factor"], vae_info["shift_factor"], (h, w, c),
                         (h * f, w * f, vae.out_channels))


# ----------------------------------------------------------- as a gen config and back


def config_fields(cfgs: dict) -> dict:
  """`model.text_to_image`'s `text_encoder`, `vae` and `unet` keys of `read_configs`' result
  (the UNet's fields named as in its config.json, one value per block)."""
  m = cfgs["unet"]["module"]
  down = {v: k for k, v in unet2d_condition.DOWN_BLOCKS.items()}
  up = {v: k for k, v in unet2d_condition.UP_BLOCKS.items()}
  unet = {"out_channels": m["out_channels"], "block_out_channels": tuple(m["block_out_channels"]),
          "down_block_types": tuple(down[a] for a in m["down_attention"]),
          "up_block_types": tuple(up[a] for a in m["up_attention"]),
          "attention_head_dim": tuple(m["heads"]), "layers_per_block": tuple(m["layers"]),
          "transformer_layers_per_block": tuple(m["transformer_layers"]),
          "cross_attention_dim": cfgs["unet"]["cross_attention_dim"],
          **{k: m[k] for k in ("norm_num_groups", "norm_eps", "flip_sin_to_cos", "freq_shift",
                               "downsample_padding", "mid_block_scale_factor",
                               "use_linear_projection", "upcast_attention")}}
  unet["freq_shift"] = float(unet["freq_shift"])
  unet["mid_block_scale_factor"] = float(unet["mid_block_scale_factor"])
  vae = dict(cfgs["vae"]["module"], block_out_channels=tuple(
      cfgs["vae"]["module"]["block_out_channels"]), scaling_factor=cfgs["vae"]["scaling_factor"],
             shift_factor=float(cfgs["vae"]["shift_factor"]))
  return {"text_encoder": dict(cfgs["text_encoder"]), "vae": vae, "unet": unet}


def from_config(t, tokenizer: clip.CLIPTokenizer | None, image_shape, dtype=jnp.float32
                ) -> StableDiffusion:
  """The networks of `model.text_to_image` (`t`, as `config_fields` writes it) for images of
  `image_shape` (no params: `params` is {})."""
  te = clip.CLIPTextModel(**{k: t.text_encoder[k] for k in t.text_encoder}, dtype=dtype)
  v = dict(t.vae)
  scaling, shift = v.pop("scaling_factor"), v.pop("shift_factor")
  vae = autoencoder_kl.AutoencoderKL(**dict(v, block_out_channels=tuple(v["block_out_channels"])),
                                     dtype=dtype)
  unet = unet2d_condition.from_config(t.unet, dtype=dtype)
  f = 2 ** (len(vae.block_out_channels) - 1)
  h, w, _ = image_shape
  return StableDiffusion(tokenizer, te, vae, unet, {}, float(scaling), float(shift),
                         (h // f, w // f, vae.latent_channels), tuple(image_shape))


def tokenize(sd: StableDiffusion, prompts, negative_prompts=None):
  """(ids, negative ids), int32 [B, 77], eagerly; negative_prompts: None ("" for each prompt),
  one string for all, or one per prompt."""
  prompts = [prompts] if isinstance(prompts, str) else list(prompts)
  if negative_prompts is None:
    negative_prompts = [""] * len(prompts)
  elif isinstance(negative_prompts, str):
    negative_prompts = [negative_prompts] * len(prompts)
  elif len(negative_prompts) != len(prompts):
    raise ValueError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts")
  return sd.tokenizer(prompts), sd.tokenizer(list(negative_prompts))


def encode_prompt(sd: StableDiffusion, params, ids, negative_ids=None, clip_skip: int = 0):
  """The encoder states of `tokenize`'s ids: cond [B, 77, width], and with `negative_ids` also
  uncond (their last hidden state: diffusers applies clip_skip to the prompt only). Traceable."""
  p = params["text_encoder"]
  cond = clip.encode(sd.text_encoder, p, jnp.asarray(ids), clip_skip)
  if negative_ids is None:
    return cond
  return cond, clip.encode(sd.text_encoder, p, jnp.asarray(negative_ids), 0)


def unet_pair(sd: StableDiffusion, params, latents, t, cond, uncond):
  """The UNet's (unconditional, conditional) outputs at latents [B, h, w, c] and diffusers'
  timestep t, from one call on [latents; latents] with [uncond; cond], as the pipeline
  batches them."""
  t = jnp.asarray(t)
  t2 = jnp.concatenate([t, t]) if t.ndim else t
  out = sd.unet.apply({"params": params["unet"]}, jnp.concatenate([latents, latents]), t2,
                      jnp.concatenate([uncond, cond]))
  return tuple(jnp.split(out, 2))


def guided_eps(sd: StableDiffusion, params, latents, t, cond, uncond=None,
               guidance_scale: float = 7.5):
  """The UNet's output at latents [B, h, w, c] and diffusers' timestep t with classifier-free
  guidance: one call on [uncond; cond], then uncond + guidance_scale * (cond - uncond) (no
  guidance when uncond is None). guidance_scale may be traced."""
  if uncond is None:
    return sd.unet.apply({"params": params["unet"]}, latents, t, cond)
  out_uncond, out_cond = unet_pair(sd, params, latents, t, cond, uncond)
  return out_uncond + guidance_scale * (out_cond - out_uncond)


def decode_latents(sd: StableDiffusion, params, latents):
  """Images in [0, 1], [B, H, W, 3], of the diffusion model's latents, as the pipeline's
  output_type "np" (before its conversion to uint8 for PIL)."""
  z = autoencoder_kl.from_latents(latents, sd.scaling_factor, sd.shift_factor)
  image = sd.vae.apply({"params": params["vae"]}, z, method=autoencoder_kl.AutoencoderKL.decode)
  return jnp.clip(image / 2 + 0.5, 0.0, 1.0)


def initial_latents(sd: StableDiffusion, rng, num: int, init_noise_sigma: float = 1.0):
  """N(0, init_noise_sigma^2) latents of the UNet's shape (the scheduler sets the sigma)."""
  return init_noise_sigma * jax.random.normal(rng, (num, *sd.latent_shape), jnp.float32)


__all__ = ["StableDiffusion", "config_fields", "decode_latents", "encode_prompt",
           "from_config", "guided_eps", "initial_latents", "load", "read_configs", "recognizes",
           "tokenize", "unet_pair"]
