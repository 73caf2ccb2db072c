"""Which model output each image's class is: ImageNet-1k synset order, robustness-set masks, user folders.

Class indices always come from class *names* (WordNet synsets for ImageNet data), never from the
position of a folder in a possibly partial tree: a folder holding 10 synsets scores against the
right 10 of the 1000 logits.
"""
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Mapping, Optional, Sequence, Tuple

from timm.data import ImageNetInfo

from ..errors import UserError

__all__ = ['DATASETS', 'LabelSpace', 'imagenet_synsets', 'synset_to_index', 'label_space']

DATASETS: Dict[str, str] = {
    'imagenet': 'imagenet-1k',
    'imagenet-real': 'imagenet-real',
    'imagenet-v2': 'imagenet-v2',
    'imagenet-a': 'imagenet-a',
    'imagenet-r': 'imagenet-r',
    'imagenet-sketch': 'imagenet-sketch',
    'folder': 'folder',
}
"""``--dataset`` choices and the dataset name each records in results (and matches in ``--verify``)."""


@lru_cache(maxsize=None)
def imagenet_synsets() -> Tuple[str, ...]:
    """The 1000 ImageNet-1k synsets in the standard (sorted WordNet ID) class order."""
    return tuple(ImageNetInfo('imagenet-1k').label_names())


@lru_cache(maxsize=None)
def _timm_indices(name: str) -> Tuple[int, ...]:
    """An index file shipped with timm (``imagenet_a_indices.txt``, ...): ImageNet-1k class indices."""
    text = pkgutil.get_data('timm.data', f'_info/{name}').decode('utf-8')
    return tuple(int(line) for line in text.split())


@dataclass(frozen=True)
class LabelSpace:
    """How class names found in the data map to the outputs that are scored.

    ``class_to_index`` maps a class (folder) name to its index among the scored outputs; None means
    the model names no classes (user folders: numeric names are indices, others go in sorted order).
    ``output_indices`` selects the scored logits (the 200-class masks of ImageNet-A/-R). ``kind`` is
    the ``--dataset`` choice, ``dataset`` the name recorded in results and matched by ``--verify``.
    """
    kind: str
    dataset: str
    class_to_index: Optional[Mapping[str, int]]
    model_classes: int
    output_indices: Optional[Tuple[int, ...]] = None
    expected_names: str = ''

    @property
    def num_outputs(self) -> int:
        return len(self.output_indices) if self.output_indices is not None else self.model_classes

    @property
    def is_imagenet(self) -> bool:
        return self.kind != 'folder'


@lru_cache(maxsize=None)
def synset_to_index() -> Dict[str, int]:
    """ImageNet-1k synset -> standard class index."""
    return {synset: index for index, synset in enumerate(imagenet_synsets())}


def label_space(dataset: str, num_classes: int, label_names: Optional[Sequence[str]] = None,
                folder_dataset_name: Optional[str] = None) -> LabelSpace:
    """The label space of ``--dataset`` for a model with ``num_classes`` outputs.

    ``label_names`` (from the model's pretrained cfg, one per output) name the classes of ``folder`` data;
    ``folder_dataset_name`` is the dataset name that ``folder`` results record.
    """
    if dataset not in DATASETS:
        raise UserError(f'Unknown dataset {dataset!r}; choose one of: {", ".join(DATASETS)}.')
    if dataset == 'folder':
        mapping = {str(name): index for index, name in enumerate(label_names)} if label_names else None
        expected = (f'the model\'s label names ({", ".join(map(str, label_names[:10]))}'
                    f'{", ..." if len(label_names) > 10 else ""})' if label_names
                    else 'class indices 0, 1, ... or any names (sorted order)')
        return LabelSpace(dataset, folder_dataset_name or 'folder', mapping, num_classes, expected_names=expected)
    if num_classes != 1000:
        raise UserError(f'--dataset {dataset} scores ImageNet-1k classes, but the model has {num_classes} outputs '
                        f'(class-count mismatch). Evaluate a 1000-class model, or use --dataset folder for a '
                        f'folder of this model\'s own classes.')
    if dataset == 'imagenet-v2':
        return LabelSpace(dataset, DATASETS[dataset], {str(i): i for i in range(1000)}, 1000,
                          expected_names='ImageNet-V2 class folders 0..999')
    if dataset in ('imagenet-a', 'imagenet-r'):
        indices = _timm_indices(f'imagenet_{dataset[-1]}_indices.txt')
        synsets = imagenet_synsets()
        mapping = {synsets[index]: position for position, index in enumerate(indices)}
        return LabelSpace(dataset, DATASETS[dataset], mapping, 1000, output_indices=indices,
                          expected_names=f'the 200 {dataset} synsets (e.g. {synsets[indices[0]]})')
    return LabelSpace(dataset, DATASETS[dataset], synset_to_index(), 1000,
                      expected_names='ImageNet-1k WordNet synsets (e.g. n01440764)')
