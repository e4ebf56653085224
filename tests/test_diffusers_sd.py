"""Stable Diffusion 1.x / 2.x components from diffusers / transformers folders
(gen.diffusion.diffusers): CLIP's tokenizer gives transformers' ids, the text encoder, the
AutoencoderKL and the UNet2DConditionModel give the reference's outputs, and unsupported or
broken folders are one-line errors naming the field or tensor.

The default run reads the committed fixtures (tests/fixtures/diffusers_sd/sd1 and sd2, written
by tests/fixtures/make_diffusers_sd.py with the reference's outputs beside them): no torch
needed. The `peers` test builds fresh random components with torch, transformers and diffusers
and compares live; it is skipped where those are not installed.

How far float32 rounding alone moves the reference (diffusers' / transformers' float32 outputs
against the same models in float64, recorded in the fixtures as `*_ref64`, sd1 / sd2): text
last state 9.7e-7 / 8.4e-7, penultimate 7.9e-7 / 5.7e-7, clip_skip 1 1.0e-6 / 1.1e-6; VAE mean
4.8e-7 / 4.2e-7, logvar 4.1e-7 / 2.6e-7, decoded 1.3e-6 / 1.9e-6; UNet 6.2e-7 / 4.2e-7 (outputs
up to 1.27 / 1.21). gen's float32 outputs are that close to the reference's float32 ones (each
test's docstring), and the bounds below are 10 to 100 times that: a wrong mapping misses by
far more (`test_a_wrong_mapping_would_not_pass`).
"""

import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, fixture_script

from gen.core.interop import InputError
from gen.diffusion.diffusers import autoencoder_kl, clip, unet2d_condition

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "diffusers_sd")
VARIANTS = ("sd1", "sd2")
TEXT_TOL = 1e-5  # Max |text state difference|.
VAE_TOL = 1e-4  # Max |VAE mean / logvar / image difference|.
UNET_TOL = 1e-4  # Max |UNet output difference| / max(1, max |output|).


def _maker():
  return fixture_script("make_diffusers_sd")


def _ref(variant):
  return dict(np.load(os.path.join(FIXTURES, variant, "reference.npz")))


def _text(folder, ids):
  model, params = clip.load_text_encoder(os.path.join(folder, "text_encoder"))
  last, states = jax.jit(lambda p, i: model.apply({"params": p}, i))(params, ids)
  skip1 = jax.jit(lambda p, i: clip.encode(model, p, i, clip_skip=1))(params, ids)
  return model, params, np.asarray(last), [np.asarray(s) for s in states], np.asarray(skip1)


def _vae(folder, ref):
  model, params, info = autoencoder_kl.load_vae(os.path.join(folder, "vae"))
  encode = jax.jit(lambda p, x: model.apply({"params": p}, x,
                                            method=autoencoder_kl.AutoencoderKL.encode))
  decode = jax.jit(lambda p, z: model.apply({"params": p}, z,
                                            method=autoencoder_kl.AutoencoderKL.decode))
  mean, logvar = encode(params, ref["image"])
  return info, np.asarray(mean), np.asarray(logvar), np.asarray(decode(params, ref["latent"]))


def _unet_apply(model):
  return jax.jit(lambda p, x, t, c: model.apply({"params": p}, x, t, c))


def _unet(folder, ref, context):
  model, params, info = unet2d_condition.load_unet(os.path.join(folder, "unet"))
  out = _unet_apply(model)(params, ref["unet_x"], ref["unet_t"].astype(np.float32), context)
  return model, params, info, np.asarray(out)


