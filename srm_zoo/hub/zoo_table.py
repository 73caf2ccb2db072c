"""The README's table of the zoo's models, rendered from the catalogue and the release manifest.

The table sits between two marker lines of the README; :func:`with_zoo_table` replaces what is
between them and ``srm-zoo cards`` writes it, so the README never holds a second list of models.
"""
from pathlib import Path

from ..catalogue import CATALOGUE, ModelEntry
from ..errors import UserError
from ..manifest import Release, find_release
from ..stats import model_stats
from .cards import DATASET_NAMES

__all__ = ['TABLE_START', 'TABLE_END', 'zoo_table', 'with_zoo_table', 'readme_table_is_stale', 'write_readme_table']

TABLE_START = '<!-- zoo table: written by `srm-zoo cards` from srm_zoo/catalogue.py and the manifest; edit those -->'
TABLE_END = '<!-- end of zoo table -->'


def _published(release: Release) -> str:
    """Where the weights of a release are and what they scored, in one cell."""
    pinned = f'@{release.revision}' if release.revision else ''
    where = 'embedded in the package' if release.embedded else f'`hf-hub:{release.hf_hub_id}{pinned}`'
    scores = '; '.join(f'top-1 {m.top1:.2f} on the {m.num_images} {m.split} images of '
                       f'{DATASET_NAMES.get(m.dataset, m.dataset)}' for m in release.metrics)
    return f'`{release.tag}`: {where}' + (f', {scores}' if scores else '')


def _row(entry: ModelEntry) -> str:
    stats = model_stats(entry.name)
    published = [_published(r) for r in (find_release(entry.name, t.tag) for t in entry.tags) if r is not None]
    reported = '; '.join(f'{r.top1:.2f} {DATASET_NAMES.get(r.dataset, r.dataset)} ({r.source})' for r in entry.paper)
    counterpart = f'timm `{entry.baseline}`' if entry.family == 'imagenet' else entry.baseline
    cells = (f'`{entry.name}`', counterpart, f'{stats.params:,}', f'{stats.srm_params:,}',
             f'{stats.gmacs:.2f} at {stats.input_size[-1]} px', ', '.join(f'`{t.tag}`' for t in entry.tags),
             '; '.join(published) or 'none yet', reported)
    return '| ' + ' | '.join(cells) + ' |'


def zoo_table() -> str:
    """The zoo's models as a markdown table: counterpart, parameters (all, and SRM's), GMACs, tags, published
    weights and the top-1 reported in the literature."""
    header = ('| model | counterpart | params | of which SRM | GMACs | tags | published weights | '
              'reported top-1 (source) |')
    return '\n'.join([header, '|' + '---|' * 8, *(_row(entry) for entry in CATALOGUE.values())])


def with_zoo_table(readme: str, table: str) -> str:
    """``readme`` with ``table`` between its marker lines; a :class:`UserError` where they are missing."""
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start < 0 or end < start:
        raise UserError(f'The README has no zoo table markers: a line "{TABLE_START}", then one "{TABLE_END}".')
    return readme[:start + len(TABLE_START)] + '\n' + table + '\n' + readme[end:]


def readme_table_is_stale(path: Path, table: str) -> bool:
    """Whether the zoo table of the README at ``path`` differs from ``table``."""
    text = Path(path).read_text()
    return with_zoo_table(text, table) != text


def write_readme_table(path: Path, table: str) -> bool:
    """Writes ``table`` into the README at ``path``; returns whether the file changed."""
    text = Path(path).read_text()
    updated = with_zoo_table(text, table)
    if updated == text:
        return False
    Path(path).write_text(updated)
    return True
