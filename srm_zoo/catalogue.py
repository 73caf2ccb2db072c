"""The zoo's catalogue: every fact about every SRM model, declared once.

Registration with timm, hubconf entries, ``srm-zoo list``, model cards, README tables and
accuracy verification are all derived from the tables below. Add a model by adding a row.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import timm

from .errors import UnknownNameError, UserError, unknown_model_message
from .manifest import find_release

__all__ = [
    'PAPER', 'PaperResult', 'WeightTag', 'ModelEntry', 'IMAGENET_RESNETS', 'CIFAR_RESNETS',
    'FAMILIES', 'CATALOGUE', 'ATTENTIONS', 'get_entry', 'get_entry_and_tag', 'resolve_name', 'attention_kwargs',
]

PAPER = {
    'title': 'SRM: A Style-based Recalibration Module for Convolutional Neural Networks',
    'authors': 'HyunJae Lee, Hyo-Eun Kim, Hyeonseob Nam',
    'venue': 'ICCV 2019',
    'arxiv': '1903.10829',
    'paper_id': 'arXiv:1903.10829',
    'url': 'https://arxiv.org/abs/1903.10829',
    'code': 'https://github.com/hyunjaelee410/style-based-recalibration-module',
    'bibtex': (
        '@inproceedings{lee2019srm,\n'
        '  title={SRM: A Style-based Recalibration Module for Convolutional Neural Networks},\n'
        '  author={Lee, HyunJae and Kim, Hyo-Eun and Nam, Hyeonseob},\n'
        '  booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},\n'
        '  pages={1854--1862},\n'
        '  year={2019}\n'
        '}'
    ),
}


_IMAGENET_VAL_IMAGES = 50000
"""Images of the ImageNet-1k validation split."""
_CIFAR10_TEST_IMAGES = 10000
"""Images of the CIFAR-10 test split."""
DATASET_LABEL_NAMES: Dict[str, Tuple[str, ...]] = {
    'cifar10': ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'),
}
"""The class names of a dataset's outputs, in order, that exports write as ``label_names`` (ImageNet's come from
timm)."""


@dataclass(frozen=True)
class PaperResult:
    """An accuracy reported in the literature (not measured by this zoo), on the ``num_images`` images of the
    split (``--verify`` calls a run on fewer ``INCOMPLETE``)."""
    dataset: str
    top1: float
    top5: Optional[float] = None
    split: str = 'validation'
    source: str = 'Lee et al., ICCV 2019'
    eval_settings: str = ''
    num_images: Optional[int] = None


@dataclass(frozen=True)
class WeightTag:
    """A pretrained tag of a model: which data and recipe its weights come (or will come) from.

    ``cfg`` overrides the family's default pretrained cfg (input size, normalisation, classes).
    Whether weights are published for a tag is recorded in the release manifest, not here.
    """
    tag: str
    dataset: str
    recipe: Optional[str]
    """The ``srm-zoo train`` recipe of its weights; None where the zoo has none for the dataset yet."""
    description: str
    cfg: Mapping[str, Any] = field(default_factory=dict)

    @property
    def recipe_text(self) -> str:
        """The recipe in words, for cards and docstrings."""
        return self.recipe or 'none yet'


@dataclass(frozen=True)
class ModelEntry:
    """One SRM architecture of the zoo."""
    name: str
    family: str
    baseline: str
    arch: Mapping[str, Any]
    description: str
    tags: Tuple[WeightTag, ...]
    paper: Tuple[PaperResult, ...] = ()
    notes: str = ''

    @property
    def counterpart(self) -> str:
        """The plain network this model adds SRM to, in words."""
        if self.family == 'cifar':
            return f'the CIFAR ResNet-{self.arch["depth"]} of He et al. (2016)'
        return f'timm\'s ``{self.baseline}`` (same architecture and kwargs)'

    @property
    def tags_with_weights(self) -> Tuple[str, ...]:
        """The tags whose weights the release manifest lists, in catalogue order."""
        return tuple(t.tag for t in self.tags if find_release(self.name, t.tag) is not None)

    @property
    def authors_code_builds(self) -> bool:
        """Whether the paper authors' code builds this network, so that a checkpoint of theirs can exist for
        ``srm-zoo convert``: their plain Bottleneck ResNets (depth 50/101/152; their BasicBlock path is broken)."""
        plain_bottleneck = set(self.arch) == {'block', 'layers'} and self.arch['block'] == 'bottleneck'
        return self.family == 'imagenet' and plain_bottleneck

    @property
    def ways_to_weights(self) -> str:
        """How the zoo's commands produce weights for this network, in words."""
        convert = 'convert the paper authors\' checkpoint (`srm-zoo convert`), ' if self.authors_code_builds else ''
        return f'train them (`srm-zoo train`), {convert}or graft a pretrained plain ResNet into it (`srm-zoo graft`)'

    @property
    def default_tag(self) -> str:
        """timm's default tag (``generate_default_cfgs``): the first tag with weights, else the first tag."""
        return next(iter(self.tags_with_weights), self.tags[0].tag)

    def get_tag(self, tag: Optional[str]) -> WeightTag:
        """The tag called ``tag`` (the default tag for None or '')."""
        for weight_tag in self.tags:
            if weight_tag.tag == (tag or self.default_tag):
                return weight_tag
        known = ', '.join(t.tag for t in self.tags)
        raise UnknownNameError(f'{self.name} has no tag {tag!r}; its tags are: {known}')

    def docstring(self) -> str:
        """Entry-point docstring: what the model is, its tags and the paper's figures."""
        lines = [f'{self.description}', '', f'{self.counterpart[0].upper()}{self.counterpart[1:]} '
                 f'with SRM in every residual block ({PAPER["paper_id"]}).']
        if self.notes:
            lines += ['', self.notes]
        lines += ['', 'Tags: ' + ', '.join(f'``{t.tag}`` ({t.dataset}, recipe: {t.recipe_text})' for t in self.tags)]
        for result in self.paper:
            top5 = f', top-5 {result.top5:.2f}' if result.top5 is not None else ''
            lines.append(f'Reported: {result.dataset} top-1 {result.top1:.2f}{top5} ({result.source}).')
        return '\n'.join(lines)


