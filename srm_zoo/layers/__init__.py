"""Layers of the zoo."""
from .srm import SRM, STYLE_POOLINGS, style_pool
