"""Weights from elsewhere: the SRM authors' checkpoints and pretrained plain ResNets (graft)."""
from .graft import graft, graft_state
from .official import convert_official, official_to_zoo
from .state import write_safetensors

__all__ = ['graft', 'graft_state', 'convert_official', 'official_to_zoo', 'write_safetensors']