def _compare(folder, ref, prompts):
  """Max differences from the reference `ref` of the components in `folder`."""
  n = len(ref["text_last"])
  tok = clip.load_tokenizer(os.path.join(folder, "tokenizer"))
  ids = tok(list(prompts))
  _, _, last, states, skip1 = _text(folder, jnp.asarray(ref["ids"][:n]))
  _, mean, logvar, decoded = _vae(folder, ref)
  k = len(ref["unet_t"])
  *_, out = _unet(folder, ref, ref["text_last"][:k])
  return {"ids_equal": bool(np.array_equal(ids, ref["ids"])),
          "num_states": len(states) == int(ref["text_num_states"]),
          "text_last": float(np.abs(last - ref["text_last"]).max()),
          "text_penultimate": float(np.abs(states[-2] - ref["text_penultimate"]).max()),
          "text_skip1": float(np.abs(skip1 - ref["text_skip1"]).max()),
          "vae_mean": float(np.abs(mean - ref["vae_mean"]).max()),
          "vae_logvar": float(np.abs(logvar - ref["vae_logvar"]).max()),
          "vae_decoded": float(np.abs(decoded - ref["vae_decoded"]).max()),
          "unet": float(np.abs(out - ref["unet_out"]).max())
          / max(1.0, float(np.abs(ref["unet_out"]).max()))}


def _check(d):
  assert d["ids_equal"] and d["num_states"], d
  assert max(d["text_last"], d["text_penultimate"], d["text_skip1"]) <= TEXT_TOL, d
  assert max(d["vae_mean"], d["vae_logvar"], d["vae_decoded"]) <= VAE_TOL, d
  assert d["unet"] <= UNET_TOL, d


@pytest.mark.parametrize("variant", VARIANTS)
def test_components_match_the_reference(variant):
  """Measured on the fixtures (sd1 / sd2): token ids identical (7 prompts: punctuation, tabs,
  contractions, accents, CJK, an emoji, an empty one, one cut at 77); text last state 1.3e-6 /
  1.2e-6, penultimate 9.5e-7 / 7.7e-7, clip_skip 1 1.4e-6 / 1.3e-6; VAE mean 4.8e-7 / 3.0e-7,
  logvar 3.7e-7 / 3.0e-7, decoded 1.1e-6 / 2.1e-6; UNet 5.2e-7 / 5.2e-7 of the output scale."""
  d = _compare(os.path.join(FIXTURES, variant), _ref(variant), _maker().PROMPTS)
  print(f"{variant}: " + ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in d.items()))
  _check(d)


def test_tokenizer_pads_truncates_and_keeps_the_end_token():
  """Both fixtures' tokenizers: 77 ids per prompt, <|startoftext|> first; a long prompt is cut
  to 77 with <|endoftext|> last; padding is the pad token (<|endoftext|> for sd1, `!` = id 0
  for sd2), which the two tokenizers therefore differ in; decoding gives the words back."""
  prompts = _maker().PROMPTS
  long = prompts.index(max(prompts, key=len))
  got = {}
  for variant in VARIANTS:
    tok = clip.load_tokenizer(os.path.join(FIXTURES, variant, "tokenizer"))
    ids = tok(list(prompts))
    got[variant] = ids
    assert ids.shape == (len(prompts), 77) and ids.dtype == np.int32
    assert (ids[:, 0] == tok.bos_id).all()
    assert ids[long, -1] == tok.eos_id and (ids[long, :-1] != tok.pad_id).all()
    empty = ids[prompts.index("")]
    assert empty[1] == tok.eos_id and (empty[2:] == tok.pad_id).all()
    assert tok.decode(tok(prompts[0])[0]) == prompts[0]
  assert got["sd2"][0, -1] == 0 and got["sd1"][0, -1] == got["sd1"][0, -2]
  assert not np.array_equal(got["sd1"], got["sd2"])


