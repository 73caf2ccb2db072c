"""``srm-zoo cards``: regenerate the model card of every catalogue model in model_cards/.

Cards follow the catalogue and the release manifest; --check only reports cards that are
missing or out of date (exit status 1), for CI.
"""
import argparse

from ..hub.cards import stale_cards, write_model_cards
from ..paths import check_output_dir
from ._help import DefaultsHelpFormatter


def run(args: argparse.Namespace) -> int:
    out = check_output_dir(args.out, '--out')
    if args.check:
        if not out.is_dir():
            print(f'There are no model cards in {args.out}: the folder does not exist. Run `srm-zoo cards --out '
                  f'{args.out}` to write them.')
            return 1
        stale = stale_cards(args.out)
        if stale:
            print(f'{len(stale)} model card(s) in {args.out} are out of date: {", ".join(stale)}. '
                  'Run `srm-zoo cards` to regenerate them.')
            return 1
        print(f'The model cards in {args.out} are up to date.')
        return 0
    changed = write_model_cards(args.out)
    print(f'Updated {len(changed)} model card(s) in {args.out}' + (f': {", ".join(changed)}' if changed else '.'))
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser('cards', help='regenerate the model cards in model_cards/',
                                   description=__doc__.split(':', 1)[1].strip(),
                                   formatter_class=DefaultsHelpFormatter)
    parser.add_argument('--out', default='model_cards', help='folder of the cards')
    parser.add_argument('--check', action='store_true', help='only report stale cards (exit status 1 if any)')
    parser.set_defaults(run=run)
