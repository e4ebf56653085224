"""Every key of a diffusion config, with its default: experiment files override what differs.

`configs/diffusion/*.py` start from `default_config()` and set only what their run changes;
a workdir saved before a key existed loads with this default (`gen.core.runs`).
"""

from gen.core.config import ConfigDict, base_config


def default_config() -> ConfigDict:
  c = base_config()
  c.family = "diffusion"
  c.data.preprocess = "scale"  # [-1, 1].
  # model.kind = "text_to_image" training: resize each image, its shorter side to r (bilinear)
  # and a centre crop to r x r, so that the VAE and UNet take it; 0: the source's size.
  c.data.resolution = 0

  c.model = ConfigDict()
  # denoiser | classifier (p_t(y | x_t), for guidance) | autoencoder | text_to_image (an
  # imported Stable Diffusion) | text_denoiser (text to image from scratch)
  c.model.kind = "denoiser"
  # unet | dit | unet2d (diffusers' UNet2DModel, as `gen import` writes) | unet2d_condition
  c.model.arch = "unet"
  c.model.conditional = False  # Class embedding (+ label dropout for guidance).
  c.model.label_dropout = 0.0  # P(null label) in training; > 0 enables guidance.
  c.model.dropout = 0.0
  c.model.dtype = "float32"  # float32 | bfloat16 (compute; params stay float32)
  c.model.unet = ConfigDict()  # ADM-style UNet (gen.diffusion.models.UNet).
  c.model.unet.channels = 16
  c.model.unet.channel_mult = (1, 2, 4)  # One level per entry; each halves the image.
  c.model.unet.num_res_blocks = 1
  c.model.unet.attn_resolutions = ()  # Resolutions with self-attention (and the middle).
  c.model.unet.heads = 4
  c.model.unet.groups = 8  # GroupNorm groups (at most).
  c.model.dit = ConfigDict()  # Used with model.arch = "dit".
  c.model.dit.patch = 4
  c.model.dit.dim = 128
  c.model.dit.depth = 4
  c.model.dit.heads = 4
  c.model.dit.mlp_ratio = 4.0
  c.model.dit.positions = "sincos"  # sincos (fixed, as in DiT) | learned
  c.model.unet2d = ConfigDict()  # model.arch = "unet2d": UNet2DModel's config.json fields.
  c.model.unet2d.block_out_channels = (32, 64)
  c.model.unet2d.down_block_types = ("DownBlock2D", "AttnDownBlock2D")
  c.model.unet2d.up_block_types = ("AttnUpBlock2D", "UpBlock2D")
  c.model.unet2d.layers_per_block = 2
  c.model.unet2d.attention_head_dim = 8  # 0: one head.
  c.model.unet2d.norm_num_groups = 32
  c.model.unet2d.attn_norm_num_groups = 0  # 0: norm_num_groups.
  c.model.unet2d.norm_eps = 1e-5
  c.model.unet2d.flip_sin_to_cos = True
  c.model.unet2d.freq_shift = 0.0
  c.model.unet2d.downsample_padding = 1
  c.model.unet2d.mid_block_scale_factor = 1.0
  c.model.autoencoder = ConfigDict()  # model.kind = "autoencoder" (gen.diffusion.autoencoder).
  c.model.autoencoder.pad = 2  # Edge padding: 28 -> 32, so the latent of MNIST is 8 x 8.
  c.model.autoencoder.channels = 16
  c.model.autoencoder.channel_mult = (1, 2, 4)  # 32 -> 16 -> 8: f = 4.
  c.model.autoencoder.num_res_blocks = 1
  c.model.autoencoder.groups = 8  # GroupNorm groups (at most).
  c.model.autoencoder.latent_channels = 4
  c.model.autoencoder.loss = "l1"  # l1 | l2: the reconstruction term.
  c.model.autoencoder.kl_weight = 1e-6  # LDM's KL weight (per summed latent / summed pixels).
  c.model.autoencoder.disc_weight = 0.0  # > 0: a patch discriminator's hinge loss joins...
  c.model.autoencoder.disc_start = 1000  # ...from this step (LDM: after a warm-up).
  c.model.autoencoder.disc_channels = 32
  c.model.autoencoder.disc_layers = 2
  # model.kind = "text_to_image" (gen.diffusion.text_to_image): Stable Diffusion 1.x / 2.x's
  # networks, fields named as in their config.json files (`gen import` writes them); the
  # defaults are Stable Diffusion 1.5's.
  t = c.model.text_to_image = ConfigDict()
  t.clip_skip = 0  # k > 0: the prompt's states from the k-th text block from the end.
  t.caption_dropout = 0.0  # Training: P(a caption becomes the empty prompt), for guidance.
  t.text_encoder = ConfigDict()  # transformers' CLIPTextModel.
  t.text_encoder.vocab_size = 49408
  t.text_encoder.hidden_size = 768
  t.text_encoder.intermediate_size = 3072
  t.text_encoder.num_hidden_layers = 12
  t.text_encoder.num_attention_heads = 12
  t.text_encoder.max_position_embeddings = 77
  t.text_encoder.hidden_act = "quick_gelu"  # quick_gelu | gelu | gelu_new | gelu_pytorch_tanh
  t.text_encoder.layer_norm_eps = 1e-5
  t.vae = ConfigDict()  # diffusers' AutoencoderKL.
  t.vae.in_channels = 3
  t.vae.out_channels = 3
  t.vae.latent_channels = 4
  t.vae.block_out_channels = (128, 256, 512, 512)
  t.vae.layers_per_block = 2
  t.vae.norm_num_groups = 32
  t.vae.use_quant_conv = True
  t.vae.use_post_quant_conv = True
  t.vae.mid_block_add_attention = True
  t.vae.scaling_factor = 0.18215
  t.vae.shift_factor = 0.0
  t.unet = ConfigDict()  # diffusers' UNet2DConditionModel (in_channels: the latent channels).
  t.unet.out_channels = 4
  t.unet.block_out_channels = (320, 640, 1280, 1280)
  t.unet.down_block_types = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
  t.unet.up_block_types = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
  t.unet.attention_head_dim = (8, 8, 8, 8)  # Heads per block, as diffusers reads it.
  t.unet.layers_per_block = (2, 2, 2, 2)
  t.unet.transformer_layers_per_block = (1, 1, 1, 1)
  t.unet.cross_attention_dim = 768
  t.unet.norm_num_groups = 32
  t.unet.norm_eps = 1e-5
  t.unet.flip_sin_to_cos = True
  t.unet.freq_shift = 0.0
  t.unet.downsample_padding = 1
  t.unet.mid_block_scale_factor = 1.0
  t.unet.use_linear_projection = False
  t.unet.upcast_attention = False

  # model.kind = "text_denoiser" (gen.diffusion.text_denoiser): text to image from scratch,
  # model.arch "unet2d_condition" (model.text_to_image.unet's fields) or "dit" (model.dit).
  x = c.model.text = ConfigDict()
  x.encoder = "transformer"  # transformer (bidirectional) | clip (CLIP's causal text model)
  x.width = 64  # The encoder's width: the backbone's cross_attention_dim.
  x.layers = 2
  x.heads = 4
  x.mlp_ratio = 4
  x.max_length = 24  # Tokens with [BOS] and [EOS]; a longer prompt is refused.
  x.caption_dropout = 0.1  # P(null caption) in training; > 0 enables guidance.
  # True (DiT): the states' mean, projected, joins the time embedding in every block's adaLN,
  # besides the cross-attention (as SD3, SDXL and Imagen add a pooled text embedding).
  x.pooled = False
  # True (arch "unet2d_condition"): fixed sine-cosine 2-D position codes join the image tokens
  # of every Transformer2D before its attention, as a DiT's patches have them (diffusers' UNet
  # has none: its queries know their place only through the convolutions' zero padding).
  c.model.unet_positions = False
  # > 0: the text encoder also learns to parse each caption into its objects (a query per
  # place reads the states by one attention; cross-entropy on the scene's per-slot identity,
  # colour and size, times this weight): supervision from the scenes' object lists, which
  # a captions:... source has, to test whether binding is what the encoder lacks.
  x.parse_weight = 0.0
  x.tokenizer_captions = 20000  # Training captions the word-level tokenizer learns from.
  x.prompts = 8  # Test captions the trainer's samples (and a bare `gen sample`) draw.
  # A text_to_image run (`gen import` of a StableDiffusionPipeline folder): its CLIP text
  # encoder, frozen, and its tokenizer instead of a jointly trained encoder and word tokenizer
  # (encoder, width, layers, heads and mlp_ratio are then the imported encoder's).
  x.pretrained = ""

  c.diffusion = ConfigDict()
  c.diffusion.objective = "edm"  # eps | v | x0 | edm | flow
  c.diffusion.schedule = "cosine"  # linear | cosine | discrete (eps, v, x0 only)
  c.diffusion.sigma_data = 0.5  # EDM's data standard deviation.
  c.diffusion.p_mean = -1.2  # EDM's training noise levels: ln s ~ N(p_mean, p_std^2).
  c.diffusion.p_std = 1.2
  c.diffusion.sampler = "heun"  # ddpm ddim pndm euler euler_a heun dpmpp_2m flow_euler flow_heun
  c.diffusion.sample_steps = 18  # 35 network evaluations with heun.
  c.diffusion.guidance = 1.0  # Classifier-free guidance scale; 1 = none.
  c.diffusion.clip_denoised = False  # Clip x0_hat to [-1, 1] at every step.
  c.diffusion.classifier_scale = 1.0  # A classifier's own samples: its guidance scale.
  c.diffusion.discrete = ConfigDict()  # schedule = "discrete": diffusers' scheduler fields.
  c.diffusion.discrete.beta_schedule = "linear"  # linear | scaled_linear | squaredcos_cap_v2
  c.diffusion.discrete.num_train_timesteps = 1000
  c.diffusion.discrete.beta_start = 1e-4
  c.diffusion.discrete.beta_end = 0.02
  c.diffusion.discrete.timestep_spacing = "leading"  # leading | trailing | linspace
  c.diffusion.discrete.steps_offset = 0
  c.diffusion.discrete.set_alpha_to_one = True
  c.diffusion.discrete.clip_sample = False
  c.diffusion.discrete.clip_sample_range = 1.0
  c.diffusion.discrete.timesteps = ()  # A fixed grid instead of the spacing...
  c.diffusion.discrete.sigmas = ()  # ...or of noise levels (euler, heun, dpmpp_2m).

  c.latent = ConfigDict()  # Latent diffusion (gen.diffusion.latent).
  c.latent.autoencoder = ""  # Its workdir (model.kind='autoencoder'); "": on the pixels.
  c.latent.autoencoder_step = 0  # 0: its newest checkpoint (a resumed run keeps its own).
  c.latent.normalize = "scalar"  # scalar (LDM: 1 / std of all latents) | channel (mean, std)
  c.latent.scale_images = 1024  # Training images the normalization is measured on.
  c.latent.sample_posterior = False  # Train on posterior samples rather than means.

  c.optim.name = "adam"
  c.optim.lr = 2e-3
  c.optim.ema_decay = 0.995
  return c