def test_a_wrong_mapping_would_not_pass():
  """Every bias and norm parameter of the fixtures is perturbed, so near-misses show: gelu for
  quick_gelu in the text encoder, the UNet's attention_head_dim read as a head width (not
  diffusers' heads per block), or q and k swapped in the VAE's mid-block attention miss by
  far more than the bounds."""
  ref = _ref("sd1")
  folder = os.path.join(FIXTURES, "sd1")
  model, params = clip.load_text_encoder(os.path.join(folder, "text_encoder"))
  wrong = model.clone(hidden_act="gelu")
  last, _ = jax.jit(lambda p, i: wrong.apply({"params": p}, i))(params, ref["ids"][:3])
  assert np.abs(np.asarray(last) - ref["text_last"]).max() > 100 * TEXT_TOL

  ref2 = _ref("sd2")
  model, params, _ = unet2d_condition.load_unet(os.path.join(FIXTURES, "sd2", "unet"))
  as_width = model.clone(heads=tuple(c // h for c, h in zip(model.block_out_channels,
                                                            model.heads)))
  assert as_width.heads != model.heads
  out = _unet_apply(as_width)(params, ref2["unet_x"], ref2["unet_t"].astype(np.float32),
                              ref2["text_last"][:3])
  assert np.abs(np.asarray(out) - ref2["unet_out"]).max() > 100 * UNET_TOL

  model, params, _ = autoencoder_kl.load_vae(os.path.join(folder, "vae"))
  attn = params["decoder"]["mid_block_attentions_0"]
  swapped = {**params, "decoder": {**params["decoder"], "mid_block_attentions_0": {
      **attn, "to_q": attn["to_k"], "to_k": attn["to_q"]}}}
  decoded = jax.jit(lambda p, z: model.apply({"params": p}, z,
                                             method=autoencoder_kl.AutoencoderKL.decode))(
                                                 swapped, ref["latent"])
  assert np.abs(np.asarray(decoded) - ref["vae_decoded"]).max() > 100 * VAE_TOL


def test_latent_scaling_round_trips():
  z = jnp.asarray(np.linspace(-3, 3, 8, dtype=np.float32))
  lat = autoencoder_kl.to_latents(z, 0.13025, 0.1159)
  np.testing.assert_allclose(np.asarray(lat), (np.asarray(z) - 0.1159) * 0.13025, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(autoencoder_kl.from_latents(lat, 0.13025, 0.1159)),
                             np.asarray(z), atol=1e-6)
  mean, logvar = jnp.zeros((2, 3)), jnp.full((2, 3), -60.0)
  draw = autoencoder_kl.sample_posterior(jax.random.key(0), mean, jnp.clip(logvar, -30, 20))
  assert np.abs(np.asarray(draw)).max() < 1e-5


