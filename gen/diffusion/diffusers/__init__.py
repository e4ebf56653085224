"""diffusers' layouts, exactly: UNet2DModel (`unet2d`) and its importer (`importer`: a
diffusers folder as a workdir, `gen import`).

Nothing outside this package needs it but `gen.diffusion.networks` (the `unet2d` arch) and
the family's IMPORTERS: a fork that does not load diffusers checkpoints can delete it and
those two lines.
"""
