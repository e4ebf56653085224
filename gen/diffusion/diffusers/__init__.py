"""diffusers' and transformers' layouts, exactly: UNet2DModel (`unet2d`) and its importer
(`importer`: a DDPM/DDIM folder as a workdir, `gen import`), and the parts of Stable
Diffusion 1.x / 2.x (`clip`: CLIPTextModel and CLIPTokenizer; `autoencoder_kl`:
AutoencoderKL; `unet2d_condition`: UNet2DConditionModel; `stable_diffusion`: a
StableDiffusionPipeline folder; `sd_importer`: that folder as a workdir, `gen import`;
`sd_lora`: Stable Diffusion LoRA files, diffusers' and kohya's, `gen import --lora`;
`tensors`: reading torch-named weights).

Nothing outside this package needs it but `gen.diffusion.networks` (the `unet2d` arch), the
`text_to_image` kind (Stable Diffusion's networks) and the family's IMPORTERS and
LORA_FORMATS: a fork that does not load diffusers checkpoints can delete it,
`text_to_image.py` and those lines.
"""
