"""The release manifest: the weights the zoo actually publishes, with measured metrics.

``srm_zoo/weights/manifest.json`` holds a list of releases. A tag carries a weight location
in its timm pretrained cfg only when it has a release here, so ``timm.list_pretrained('srm_*')``
tells the truth. A release is either on the Hugging Face Hub (``hf_hub_id`` pinned to
``revision``) or embedded in the package (``embedded``: a folder under ``srm_zoo/weights``).
"""
import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

__all__ = ['HUB_ORG', 'WEIGHTS_DIR', 'MANIFEST_PATH', 'Metric', 'Release', 'load_manifest', 'find_release',
           'releases_of', 'hub_repo_id']

WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'
MANIFEST_PATH = WEIGHTS_DIR / 'manifest.json'
HUB_ORG = os.environ.get('SRM_ZOO_HUB_ORG', 'srm-zoo')
"""Hugging Face Hub organisation of the zoo's repositories (override with ``SRM_ZOO_HUB_ORG``)."""


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

    @property
    def name(self) -> str:
        return f'{self.model}.{self.tag}'

    @property
    def embedded_dir(self) -> Optional[Path]:
        return WEIGHTS_DIR / self.embedded if self.embedded else None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'Release':
        data = dict(data)
        data['metrics'] = tuple(Metric(**m) for m in data.get('metrics', ()))
        return cls(**data)


@lru_cache(maxsize=None)
def load_manifest(path: Path = MANIFEST_PATH) -> Tuple[Release, ...]:
    """Every release in the manifest (empty when the file does not exist)."""
    if not Path(path).exists():
        return ()
    return tuple(Release.from_dict(entry) for entry in json.loads(Path(path).read_text())['releases'])


def releases_of(model: str) -> List[Release]:
    """The releases of one architecture."""
    return [r for r in load_manifest() if r.model == model]


def find_release(model: str, tag: str) -> Optional[Release]:
    """The release of ``model.tag``, or None when that tag has no published weights."""
    return next((r for r in load_manifest() if r.model == model and r.tag == tag), None)
