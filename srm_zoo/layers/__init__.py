"""Layers of the zoo."""
from .reference_switch import reference_enabled, use_reference
from .srm import SRM, STYLE_POOLINGS, style_pool
