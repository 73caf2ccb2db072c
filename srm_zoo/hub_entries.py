"""torch.hub entry points, one per registered SRM model (``hubconf.py`` exposes them)."""
from typing import Callable, Dict

import timm

from .catalogue import CATALOGUE

__all__ = ['hub_entrypoints']


def _hub_entrypoint(name: str) -> Callable[..., 'timm.models.ResNet']:
    def entrypoint(pretrained: bool = False, **kwargs):
        return timm.create_model(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (
        f'``timm.create_model({name!r}, pretrained=..., **kwargs)``.\n\n'
        f'{CATALOGUE[name].docstring()}\n\n'
        f'Pass ``pretrained_cfg=<tag>`` to pick a tag (default ``{CATALOGUE[name].default_tag}``: the first '
        'tag with published weights, else the first tag); any timm kwarg (num_classes, in_chans, '
        'features_only, drop_path_rate, ...) passes through.'
    )
    return entrypoint


def hub_entrypoints() -> Dict[str, Callable[..., object]]:
    """One torch.hub entry point per registered SRM model, named after it."""
    return {name: _hub_entrypoint(name) for name in timm.list_models('srm_*') if name in CATALOGUE}
