"""Turn catalogue rows into timm pretrained cfgs and registered entry points."""
import sys
import warnings
from typing import Any, Callable, Dict, List, Sequence, Tuple

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs, register_model

from ..catalogue import PAPER, ModelEntry
from ..errors import UserError
from ..manifest import find_release

__all__ = ['family_cfg', 'weight_location', 'pretrained_cfg', 'default_cfgs_for', 'register_entrypoints',
           'refresh_pretrained_cfgs', 'pretrained_kwargs']

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

_FAMILY_CFGS: Dict[str, Dict[str, Any]] = {
    'imagenet': dict(
        num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
        interpolation='bilinear', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
    ),
    'cifar': dict(
        num_classes=10, input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0, crop_mode='center',
        interpolation='bilinear', mean=CIFAR_MEAN, std=CIFAR_STD, fixed_input_size=False,
    ),
}


def family_cfg(entry: ModelEntry) -> Dict[str, Any]:
    """The data and head defaults that every tag of ``entry`` starts from."""
    cfg = dict(_FAMILY_CFGS[entry.family])
    cfg['first_conv'] = 'conv1.0' if entry.arch.get('stem_type', '').startswith('deep') else 'conv1'
    cfg['classifier'] = 'fc'
    return cfg


def weight_location(entry: ModelEntry, tag: str) -> Dict[str, Any]:
    """Where timm finds the weights of ``entry.tag``: nothing unless the manifest has a release. A broken manifest
    locates none here, so that registering the models (``import srm_zoo``) gets through; whatever reads the
    manifest for weights (``pretrained=True``, the commands) reports it."""
    try:
        release = find_release(entry.name, tag)
    except UserError:
        return {}
    if release is None:
        return {}
    if release.embedded:
        return dict(file=str(release.embedded_dir / release.filename))
    return dict(hf_hub_id=f'{release.hf_hub_id}@{release.revision}', hf_hub_filename=release.filename)


def pretrained_cfg(entry: ModelEntry, tag: str) -> Dict[str, Any]:
    """The timm pretrained cfg of ``entry.tag``; it locates weights only for manifest releases."""
    weight_tag = entry.get_tag(tag)
    return dict(
        url='',
        **weight_location(entry, tag),
        **{**family_cfg(entry), **weight_tag.cfg},  # the tag's cfg overrides the family's
        license='apache-2.0',
        paper_ids=PAPER['paper_id'],
        paper_name=PAPER['title'],
        origin_url=PAPER['code'],
        description=weight_tag.description,
        notes=(f'recipe: {weight_tag.recipe_text}',),
    )


def default_cfgs_for(entries) -> Dict[str, Any]:
    """timm ``default_cfgs`` for a family: one cfg per ``arch.tag``."""
    return generate_default_cfgs({
        f'{entry.name}.{weight_tag.tag}': pretrained_cfg(entry, weight_tag.tag)
        for entry in entries for weight_tag in entry.tags
    })


def register_entrypoints(entries, module_name: str, create: Callable[..., Any]) -> Dict[str, Callable[..., Any]]:
    """Register one timm entry point per catalogue row and return them by name.

    ``create(name, pretrained, **kwargs)`` builds the model; the row's architecture kwargs are
    defaults that the caller's kwargs override, as in timm's own entry points.
    """
    _REGISTERED.append((module_name, tuple(entries)))
    return {entry.name: register_model(_entrypoint(entry, module_name, create)) for entry in entries}


_REGISTERED: List[Tuple[str, Sequence[ModelEntry]]] = []
"""(module name, catalogue rows) of every family registered so far."""


def refresh_pretrained_cfgs() -> None:
    """Rebuild every family's ``default_cfgs`` from the catalogue and the active manifest and
    re-register the entry points, so timm's registry (``list_pretrained``, cfgs) follows the manifest."""
    for module_name, entries in _REGISTERED:
        module = sys.modules[module_name]
        module.default_cfgs = default_cfgs_for(entries)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # timm warns about overwriting a registration
            for entry in entries:
                register_model(getattr(module, entry.name))


def pretrained_kwargs(variant: str, pretrained: bool, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``kwargs`` for timm's ``build_model_with_cfg``, with manifest weights fetched and sha256-verified.

    Refuses, with a clear message, ``pretrained=True`` for a tag without weights.
    """
    if not pretrained:
        return kwargs
    from ..hub.weights import verified_weights_overlay
    overlay = verified_weights_overlay(
        variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'), kwargs.get('cache_dir'))
    return dict(kwargs, pretrained_cfg_overlay=overlay)


def _entrypoint(entry: ModelEntry, module_name: str, create: Callable[..., Any]) -> Callable[..., Any]:
    def entrypoint(pretrained: bool = False, **kwargs):
        return create(entry.name, pretrained, **dict(entry.arch, **kwargs))

    entrypoint.__name__ = entrypoint.__qualname__ = entry.name
    entrypoint.__module__ = module_name
    entrypoint.__doc__ = entry.docstring()
    return entrypoint
