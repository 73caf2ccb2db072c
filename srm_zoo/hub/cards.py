"""Model cards in timm's layout, with YAML front matter (``library_name: timm``, ``model-index``).

A card is rendered from the catalogue (architecture, tag, paper results), the model's measured
size and cost, and, when weights exist, their release: where they are and what they scored.
``model_cards/`` holds the card of every catalogue tag (:func:`write_model_cards`).
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from ..catalogue import CATALOGUE, PAPER, ModelEntry
from ..manifest import Metric, Release, find_release, hub_repo_id, load_manifest
from ..stats import model_stats

__all__ = ['CardWeights', 'front_matter', 'render_card', 'catalogue_cards', 'write_model_cards', 'stale_cards',
           'split_front_matter']

ARCH_PAPERS = {
    'resnet': ('Deep Residual Learning for Image Recognition', 'https://arxiv.org/abs/1512.03385'),
    'resnext': ('Aggregated Residual Transformations for Deep Neural Networks', 'https://arxiv.org/abs/1611.05431'),
    'wide_resnet': ('Wide Residual Networks', 'https://arxiv.org/abs/1605.07146'),
    'resnet_d': ('Bag of Tricks for Image Classification with Convolutional Neural Networks',
                 'https://arxiv.org/abs/1812.01187'),
}
DATASET_NAMES = {'imagenet-1k': 'ImageNet-1k', 'cifar10': 'CIFAR-10', 'cifar100': 'CIFAR-100'}


@dataclass(frozen=True)
class CardWeights:
    """What a card says about the weights of one tag.

    ``status`` is ``'hub'`` (a repository, pinned when ``revision`` is set), ``'embedded'``
    (inside the package), or ``'none'`` (not published: the card says how to produce them).
    """
    status: str
    repo_id: Optional[str] = None
    revision: Optional[str] = None
    sha256: Optional[str] = None
    metrics: Sequence[Metric] = ()
    provenance: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_release(cls, release: Release) -> 'CardWeights':
        return cls(status='embedded' if release.embedded else 'hub', repo_id=release.hf_hub_id,
                   revision=release.revision, sha256=release.sha256, metrics=release.metrics,
                   provenance=release.provenance)


def _dataset_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def _arch_papers(entry: ModelEntry) -> List[tuple]:
    baseline = entry.baseline
    if baseline.startswith('resnext'):
        keys = ['resnet', 'resnext']
    elif baseline.startswith('wide_resnet'):
        keys = ['resnet', 'wide_resnet']
    elif baseline.endswith('d') and baseline.startswith('resnet'):
        keys = ['resnet', 'resnet_d']
    else:
        keys = ['resnet']
    return [(PAPER['title'], PAPER['url'])] + [ARCH_PAPERS[k] for k in keys]


def front_matter(entry: ModelEntry, tag: str, metrics: Sequence[Metric] = ()) -> Dict[str, Any]:
    """The card's YAML metadata; ``model-index`` lists the measured metrics when there are any."""
    weight_tag = entry.get_tag(tag)
    meta: Dict[str, Any] = {
        'tags': ['image-classification', 'timm', 'srm'],
        'library_name': 'timm',
        'pipeline_tag': 'image-classification',
        'license': 'apache-2.0',
        'datasets': [weight_tag.dataset],
    }
    if metrics:
        meta['model-index'] = [{
            'name': f'{entry.name}.{tag}',
            'results': [{
                'task': {'type': 'image-classification', 'name': 'Image Classification'},
                'dataset': {'name': _dataset_name(m.dataset), 'type': m.dataset, 'split': m.split},
                'metrics': [
                    {'type': 'accuracy', 'name': 'Top-1 Accuracy', 'value': round(float(m.top1), 3)},
                    {'type': 'top_5_accuracy', 'name': 'Top-5 Accuracy', 'value': round(float(m.top5), 3)},
                ],
            } for m in metrics],
        }]
    return meta


def split_front_matter(card: str) -> tuple:
    """(metadata dict, body) of a card that starts with ``---`` YAML front matter."""
    if not card.startswith('---\n'):
        raise ValueError('card has no YAML front matter')
    header, body = card[4:].split('\n---\n', 1)
    return yaml.safe_load(header), body