def test_older_tensor_names_read_the_same(tmp_path):
  """A text encoder saved with the `text_model.` prefix and the position_ids buffer (older
  transformers, Stable Diffusion's hub folders), and a VAE with the old attention names
  (query / key / value / proj_attn), load the same params."""
  from safetensors.numpy import load_file, save_file

  src = os.path.join(FIXTURES, "sd1")
  te = tmp_path / "text_encoder"
  te.mkdir()
  shutil.copy(os.path.join(src, "text_encoder", "config.json"), te / "config.json")
  tensors = load_file(os.path.join(src, "text_encoder", "model.safetensors"))
  old = {"text_model." + k: v for k, v in tensors.items()}
  old["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
  save_file(old, str(te / "model.safetensors"))
  _, want = clip.load_text_encoder(os.path.join(src, "text_encoder"))
  _, got = clip.load_text_encoder(str(te))
  jax.tree.map(np.testing.assert_array_equal, got, want)

  vae = tmp_path / "vae"
  vae.mkdir()
  shutil.copy(os.path.join(src, "vae", "config.json"), vae / "config.json")
  names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  tensors = {}
  for k, v in load_file(os.path.join(src, "vae", autoencoder_kl.SAFETENSORS)).items():
    for new, was in names.items():
      k = k.replace(f".{new}.", f".{was}.")
    tensors[k] = v
  assert any(".query." in k for k in tensors)
  save_file(tensors, str(vae / autoencoder_kl.SAFETENSORS))
  got = autoencoder_kl.load_vae(str(vae))[1]
  want = autoencoder_kl.load_vae(os.path.join(src, "vae"))[1]
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_tokenizer_settings_as_older_transformers_saved_them(tmp_path):
  """Special tokens as AddedToken dicts, added_tokens_decoder and special_tokens_map.json (the
  files Stable Diffusion's hub folders hold) give the fixture's ids."""
  src = os.path.join(FIXTURES, "sd2", "tokenizer")
  dest = tmp_path / "tokenizer"
  shutil.copytree(src, dest)
  vocab = json.loads((dest / "vocab.json").read_text(encoding="utf-8"))

  def added(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}

  (dest / "tokenizer_config.json").write_text(json.dumps({
      "add_prefix_space": False, "bos_token": added("<|startoftext|>"), "do_lower_case": True,
      "eos_token": added("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
      "tokenizer_class": "CLIPTokenizer", "unk_token": added("<|endoftext|>"),
      "added_tokens_decoder": {str(vocab[t]): {**added(t), "special": True} for t in (
          "!", "<|startoftext|>", "<|endoftext|>")}}))
  (dest / "special_tokens_map.json").write_text(json.dumps({"pad_token": "!"}))
  prompts = _maker().PROMPTS
  want = clip.load_tokenizer(src)(list(prompts))
  np.testing.assert_array_equal(clip.load_tokenizer(str(dest))(list(prompts)), want)
  np.testing.assert_array_equal(want, _ref("sd2")["ids"])


# The full-size configurations, with the fields the hub's config.json files hold: Stable
# Diffusion 1.5's UNet and VAE, 2.1's UNet, CLIP ViT-L/14's text encoder (1.x) and OpenCLIP
# ViT-H/14's without its last layer (2.x); the parameter counts of diffusers' / transformers'
# modules for them.
SD1_UNET = {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0",
            "act_fn": "silu", "attention_head_dim": 8,
            "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
            "cross_attention_dim": 768,
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
            "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1,
            "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
SD2_UNET = {**SD1_UNET, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
            "sample_size": 96, "use_linear_projection": True, "upcast_attention": True,
            "dual_cross_attention": False, "num_class_embeds": None,
            "only_cross_attention": False, "resnet_time_scale_shift": "default"}
SD_VAE = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
          "block_out_channels": [128, 256, 512, 512],
          "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3,
          "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
          "out_channels": 3, "sample_size": 512, "up_block_types": ["UpDecoderBlock2D"] * 4}
CLIP_L = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
          "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
          "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
          "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
          "max_position_embeddings": 77, "num_attention_heads": 12, "num_hidden_layers": 12,
          "pad_token_id": 1, "projection_dim": 768, "torch_dtype": "float32",
          "transformers_version": "4.22.0.dev0", "vocab_size": 49408}
OPENCLIP_H = {**CLIP_L, "hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096,
              "num_attention_heads": 16, "num_hidden_layers": 23, "projection_dim": 512}
FULL_SIZE = {"sd1 unet": ("unet", SD1_UNET, 859_520_964),
             "sd2 unet": ("unet", SD2_UNET, 865_910_724),
             "vae": ("vae", SD_VAE, 83_653_863),
             "clip-l text": ("text_encoder", CLIP_L, 123_060_480),
             "openclip-h text": ("text_encoder", OPENCLIP_H, 340_387_840)}


def _full_size_shapes(component, config, tmp_path):
  """diffusers' tensor name -> shape of gen's module for `config` (jax.eval_shape: nothing is
  allocated)."""
  from gen.diffusion.diffusers import tensors

  (tmp_path / "config.json").write_text(json.dumps(config))
  folder = str(tmp_path)
  if component == "unet":
    a = unet2d_condition.read_config(folder)
    model = unet2d_condition.UNet2DCondition(**a["module"])
    args = (jnp.zeros((1, 8, 8, 4)), 0.0, jnp.zeros((1, 1, a["cross_attention_dim"])))
  elif component == "vae":
    model = autoencoder_kl.AutoencoderKL(**autoencoder_kl.read_config(folder)["module"])
    args = (jnp.zeros((1, 16, 16, 3)),)
  else:
    model = clip.CLIPTextModel(**clip.read_config(folder))
    args = (jnp.zeros((1, 77), jnp.int32),)
  abstract = jax.eval_shape(model.init, jax.random.key(0), *args)["params"]
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(abstract):
    keys = tuple(k.key for k in path)
    out[tensors.torch_name(keys)] = tensors.torch_shape(keys, leaf.shape)
  return out


@pytest.mark.parametrize("case", list(FULL_SIZE))
def test_full_size_configs_read_with_the_reference_parameter_count(case, tmp_path):
  """The real models' config.json fields are all read, and gen's modules for them have the
  parameter counts of diffusers' / transformers' (the `peers` test compares every tensor's
  name and shape)."""
  component, config, count = FULL_SIZE[case]
  shapes = _full_size_shapes(component, config, tmp_path)
  assert sum(int(np.prod(s)) for s in shapes.values()) == count


# ------------------------------------------------------------------------- bad folders


def _edit_json(name, **fields):
  def edit(folder):
    path = os.path.join(folder, name)
    with open(path, encoding="utf-8") as f:
      d = json.load(f)
    d.update(fields)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(d, f)
  return edit


def _edit_tensors(name, fn):
  def edit(folder):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(folder, name)
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)
  return edit


