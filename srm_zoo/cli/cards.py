"""``srm-zoo cards``: regenerate the model card of every catalogue model in model_cards/, and the README's
table of the zoo.

Cards and the table follow the catalogue and the release manifest; --check only reports cards
(and a table) that are missing or out of date (exit status 1), for CI. The README's table sits
between marker lines; a README without them (the default README.md of another project) is left alone.
"""
import argparse
from pathlib import Path
from typing import Optional

from ..errors import UserError, error_reason
from ..hub.cards import stale_cards, write_model_cards
from ..hub.zoo_table import TABLE_START, readme_table_is_stale, write_readme_table, zoo_table
from ..paths import check_output_dir
from ._help import DefaultsHelpFormatter

DEFAULT_README = 'README.md'


def readme_with_table(readme: Optional[str]) -> Optional[Path]:
    """The README whose zoo table to write or check: ``readme``; without one, README.md where it has the
    table's markers (another project's README, even one that is not text, is left alone). A README named
    explicitly must have them."""
    path = Path(readme or DEFAULT_README)
    if path.is_file() and TABLE_START in _text_or_empty(path, readme):
        return path
    if readme is None:
        return None
    raise UserError(f'--readme {readme}: ' + ('no such file.' if not path.is_file() else
                                               f'it has no zoo table markers (a line "{TABLE_START}").'))


def _text_or_empty(path: Path, readme: Optional[str]) -> str:
    """The text of the README ``path``; one that cannot be decoded is empty by default and a UserError when named
    with --readme (``readme``)."""
    try:
        return path.read_text()
    except UnicodeDecodeError as error:
        if readme is None:
            return ''
        raise UserError(f'--readme {readme}: it cannot be read as text ({error_reason(error)}); name the README that '
                        f'holds the zoo table markers (a line "{TABLE_START}").') from None


def _check(out: Path, readme: Optional[Path]) -> int:
    if not out.is_dir():
        print(f'There are no model cards in {out}: the folder does not exist. Run `srm-zoo cards --out '
              f'{out}` to write them.')
        return 1
    stale = stale_cards(out)
    if readme is not None and readme_table_is_stale(readme, zoo_table()):
        stale.append(f'the zoo table of {readme}')
    if stale:
        print(f'{len(stale)} model card(s) or table(s) are out of date: {", ".join(stale)}. '
              'Run `srm-zoo cards` to regenerate them.')
        return 1
    print(f'The model cards in {out}' + (f' and the zoo table of {readme}' if readme else '') + ' are up to date.')
    return 0


def regenerate(out: Path, readme: Optional[Path]) -> None:
    """Writes the model cards into ``out`` and, given a ``readme`` (:func:`readme_with_table`), its zoo table."""
    changed = write_model_cards(out)
    print(f'Updated {len(changed)} model card(s) in {out}' + (f': {", ".join(changed)}' if changed else '.'))
    if readme is not None:
        written = write_readme_table(readme, zoo_table())
        print(f'The zoo table of {readme} ' + ('is updated.' if written else 'was up to date.'))


def add_readme_argument(parser: argparse.ArgumentParser) -> None:
    """``--readme``: the README whose zoo table a command regenerates."""
    parser.add_argument('--readme', default=None,
                        help=f'README whose zoo table to regenerate (default: {DEFAULT_README}, where it has the '
                             'zoo table markers)')


def run(args: argparse.Namespace) -> int:
    out = check_output_dir(args.out, '--out')
    readme = readme_with_table(args.readme)
    if args.check:
        return _check(out, readme)
    regenerate(out, readme)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser('cards', help='regenerate the model cards and the README\'s zoo table',
                                   description=__doc__.split(':', 1)[1].strip(),
                                   formatter_class=DefaultsHelpFormatter)
    parser.add_argument('--out', default='model_cards', help='folder of the cards')
    add_readme_argument(parser)
    parser.add_argument('--check', action='store_true',
                        help='only report stale cards and a stale zoo table (exit status 1 if any)')
    parser.set_defaults(run=run)
