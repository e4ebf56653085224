"""Reference-exact layouts of Stable Diffusion 1.x / 2.x components read from diffusers and
transformers folders: CLIP's text encoder and tokenizer (`clip`), the KL autoencoder
(`autoencoder_kl`) and the text-conditioned UNet (`unet2d_condition`), with the tensor
mapping they share (`tensors`). A fork that needs no interop can delete this package.
"""