def _load(component):
  return {"text_encoder": clip.load_text_encoder, "tokenizer": clip.load_tokenizer,
          "vae": autoencoder_kl.load_vae, "unet": unet2d_condition.load_unet}[component]


TE, UW = "model.safetensors", unet2d_condition.SAFETENSORS
BAD = {
    "text: missing tensor": ("sd1", "text_encoder", _edit_tensors(
        TE, lambda t: t.pop("encoder.layers.1.mlp.fc2.bias")),
        "tensor encoder.layers.1.mlp.fc2.bias is missing"),
    "text: extra tensor": ("sd1", "text_encoder", _edit_tensors(
        TE, lambda t: t.update({"text_projection.weight": np.ones((32, 32), np.float32)})),
        "tensor text_projection.weight (32, 32) is not a weight of a CLIPTextModel"),
    "text: ill-shaped tensor": ("sd1", "text_encoder", _edit_tensors(
        TE, lambda t: t.update({"encoder.layers.0.mlp.fc1.weight": np.ones((32, 64),
                                                                           np.float32)})),
        "tensor encoder.layers.0.mlp.fc1.weight has shape (32, 64), the config implies (64, 32)"),
    "text: activation": ("sd1", "text_encoder", _edit_json("config.json", hidden_act="relu"),
                         'hidden_act="relu" is not supported'),
    "text: architecture": ("sd1", "text_encoder", _edit_json(
        "config.json", architectures=["CLIPTextModelWithProjection"]),
        'architectures=["CLIPTextModelWithProjection"] is not supported'),
    "text: unknown field": ("sd1", "text_encoder", _edit_json("config.json", rope_theta=1e4),
                            "rope_theta=10000.0 is not supported (a field gen's CLIPTextModel"),
    "tokenizer: no merges": ("sd1", "tokenizer",
                             lambda d: os.remove(os.path.join(d, "merges.txt")),
                             "merges.txt: missing"),
    "tokenizer: pad token": ("sd2", "tokenizer", _edit_json("tokenizer_config.json",
                                                            pad_token="<pad>"),
                             "pad_token '<pad>' is not in the vocabulary"),
    "vae: missing tensor": ("sd1", "vae", _edit_tensors(
        autoencoder_kl.SAFETENSORS, lambda t: t.pop("decoder.mid_block.attentions.0.to_v.bias")),
        "tensor decoder.mid_block.attentions.0.to_v.bias is missing"),
    "vae: latents_mean": ("sd1", "vae", _edit_json("config.json", latents_mean=[0.0] * 4),
                          "latents_mean=[0.0, 0.0, 0.0, 0.0] is not supported"),
    "vae: block type": ("sd1", "vae", _edit_json(
        "config.json", down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
        "down_block_types has 'AttnDownEncoderBlock2D', not supported"),
    "unet: missing tensor": ("sd2", "unet", _edit_tensors(
        UW, lambda t: t.pop("up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight")),
        "tensor up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight is missing"),
    "unet: conv proj read as linear": ("sd1", "unet", _edit_json(
        "config.json", use_linear_projection=True),
        ("tensor down_blocks.0.attentions.0.proj_in.weight has shape (8, 8, 1, 1), "
         "the config implies (8, 8)")),
    "unet: addition_embed_type": ("sd1", "unet", _edit_json("config.json",
                                                            addition_embed_type="text_time"),
                                  'addition_embed_type="text_time" is not supported'),
    "unet: class_embed_type": ("sd1", "unet", _edit_json("config.json",
                                                         class_embed_type="timestep"),
                               'class_embed_type="timestep" is not supported'),
    "unet: time_cond_proj_dim": ("sd1", "unet", _edit_json("config.json", time_cond_proj_dim=8),
                                 "time_cond_proj_dim=8 is not supported"),
    "unet: heads": ("sd2", "unet", _edit_json("config.json", attention_head_dim=[2, 5]),
                    "attention_head_dim=[2, 5] is not supported (diffusers reads it as heads"),
    "unet: block type": ("sd1", "unet", _edit_json(
        "config.json", up_block_types=["UpBlock2D", "AttnUpBlock2D"]),
        "up_block_types has 'AttnUpBlock2D', not supported"),
    "unet: unknown field": ("sd1", "unet", _edit_json("config.json", sample_rate=8),
                            "sample_rate=8 is not supported"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_folders_are_one_line_errors(case, tmp_path):
  variant, component, edit, needle = BAD[case]
  folder = tmp_path / component
  shutil.copytree(os.path.join(FIXTURES, variant, component), folder)
  edit(str(folder))
  with pytest.raises(InputError) as e:
    _load(component)(str(folder))
  message = str(e.value)
  assert "\n" not in message and needle in message, message
  assert message.startswith(str(folder)), message  # It names the file.


# ---------------------------------------------------------------------- peers (live)

HAVE_PEERS = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "diffusers"))
peers = pytest.mark.skipif(not HAVE_PEERS, reason="needs torch, transformers and diffusers")


@peers
@pytest.mark.parametrize("variant", VARIANTS)
def test_peers_random_sd_components_match_live(variant, tmp_path):
  """Fresh random components of other sizes, built and run by transformers / diffusers now:
  three text layers of width 48 with 3 heads (sd1) or 4 of width 24 with 6 (sd2); three UNet
  levels (8, 16, 16) with two transformer layers per block and, for sd2, heads (2, 4, 2),
  flip_sin_to_cos false, freq_shift 1, mid_block_scale_factor 1.5; a three-level VAE without
  quant_conv (sd2); other prompts (one holding <|endoftext|>, newlines, a no-break space, one cut
  at 77). Measured (sd1 / sd2): ids identical; text 1.3e-6 / 1.7e-6; VAE 2.2e-6 / 1.6e-6; UNet
  1.3e-6 / 3.8e-7 of the output scale. The reference's own float32 outputs are up to 2.4e-6 /
  1.8e-6 from its float64 ones on these models; gen's are held to the fixtures' bounds."""
  maker = _maker()
  prompts = ("A Red Fox, in the snow!", "über-détaillé; 3 cats & 2 dogs?!", "x " * 100,
             "\tnew\nlines  and\u00a0spaces ", "<|endoftext|> marker inside")
  unet = {"block_out_channels": (8, 16, 16), "transformer_layers_per_block": 2,
          "layers_per_block": 1}
  if variant == "sd1":
    unet.update(down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    text = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 3,
            "num_attention_heads": 3}
    vae = None
  else:
    unet.update(down_block_types=("CrossAttnDownBlock2D",) * 3,
                up_block_types=("CrossAttnUpBlock2D",) * 3, attention_head_dim=[2, 4, 2],
                mid_block_scale_factor=1.5, flip_sin_to_cos=False, freq_shift=1)
    text = {"hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 4,
            "num_attention_heads": 6}
    vae = {"block_out_channels": (8, 8, 16), "use_quant_conv": False,
           "down_block_types": ("DownEncoderBlock2D",) * 3,
           "up_block_types": ("UpDecoderBlock2D",) * 3}
  src = str(tmp_path / variant)
  ref = maker.make(src, variant, seed=7, text=text, unet=unet, vae=vae, prompts=prompts)
  d = _compare(src, ref, prompts)
  ref64 = {k: float(v) for k, v in ref.items() if k.endswith("_ref64")}
  print(f"peers {variant}: " + ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in d.items()) + f"; reference {ref64}")
  _check(d)


