"""Fetching the weights of manifest releases and checking them before timm loads them.

Every ``pretrained=True`` build of an SRM model passes through :func:`verified_weights_overlay`:
a tag without weights is refused with a message that says how to get some, and a release's
file (downloaded at its pinned revision, or embedded in the package) is loaded only when its
sha256 equals the manifest's.
"""
from pathlib import Path
from typing import Any, Dict, Optional, Union

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from timm.models import resolve_pretrained_cfg

from ..catalogue import CATALOGUE
from ..checkpoint import file_sha256
from ..errors import UserError, error_reason
from ..manifest import MANIFEST_PATH, Release, active_manifest_path, find_release, load_manifest

__all__ = ['MissingWeightsError', 'IntegrityError', 'WeightsUnavailableError', 'WeightsFileNotFoundError',
           'missing_weights_message', 'fetch_release_file', 'verify_release_file', 'check_weights_file',
           'hub_release_at', 'verified_weights_overlay']


class MissingWeightsError(UserError):
    """``pretrained=True`` for a model tag that has no published weights."""


class IntegrityError(UserError):
    """A weights file whose sha256 differs from the release manifest."""


class WeightsUnavailableError(UserError):
    """Published weights that could not be fetched (no network, offline without cache, ...)."""


class WeightsFileNotFoundError(UserError, FileNotFoundError):
    """A weights ``file`` (``pretrained_cfg_overlay=dict(file=...)``) that does not exist or is a folder."""


def missing_weights_message(model: str, tag: Optional[str]) -> str:
    """Why ``model.tag`` (``model`` and its default tag for None) cannot be loaded with ``pretrained=True``, and
    the ways to get weights; the advice names ``model.tag`` in full, so that timm builds that tag's cfg."""
    entry = CATALOGUE[model]
    name = f'{model}.{tag or entry.default_tag}'
    published = [r.name for r in load_manifest()]
    if entry.tags_with_weights:
        available = f'Tags of {model} with weights: {", ".join(f"{model}.{t}" for t in entry.tags_with_weights)}.'
    else:
        available = f'No tag of {model} has weights yet (tags: {", ".join(t.tag for t in entry.tags)}); ' + (
            f'models with weights: {", ".join(published)}.' if published else 'no SRM model has published weights yet.')
    return (
        f'{name} has no published weights, so pretrained=True cannot load any. {available} '
        f'To get weights for {name}: {entry.ways_to_weights}; then load the file '
        f'with timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file=\'model.safetensors\')) '
        f'or publish it (`srm-zoo export`, `srm-zoo publish`). pretrained=False builds the model with random weights.'
    )


def _missing_embedded_remedy() -> str:
    """What to do about missing embedded weights: they lie beside the active manifest, so a manifest selected with
    SRM_ZOO_MANIFEST (or another --manifest) needs their folder beside it; the package's own means a broken
    installation."""
    manifest = active_manifest_path()
    if manifest == MANIFEST_PATH.resolve():
        return 'The installation is incomplete; reinstall srm-zoo.'
    return (f'Embedded weights lie beside the manifest, and the active one is {manifest} (SRM_ZOO_MANIFEST): copy '
            f'their folder from {MANIFEST_PATH.parent} beside it, or use the package\'s manifest.')


def fetch_release_file(release: Release, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The local path of a release's weights file: embedded, or downloaded at the pinned revision (cached)."""
    if release.embedded:
        path = release.embedded_dir / release.filename
        if not path.is_file():
            raise WeightsUnavailableError(f'The embedded weights of {release.name} are missing: {path} does not exist. '
                                          + _missing_embedded_remedy())
        return path
    try:
        return Path(hf_hub_download(release.hf_hub_id, release.filename, revision=release.revision,
                                    cache_dir=cache_dir))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        reason = error_reason(error)
        raise WeightsUnavailableError(
            f'Could not fetch the weights of {release.name} ({release.filename} of {release.location}) from the '
            f'Hugging Face Hub: {reason}. Check the network (or HF_ENDPOINT); offline (HF_HUB_OFFLINE=1) they load '
            'only from a cache that already holds them.') from None


def verify_release_file(path: Union[str, Path], release: Release) -> Path:
    """Refuse ``path`` unless its sha256 is the one the manifest records for ``release``."""
    actual = file_sha256(path)
    if actual != release.sha256:
        remedy = ('reinstall srm-zoo, which ships it' if release.embedded else
                  'delete it (for a download, its Hugging Face cache entry) and load again')
        raise IntegrityError(
            f'Refusing the weights of {release.name}: {path} has sha256 {actual}, but the release manifest '
            f'records {release.sha256} for {release.location}. The file is corrupt or was altered; {remedy}.')
    return Path(path)


def check_weights_file(path: Union[str, Path]) -> Path:
    """Refuse, naming it, a weights file that timm could not read because it does not exist or is a folder
    (timm's own error names no path)."""
    target = Path(path)
    if not target.is_file():
        problem = 'is a folder, not a weights file' if target.is_dir() else 'does not exist'
        raise WeightsFileNotFoundError(
            f'The weights file {str(path)!r} (pretrained_cfg file=...) {problem}: looked at {target.absolute()}.')
    return target


def hub_release_at(hf_hub_id: str) -> Optional[Release]:
    """The release published at exactly this ``repo@revision`` (a pinned revision only)."""
    return next((r for r in load_manifest() if not r.embedded and f'{r.hf_hub_id}@{r.revision}' == hf_hub_id), None)


def verified_weights_overlay(
        variant: str,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        cache_dir: Optional[Union[str, Path]] = None,
) -> Dict[str, Any]:
    """The ``pretrained_cfg_overlay`` that makes timm load checked weights for ``variant``.

    Weights the user points to (``file``, ``url``, ``state_dict``, another repository) pass
    unchanged; manifest releases are fetched and sha256-checked, and timm then loads that
    very file. A tag without any weights raises :class:`MissingWeightsError`.
    """
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay)
    overlay = dict(pretrained_cfg_overlay or {})
    if cfg.source == 'hf-hub':
        release = hub_release_at(cfg.hf_hub_id)
        if release is not None:  # timm downloads the same pinned, cached file again
            verify_release_file(fetch_release_file(release, cache_dir), release)
        return overlay
    if cfg.source == 'local-dir' or cfg.state_dict is not None:
        return overlay
    release = find_release(variant, cfg.tag or '')
    if cfg.file:  # timm reads a file before any url or Hub id
        if release is not None and release.embedded and Path(cfg.file) == release.embedded_dir / release.filename:
            verify_release_file(fetch_release_file(release), release)
        else:
            check_weights_file(cfg.file)
        return overlay
    if cfg.url:
        return overlay
    if not cfg.hf_hub_id:
        raise MissingWeightsError(missing_weights_message(variant, cfg.tag))
    if release is not None and not release.embedded and cfg.hf_hub_id == f'{release.hf_hub_id}@{release.revision}':
        overlay['file'] = str(verify_release_file(fetch_release_file(release, cache_dir), release))
    return overlay