def _hub_id(weights: CardWeights) -> str:
    """The ``hf-hub:`` id of Hub weights: pinned to the release's revision when it is known, so that srm-zoo
    checks the file's sha256 when it loads it."""
    pinned = f'@{weights.revision}' if weights.revision else ''
    return f'hf-hub:{weights.repo_id}{pinned}'


def _model_expression(entry: ModelEntry, tag: str, weights: CardWeights, **kwargs: str) -> str:
    extra = ''.join(f', {k}={v}' for k, v in kwargs.items())
    if weights.status == 'hub':
        return f"timm.create_model('{_hub_id(weights)}', pretrained=True{extra})"
    if weights.status == 'embedded':
        return f"timm.create_model('{entry.name}.{tag}', pretrained=True{extra})"
    return (f"timm.create_model('{entry.name}.{tag}', pretrained=True{extra},\n"
            f"                          pretrained_cfg_overlay=dict(file='model.safetensors'))")


def _usage(entry: ModelEntry, tag: str, weights: CardWeights) -> str:
    header = ('from urllib.request import urlopen\nfrom PIL import Image\nimport timm\nimport torch\n'
              'import srm_zoo  # registers the SRM architectures with timm\n\n'
              "img = Image.open(urlopen('https://huggingface.co/datasets/huggingface/documentation-images/"
              "resolve/main/beignets-task-guide.png')).convert('RGB')\n")
    transform = ('data_config = timm.data.resolve_model_data_config(model)\n'
                 'transforms = timm.data.create_transform(**data_config, is_training=False)\n')
    return '\n'.join([
        '### Image Classification', '```python', header,
        f'model = {_model_expression(entry, tag, weights)}', 'model = model.eval()', '', transform,
        'output = model(transforms(img).unsqueeze(0))  # unsqueeze single image into batch of 1',
        'top5_probabilities, top5_class_indices = torch.topk(output.softmax(dim=1) * 100, k=5)', '```', '',
        '### Feature Map Extraction', '```python', header,
        f"model = {_model_expression(entry, tag, weights, features_only='True')}", 'model = model.eval()', '',
        transform, 'for feature_map in model(transforms(img).unsqueeze(0)):',
        '    print(feature_map.shape)  # one map per stage, from the stem to the last stage', '```', '',
        '### Image Embeddings', '```python', header,
        '# num_classes=0 removes the classifier', f"model = {_model_expression(entry, tag, weights, num_classes='0')}",
        'model = model.eval()', '', transform,
        'output = model(transforms(img).unsqueeze(0))  # (batch_size, num_features) pooled embedding', '',
        '# or, without removing the classifier:',
        'features = model.forward_features(transforms(img).unsqueeze(0))  # unpooled feature map',
        'embedding = model.forward_head(features, pre_logits=True)', '```',
    ])


def _weights_section(entry: ModelEntry, tag: str, weights: CardWeights) -> str:
    name = f'{entry.name}.{tag}'
    if weights.status == 'none':
        return '\n'.join([
            '## Weights', '',
            f'No weights are published for `{name}` yet; `pretrained=True` explains how to get some. To produce '
            'them:', '',
            f'1. {entry.ways_to_weights};',
            f'2. measure them: `srm-zoo eval --model {name} --checkpoint CHECKPOINT --data DATA '
            '--results-file RESULTS.json`;',
            f'3. `srm-zoo export {name} --checkpoint CHECKPOINT --results RESULTS.json --out DIR` writes the '
            'Hub repository folder (weights, config, this card with the measured results);',
            f'4. `srm-zoo publish DIR --repo-id {weights.repo_id or hub_repo_id(entry.name, tag)}` uploads it and '
            'records the release (repository, pinned revision, sha256, metrics) in the manifest.',
        ])
    lines = ['## Weights', '']
    if weights.status == 'embedded':
        lines.append(f'Embedded in the srm-zoo package; `timm.create_model(\'{name}\', pretrained=True)` loads them '
                     'without network access.')
    elif weights.revision:
        lines.append(f'Hugging Face Hub repository `{weights.repo_id}`, pinned at revision `{weights.revision}`.')
    else:
        lines.append(f'Hugging Face Hub repository `{weights.repo_id}` (`model.safetensors` in this repository).')
    if weights.sha256:
        lines.append(f'sha256 of `model.safetensors`: `{weights.sha256}`. {_checked_loads(name, weights)}')
    for key, value in sorted(weights.provenance.items()):
        if key != 'comparison':
            lines.append(f'- {key}: {value}')
    return '\n'.join(lines)