@peers
def test_peers_full_size_layouts_are_the_reference_tensors(tmp_path):
  """For the full-size configurations, gen's tensor names and shapes are exactly those of
  diffusers' / transformers' modules (built on torch's meta device: nothing is allocated)."""
  import diffusers
  import torch
  import transformers

  for i, (case, (component, config, _)) in enumerate(FULL_SIZE.items()):
    fields = {k: v for k, v in config.items()
              if not k.startswith("_") and k not in ("architectures", "model_type")}
    with torch.device("meta"):
      if component == "unet":
        ref = diffusers.UNet2DConditionModel(**fields)
      elif component == "vae":
        ref = diffusers.AutoencoderKL(**fields)
      else:
        ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(**fields))
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items() if "position_ids" not in k}
    (tmp_path / str(i)).mkdir()
    assert _full_size_shapes(component, config, tmp_path / str(i)) == want, case


# ------------------------------------------------------------------ a pipeline folder

MODEL_INDEX = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
               "feature_extractor": [None, None], "requires_safety_checker": False,
               "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
               "text_encoder": ["transformers", "CLIPTextModel"],
               "tokenizer": ["transformers", "CLIPTokenizer"],
               "unet": ["diffusers", "UNet2DConditionModel"],
               "vae": ["diffusers", "AutoencoderKL"]}


