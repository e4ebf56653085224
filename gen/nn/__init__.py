"""Layers and distributions shared by the families."""