def _checked_loads(name: str, weights: CardWeights) -> str:
    """Which loads check the sha256: those of the zoo's name and of the pinned ``hf-hub:`` id, through srm-zoo's
    manifest (an unpinned id follows the repository's branch, whose file may change, and is not checked)."""
    by_name = f"`timm.create_model('{name}', pretrained=True)`"
    if weights.status == 'embedded':
        return f'srm-zoo checks it whenever it loads these weights ({by_name}, or torch.hub).'
    if weights.revision:
        return (f'srm-zoo checks it whenever it loads these weights by the zoo\'s name ({by_name}) or by the pinned '
                f'id (`{_hub_id(weights)}`, as below); `hf-hub:{weights.repo_id}` without the revision follows the '
                'repository\'s main branch and is not checked.')
    return (f'Once `srm-zoo publish` records the release in srm-zoo\'s manifest, srm-zoo checks it whenever it loads '
            f'these weights by the zoo\'s name ({by_name}) or by the id pinned to the recorded commit '
            f'(`hf-hub:{weights.repo_id}@COMMIT`); `hf-hub:{weights.repo_id}` without a revision, as below, follows '
            'the repository\'s main branch and is not checked.')


def _comparison_table(weights: CardWeights) -> str:
    """SRM against its plain and SE counterparts trained with the same recipe and seed, when recorded."""
    comparison = weights.provenance.get('comparison')
    if not comparison:
        return ''
    names = {'srm': 'SRM (these weights)', 'se': 'SE', 'none': 'plain (no attention)'}
    rows = ['| attention | top-1 | top-5 | images |', '|---|---|---|---|']
    for key in sorted(comparison, key=lambda k: list(names).index(k) if k in names else len(names)):
        result = comparison[key]
        rows.append(f'| {names.get(key, key)} | {result["top1"]:.2f} | {result["top5"]:.2f} | {result["num_images"]} |')
    one_image = 100 / max(r['num_images'] for r in comparison.values())
    return ('\n\n### Against its counterparts\n\nThe same network without attention and with squeeze-and-excitation, '
            'trained with the same recipe and seed and measured on the same images (one image is '
            f'{one_image:.2f} points, so differences of a few images are noise):\n\n' + '\n'.join(rows))


def _results_section(entry: ModelEntry, weights: CardWeights) -> str:
    rows = ['| source | dataset | split | top-1 | top-5 | images | settings |', '|---|---|---|---|---|---|---|']
    for m in weights.metrics:
        settings = ', '.join(f'{k} {v}' for k, v in sorted(m.eval_settings.items()))
        rows.append(f'| these weights (`srm-zoo eval`) | {_dataset_name(m.dataset)} | {m.split} | {m.top1:.2f} | '
                    f'{m.top5:.2f} | {m.num_images} | {settings} |')
    for r in entry.paper:
        top5 = f'{r.top5:.2f}' if r.top5 is not None else ''
        rows.append(f'| reported: {r.source} | {_dataset_name(r.dataset)} | {r.split} | {r.top1:.2f} | {top5} | '
                    f'| {r.eval_settings} |')
    if len(rows) == 2:
        return '## Results\n\nNo accuracy is measured or reported for this model yet.'
    return '## Results\n\n' + '\n'.join(rows) + _comparison_table(weights)