_IN1K = WeightTag(
    tag='official_in1k',
    dataset='imagenet-1k',
    recipe='official',
    description="ImageNet-1k, trained with the paper authors' recipe (90 epochs, SGD, step schedule).",
)
_CIFAR10 = WeightTag(
    tag='cifar10',
    dataset='cifar10',
    recipe=None,  # the official recipe is the authors' ImageNet one
    description="CIFAR-10, 32x32 inputs. The paper's CIFAR recipe was not recovered, and the zoo has none yet.",
)
_SKLEARN_DIGITS = WeightTag(
    tag='sklearn_digits',
    dataset='sklearn-digits',
    recipe='digits',
    description="scikit-learn's 1797 handwritten digit scans (8x8, upscaled to 32x32), fixed stratified "
                '80/20 split (`srm-zoo digits`); the embedded model the zoo ships in its package.',
    cfg=dict(num_classes=10, input_size=(3, 32, 32), crop_pct=1.0, mean=(0.3057,) * 3, std=(0.3235,) * 3,
             label_names=tuple('0123456789')),
)


def _imagenet(name: str, baseline: str, arch: Dict[str, Any], description: str, **kwargs) -> ModelEntry:
    return ModelEntry(name=name, family='imagenet', baseline=baseline, arch=arch, description=description,
                      tags=(_IN1K,), **kwargs)


def _cifar(depth: int, **kwargs) -> ModelEntry:
    return ModelEntry(
        name=f'srm_resnet{depth}_cifar', family='cifar', baseline=f'resnet{depth} (CIFAR, He et al. 2016)',
        arch=dict(depth=depth),
        description=f'SRM-ResNet-{depth} for 32x32 inputs: 3x3 stem, three stages of BasicBlocks at 16/32/64 '
                    f'channels ({(depth - 2) // 6} blocks each), global pool, linear head.',
        tags=kwargs.pop('tags', (_CIFAR10,)), **kwargs)


