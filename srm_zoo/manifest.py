"""The release manifest: the weights the zoo actually publishes, with measured metrics.

``srm_zoo/weights/manifest.json`` holds a list of releases. A tag carries a weight location
in its timm pretrained cfg only when it has a release here, so ``timm.list_pretrained('srm_*')``
tells the truth. A release is either on the Hugging Face Hub (``hf_hub_id`` pinned to
``revision``) or embedded in the package (``embedded``: a folder next to the manifest file).

The environment variable ``SRM_ZOO_MANIFEST`` (read at import) or :func:`use_manifest`
(at run time) selects another manifest file.
"""
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Union

from .errors import UserError, error_reason

__all__ = ['HUB_ORG', 'WEIGHTS_DIR', 'MANIFEST_PATH', 'Metric', 'Release', 'active_manifest_path', 'load_manifest',
           'find_release', 'hub_repo_id', 'use_manifest', 'reload_manifest', 'write_release']

WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'
MANIFEST_PATH = WEIGHTS_DIR / 'manifest.json'
HUB_ORG = os.environ.get('SRM_ZOO_HUB_ORG', 'srm-zoo')
"""Hugging Face Hub organisation of the zoo's repositories (override with ``SRM_ZOO_HUB_ORG``)."""

_active_path = Path(os.environ['SRM_ZOO_MANIFEST']).resolve() if os.environ.get('SRM_ZOO_MANIFEST') else MANIFEST_PATH


def hub_repo_id(model: str, tag: str, org: Optional[str] = None) -> str:
    """The Hub repository of ``model.tag`` in timm's naming: ``<org>/<model>.<tag>``."""
    return f'{org or HUB_ORG}/{model}.{tag}'


@dataclass(frozen=True)
class Metric:
    """An accuracy measured by ``srm-zoo eval`` on published weights."""
    dataset: str
    split: str
    top1: float
    top5: float
    num_images: int
    eval_settings: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Release:
    """Published weights of one ``model.tag``."""
    model: str
    tag: str
    sha256: str
    metrics: Tuple[Metric, ...]
    provenance: Dict[str, Any]
    hf_hub_id: Optional[str] = None
    revision: Optional[str] = None
    embedded: Optional[str] = None
    filename: str = 'model.safetensors'
    root: Path = field(default=WEIGHTS_DIR, compare=False, repr=False)
    """Folder of the manifest file, which embedded folders are relative to (not serialised)."""

    @property
    def name(self) -> str:
        return f'{self.model}.{self.tag}'

    @property
    def embedded_dir(self) -> Optional[Path]:
        return self.root / self.embedded if self.embedded else None

    @property
    def location(self) -> str:
        """Where the weights are, for messages: ``org/name@revision`` or the embedded file."""
        if self.embedded:
            return str(self.embedded_dir / self.filename)
        return f'{self.hf_hub_id}@{self.revision}'

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data.pop('root')
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any], root: Path = WEIGHTS_DIR) -> 'Release':
        data = dict(data)
        data['metrics'] = tuple(Metric(**m) for m in data.get('metrics', ()))
        return cls(root=Path(root), **data)


def active_manifest_path() -> Path:
    """The manifest file in use: the package's, ``SRM_ZOO_MANIFEST``'s, or the one :func:`use_manifest` set."""
    return _active_path


@lru_cache(maxsize=None)
def _read_manifest(path: Path) -> Tuple[Release, ...]:
    """The releases of the manifest file ``path`` (none when it does not exist); a UserError naming the file
    when it is not a manifest."""
    if not path.exists():
        return ()
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except OSError as error:
        raise _manifest_error(path, f'it cannot be read ({error.strerror or error_reason(error)})') from None
    except UnicodeDecodeError:
        raise _manifest_error(path, 'it is not UTF-8 text') from None
    except ValueError as error:
        raise _manifest_error(path, f'it is not valid JSON ({error_reason(error)})') from None
    entries = data.get('releases') if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise _manifest_error(path, 'it has no "releases" list')
    return tuple(_release_entry(path, number, entry) for number, entry in enumerate(entries, start=1))


def _release_entry(path: Path, number: int, entry: Any) -> Release:
    """Release ``number`` (1-based) of the manifest file ``path``."""
    try:
        return Release.from_dict(entry, root=path.parent)
    except (TypeError, ValueError) as error:
        raise _manifest_error(path, f'its release {number} is not a release entry ({error_reason(error)})') from None


def _manifest_error(path: Path, problem: str) -> UserError:
    """The error for the manifest file ``path`` that is not a manifest, with what is wrong (``problem``)."""
    return UserError(f'The release manifest {path} is broken: {problem}. Restore it (a JSON object with a '
                     '"releases" list, as `srm-zoo publish` writes it), or select another manifest (SRM_ZOO_MANIFEST, '
                     '--manifest).')


def load_manifest(path: Optional[Union[str, Path]] = None) -> Tuple[Release, ...]:
    """Every release in the manifest (the active one by default; empty when the file does not exist); a
    UserError when the file is not a manifest."""
    return _read_manifest(Path(path).resolve() if path else _active_path)


def find_release(model: str, tag: str) -> Optional[Release]:
    """The release of ``model.tag``, or None when that tag has no published weights; a UserError when the
    manifest is broken."""
    return next((r for r in load_manifest() if r.model == model and r.tag == tag), None)


def reload_manifest() -> None:
    """Re-read the active manifest and re-register every SRM model's pretrained cfgs with timm."""
    _read_manifest.cache_clear()
    from .models._builder import refresh_pretrained_cfgs
    refresh_pretrained_cfgs()


@contextmanager
def use_manifest(path: Union[str, Path]) -> Iterator[Path]:
    """Make ``path`` the active manifest (timm's pretrained cfgs follow it), restoring the previous one after."""
    global _active_path
    previous = _active_path
    _active_path = Path(path).resolve()
    try:
        reload_manifest()
        yield _active_path
    finally:
        _active_path = previous
        reload_manifest()


def write_release(release: Release, path: Optional[Union[str, Path]] = None) -> Path:
    """Add ``release`` to a manifest file (replacing the same ``model.tag``), atomically; returns the file.

    Raises ``OSError`` when the file cannot be written (e.g. an installation without write access), and a
    UserError when it exists but is not a manifest.
    """
    path = Path(path).resolve() if path else _active_path
    releases = [r for r in _read_manifest.__wrapped__(path) if r.name != release.name] + [release]
    releases.sort(key=lambda r: (r.model, r.tag))
    text = json.dumps({'releases': [r.to_dict() for r in releases]}, indent=2) + '\n'
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text)
    tmp.replace(path)
    _read_manifest.cache_clear()
    return path
