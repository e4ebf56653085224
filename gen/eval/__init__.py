"""Evaluation tools shared by every family: likelihood units, Fréchet distance and
precision/recall over gen's own classifier features or Inception (FID).

Tooling, like the CLI: it reaches a family only through a workdir (`load_workdir`) and its
`Pipeline`, never by name.
"""