IMAGENET_RESNETS: Tuple[ModelEntry, ...] = (
    _imagenet('srm_resnet18', 'resnet18', dict(block='basic', layers=(2, 2, 2, 2)),
              'SRM-ResNet-18: BasicBlock ResNet-18 with SRM.'),
    _imagenet('srm_resnet34', 'resnet34', dict(block='basic', layers=(3, 4, 6, 3)),
              'SRM-ResNet-34: BasicBlock ResNet-34 with SRM.'),
    _imagenet('srm_resnet50', 'resnet50', dict(block='bottleneck', layers=(3, 4, 6, 3)),
              'SRM-ResNet-50: Bottleneck ResNet-50 with SRM.',
              paper=(PaperResult('imagenet-1k', 77.13, 93.51, eval_settings='224 center crop',
                                 num_images=_IMAGENET_VAL_IMAGES),)),
    _imagenet('srm_resnet101', 'resnet101', dict(block='bottleneck', layers=(3, 4, 23, 3)),
              'SRM-ResNet-101: Bottleneck ResNet-101 with SRM.',
              paper=(PaperResult('imagenet-1k', 78.47, 94.20, eval_settings='224 center crop',
                                 num_images=_IMAGENET_VAL_IMAGES),)),
    _imagenet('srm_resnet152', 'resnet152', dict(block='bottleneck', layers=(3, 8, 36, 3)),
              'SRM-ResNet-152: Bottleneck ResNet-152 with SRM.'),
    _imagenet('srm_resnet50d', 'resnet50d',
              dict(block='bottleneck', layers=(3, 4, 6, 3), stem_width=32, stem_type='deep', avg_down=True),
              'SRM-ResNet-50-D: ResNet-50 with deep 3x3 stem and average-pool shortcut downsampling, with SRM.'),
    _imagenet('srm_resnext50_32x4d', 'resnext50_32x4d',
              dict(block='bottleneck', layers=(3, 4, 6, 3), cardinality=32, base_width=4),
              'SRM-ResNeXt-50 (32x4d): grouped-convolution ResNeXt-50 with SRM.'),
    _imagenet('srm_resnext101_32x4d', 'resnext101_32x4d',
              dict(block='bottleneck', layers=(3, 4, 23, 3), cardinality=32, base_width=4),
              'SRM-ResNeXt-101 (32x4d): grouped-convolution ResNeXt-101 with SRM.'),
    _imagenet('srm_resnext101_32x8d', 'resnext101_32x8d',
              dict(block='bottleneck', layers=(3, 4, 23, 3), cardinality=32, base_width=8),
              'SRM-ResNeXt-101 (32x8d): grouped-convolution ResNeXt-101 with SRM.'),
    _imagenet('srm_wide_resnet50_2', 'wide_resnet50_2',
              dict(block='bottleneck', layers=(3, 4, 6, 3), base_width=128),
              'SRM-Wide-ResNet-50-2: ResNet-50 with twice as wide bottlenecks, with SRM.'),
)

CIFAR_RESNETS: Tuple[ModelEntry, ...] = (
    _cifar(20, tags=(_CIFAR10, _SKLEARN_DIGITS)),
    _cifar(32, paper=(PaperResult('cifar10', 92.9, source='third-party CIFAR-10 reimplementation '
                                  '(ResNet-32 92.1, SE 92.5)', split='test', num_images=_CIFAR10_TEST_IMAGES),)),
    _cifar(56, paper=(PaperResult('cifar10', 95.05, split='test', num_images=_CIFAR10_TEST_IMAGES),)),
    _cifar(110),
)

FAMILIES: Dict[str, Tuple[ModelEntry, ...]] = {'imagenet': IMAGENET_RESNETS, 'cifar': CIFAR_RESNETS}
CATALOGUE: Dict[str, ModelEntry] = {entry.name: entry for family in FAMILIES.values() for entry in family}

ATTENTIONS = ('srm', 'se', 'none')
"""A model's block attention: SRM (the zoo's models), or the SE / plain counterpart for comparisons."""


def get_entry(name: str) -> ModelEntry:
    """The catalogue entry of ``name`` (``arch`` or ``arch.tag``); an :class:`UnknownNameError` (a KeyError)
    suggesting the zoo's closest names for unknown ones."""
    arch = name.split('.', 1)[0]
    if arch.startswith('hf-hub:') or arch not in CATALOGUE:
        raise UnknownNameError(unknown_model_message(name, CATALOGUE))
    return CATALOGUE[arch]


def get_entry_and_tag(name: str) -> Tuple[ModelEntry, WeightTag]:
    """The catalogue entry and weight tag of ``name`` (``arch.tag``, or ``arch`` for its default tag); an
    :class:`UnknownNameError` for unknown models and tags."""
    entry = get_entry(name)
    return entry, entry.get_tag(name.partition('.')[2])


def resolve_name(name: str) -> str:
    """``arch.tag`` for ``name`` (the default tag added for zoo models); an :class:`UnknownNameError` for unknown
    timm models and catalogue tags."""
    arch = name.partition('.')[0]
    if not timm.is_model(arch):
        raise UnknownNameError(unknown_model_message(name))
    if arch in CATALOGUE:
        return f'{arch}.{get_entry_and_tag(name)[1].tag}'
    return name


def attention_kwargs(model_name: str, attention: str) -> Dict[str, Any]:
    """Model kwargs that build ``model_name`` with SRM (none), SE or no block attention; JSON values, so that
    they go into the ``model_args`` of timm's ``config.json`` as they are.

    No attention is ``attn_layer=''``: timm's blocks build none for an empty name (``None`` would do too,
    but ``timm.create_model`` drops None kwargs, leaving the model's default, SRM)."""
    if attention not in ATTENTIONS:
        raise UserError(f'Unknown attention {attention!r}; choose one of {", ".join(ATTENTIONS)}.')
    if attention == 'srm':
        return {}
    layer = 'se' if attention == 'se' else ''
    if model_name.partition('.')[0] not in CATALOGUE:
        raise UserError(f'--attention {attention} needs one of the zoo\'s models, not {model_name!r}.')
    if get_entry(model_name).family == 'cifar':
        return dict(attn_layer=layer)
    return dict(block_args=dict(attn_layer=layer))