def _pipeline_folder(tmp_path, variant="sd2"):
  folder = tmp_path / variant
  shutil.copytree(os.path.join(FIXTURES, variant), folder,
                  ignore=shutil.ignore_patterns("reference.npz"))
  (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX))
  return str(folder)


def test_pipeline_folder_prompt_guidance_and_decoding(tmp_path):
  """A pipeline folder of the sd2 fixture: prompts encode to the text encoder's states, the
  guided UNet output is the unconditional one at scale 0 and the conditional one (the
  fixture's reference) at scale 1, and decoded latents are the VAE's images in [0, 1]."""
  from gen.diffusion.diffusers import stable_diffusion as sdl

  ref = _ref("sd2")
  folder = _pipeline_folder(tmp_path)
  assert sdl.recognizes(folder) and sdl.recognizes(os.path.join(FIXTURES, "sd2"))
  assert not sdl.recognizes(os.path.join(FIXTURES, "sd2", "unet"))
  sd = sdl.load(folder)
  assert sd.latent_shape == (8, 8, 4) and sd.image_shape == (16, 16, 3)
  prompts = _maker().PROMPTS[:3]
  ids, neg = sdl.tokenize(sd, prompts)
  np.testing.assert_array_equal(ids, ref["ids"][:3])
  np.testing.assert_array_equal(neg, np.repeat(ref["ids"][4:5], 3, axis=0))  # "" each.
  cond, uncond = jax.jit(lambda p, i, n: sdl.encode_prompt(sd, p, i, n))(sd.params, ids, neg)
  assert np.abs(np.asarray(cond) - ref["text_last"]).max() <= TEXT_TOL
  x, t = ref["unet_x"], ref["unet_t"].astype(np.float32)
  guided = jax.jit(lambda p, s: sdl.guided_eps(sd, p, x, t, cond, uncond, s))
  scale = max(1.0, float(np.abs(ref["unet_out"]).max()))
  at1, at0, at7 = (np.asarray(guided(sd.params, s)) for s in (1.0, 0.0, 7.5))
  assert np.abs(at1 - ref["unet_out"]).max() <= UNET_TOL * scale
  assert np.abs(at0 - ref["unet_out"]).max() > 100 * UNET_TOL  # The prompt matters.
  np.testing.assert_allclose(at7, at0 + 7.5 * (at1 - at0), atol=1e-4)
  images = np.asarray(jax.jit(lambda p, z: sdl.decode_latents(sd, p, z))(
      sd.params, ref["latent"] * sd.scaling_factor))
  want = np.clip(ref["vae_decoded"] / 2 + 0.5, 0, 1)
  assert images.shape == (2, 16, 16, 3) and np.abs(images - want).max() <= VAE_TOL
  assert sdl.initial_latents(sd, jax.random.key(0), 2).shape == (2, 8, 8, 4)


