"""``srm-zoo digits --out DIR``: write scikit-learn's handwritten digits as a PNG image folder."""
import argparse

from ..datasets import write_digits
from ..datasets.digits import __doc__ as DIGITS_DOC


def run(args: argparse.Namespace) -> int:
    description = write_digits(args.out)
    counts = description['num_images']
    print(f'{args.out}: {counts["train"]} train and {counts["test"]} test images (32x32 RGB PNG); '
          f'mean {description["mean"][0]}, std {description["std"][0]}; details in {args.out}/digits.json')
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'digits', help="write scikit-learn's digits as a PNG image folder (the embedded model's data)",
        description=DIGITS_DOC.split('\n\n', 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output folder (new, empty, or written by this command, whose '
                                                     'other files stay); written aside and moved into place when '
                                                     'complete')
    parser.set_defaults(run=run)