def render_card(entry: ModelEntry, tag: str, weights: CardWeights) -> str:
    """The complete card (front matter and markdown) of ``entry.tag``."""
    weight_tag = entry.get_tag(tag)
    stats = model_stats(entry.name, tag=tag)
    size = stats.input_size
    meta = yaml.safe_dump(front_matter(entry, tag, weights.metrics), sort_keys=False, default_flow_style=False)
    papers = '\n'.join(f'  - {title}: {url}' for title, url in _arch_papers(entry))
    details = '\n'.join([
        '- **Model Type:** Image classification / feature backbone',
        '- **Model Stats:**',
        f'  - Params (M): {stats.params_m:.3f}',
        f'  - GMACs: {stats.gmacs:.3f}',
        f'  - Image size: {size[1]} x {size[2]}',
        '- **Papers:**', papers,
        f'- **Dataset:** {_dataset_name(weight_tag.dataset)}',
        f'- **Recipe:** {weights.provenance.get("recipe") or weight_tag.recipe_text}',
        f'- **Original:** {PAPER["code"]}',
    ])
    return '\n'.join([
        '---', meta.rstrip(), '---',
        f'# Model card for {entry.name}.{tag}', '',
        f'{entry.description} Weights tag `{tag}`: {weight_tag.description}', '',
        f'SRM (Style-based Recalibration Module) re-weights every channel from its style, the channel\'s mean '
        f'and standard deviation; this is {entry.counterpart.replace("``", "`")} with SRM in every residual block.', '',
        '## Model Details', details, '',
        _weights_section(entry, tag, weights), '',
        '## Model Usage', _usage(entry, tag, weights), '',
        _results_section(entry, weights), '',
        '## Citation', '```bibtex', PAPER['bibtex'], '```', '',
    ])


def catalogue_cards() -> Dict[str, str]:
    """File name -> card, for every tag of every catalogue model, as the manifest stands."""
    cards = {}
    for entry in CATALOGUE.values():
        for weight_tag in entry.tags:
            release = find_release(entry.name, weight_tag.tag)
            weights = CardWeights.of_release(release) if release else CardWeights(
                status='none', repo_id=hub_repo_id(entry.name, weight_tag.tag))
            cards[f'{entry.name}.{weight_tag.tag}.md'] = render_card(entry, weight_tag.tag, weights)
    return cards


def embedded_cards(cards: Dict[str, str]) -> Dict[Path, str]:
    """The README.md of every release embedded in the package: its model card."""
    return {release.embedded_dir / 'README.md': cards[f'{release.name}.md']
            for release in load_manifest() if release.embedded}


def _is_model_card(path: Path) -> bool:
    """Whether the file ``path`` is a model card as :func:`render_card` writes them (front matter, then the title)."""
    with path.open(errors='replace') as handle:
        head = handle.read(4096)
    return head.startswith('---\n') and '\n# Model card for ' in head


def stale_cards(directory: Path, cards: Optional[Dict[str, str]] = None) -> List[str]:
    """Names of the cards in ``directory`` that are missing, out of date, or of no catalogue tag (model cards
    named ``srm_*.md`` only: other files there are left alone), then the paths of stale cards of embedded
    releases."""
    cards = catalogue_cards() if cards is None else cards
    directory = Path(directory)
    stale = [name for name, text in cards.items()
             if not (directory / name).is_file() or (directory / name).read_text() != text]
    extra = [p.name for p in directory.glob('srm_*.md')
             if p.name not in cards and p.is_file() and _is_model_card(p)] if directory.is_dir() else []
    embedded = [str(path) for path, text in embedded_cards(cards).items()
                if not path.is_file() or path.read_text() != text]
    return sorted(stale + extra) + embedded


def write_model_cards(directory: Path) -> List[str]:
    """Regenerate ``directory`` to hold exactly the catalogue's cards; returns the files that changed."""
    directory = Path(directory)
    cards = catalogue_cards()
    changed = stale_cards(directory, cards)
    directory.mkdir(parents=True, exist_ok=True)
    embedded = embedded_cards(cards)
    for name in changed:
        if name in cards:
            (directory / name).write_text(cards[name])
        elif Path(name) in embedded:
            Path(name).write_text(embedded[Path(name)])
        else:
            (directory / name).unlink()
    return changed