PIPELINE_BAD = {
    "class": (lambda f: _edit_json("model_index.json", _class_name="StableDiffusionXLPipeline")(
        f), "model_index.json: _class_name='StableDiffusionXLPipeline' is not supported"),
    "component": (lambda f: _edit_json("model_index.json",
                                       text_encoder=["transformers", "T5EncoderModel"])(f),
                  "model_index.json: text_encoder=['transformers', 'T5EncoderModel'] is not"),
    "cross_attention_dim": (lambda f: _edit_json("config.json", cross_attention_dim=48)(
        os.path.join(f, "unet")), ("cross_attention_dim=48 is not the text encoder's "
                                   "hidden_size=32")),
    "latent channels": (lambda f: _edit_json("config.json", latent_channels=3)(
        os.path.join(f, "vae")), ("in_channels=4 / out_channels=4 are not the VAE's "
                                  "latent_channels=3")),
    "no unet weights": (lambda f: os.remove(os.path.join(f, "unet", UW)),
                        "unet: no weights (diffusion_pytorch_model.safetensors or"),
}


@pytest.mark.parametrize("case", list(PIPELINE_BAD))
def test_pipeline_folders_that_do_not_fit_are_one_line_errors(case, tmp_path):
  from gen.diffusion.diffusers import stable_diffusion as sdl

  folder = _pipeline_folder(tmp_path)
  edit, needle = PIPELINE_BAD[case]
  edit(folder)
  with pytest.raises(InputError) as e:
    sdl.load(folder)
  assert "\n" not in str(e.value) and needle in str(e.value), str(e.value)


@peers
def test_peers_pipeline_steps_match_diffusers_pipeline(tmp_path):
  """Against diffusers' StableDiffusionPipeline built from the sd1 fixture's folders:
  encode_prompt with negative prompts, one classifier-free guided UNet output at scale 7.5, and
  decode_latents. (diffusers 0.42's encode_prompt with clip_skip reads
  text_encoder.text_model, which transformers 5's CLIPTextModel no longer has; clip_skip is
  compared with transformers' hidden states in test_components_match_the_reference.)"""
  import diffusers
  import torch

  from gen.diffusion.diffusers import stable_diffusion as sdl

  folder = _pipeline_folder(tmp_path, "sd1")
  pipe = diffusers.StableDiffusionPipeline(
      vae=diffusers.AutoencoderKL.from_pretrained(os.path.join(folder, "vae")),
      text_encoder=__import__("transformers").CLIPTextModel.from_pretrained(
          os.path.join(folder, "text_encoder")),
      tokenizer=__import__("transformers").CLIPTokenizer.from_pretrained(
          os.path.join(folder, "tokenizer")),
      unet=diffusers.UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet")),
      scheduler=diffusers.DDIMScheduler(), safety_checker=None, feature_extractor=None,
      requires_safety_checker=False)
  prompts = ["a cat, in a HAT!", "astronaut riding a horse"]
  negative = ["blurry", "low quality, ugly"]
  with torch.no_grad():
    cond_t, uncond_t = pipe.encode_prompt(prompts, "cpu", 1, True, negative_prompt=negative)
    x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    out = pipe.unet(torch.cat([x, x]), 420, encoder_hidden_states=torch.cat([uncond_t, cond_t]))
    u, c = out.sample.chunk(2)
    eps_t = (u + 7.5 * (c - u)).permute(0, 2, 3, 1).numpy()
    images_t = pipe.decode_latents(x) if hasattr(pipe, "decode_latents") else None
  sd = sdl.load(folder)
  ids, neg = sdl.tokenize(sd, prompts, negative)
  cond, uncond = sdl.encode_prompt(sd, sd.params, ids, neg)
  assert np.abs(np.asarray(cond) - cond_t.numpy()).max() <= TEXT_TOL
  assert np.abs(np.asarray(uncond) - uncond_t.numpy()).max() <= TEXT_TOL
  xj = x.permute(0, 2, 3, 1).numpy()
  eps = np.asarray(sdl.guided_eps(sd, sd.params, xj, 420.0, cond, uncond, 7.5))
  assert np.abs(eps - eps_t).max() <= UNET_TOL * max(1.0, float(np.abs(eps_t).max()))
  if images_t is not None:  # (diffusers' deprecated helper: [0, 1], NHWC numpy.)
    images = np.asarray(sdl.decode_latents(sd, sd.params, xj))
    assert np.abs(images - images_t).max() <= VAE_TOL
