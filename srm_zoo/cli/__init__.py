"""The ``srm-zoo`` command line.

Every module of this package (except those starting with ``_``) is a sub-command: it defines
``add_parser(subparsers)``, which adds its parser and sets ``run=`` to a function taking the
parsed arguments and returning an exit status.
"""
import argparse
import importlib
import os
import pkgutil
import sys
from typing import List, Optional

from ..errors import UserError

__all__ = ['build_parser', 'main']


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command of this package."""
    parser = argparse.ArgumentParser(
        prog='srm-zoo',
        description='Style-based Recalibration Module (SRM) networks for timm: list, evaluate, train, '
                    'convert, publish and benchmark.',
    )
    from .. import __version__
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module_info.name.startswith('_'):
            importlib.import_module(f'{__name__}.{module_info.name}').add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``srm-zoo``; a :class:`UserError` becomes one message on stderr and exit status 2, an ``OSError``
    (the system refusing a read or write) one message and status 1, and a reader that closes the output pipe
    early (``| head``) ends the command quietly with status 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left to flush goes nowhere
        return 1
    except UserError as error:
        print(f'srm-zoo {args.command}: error: {error}', file=sys.stderr)
        return 2
    except OSError as error:  # the system refused a read or write (permissions, a full disk): one line, no traceback
        print(f'srm-zoo {args.command}: error: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'srm-zoo {args.command}: interrupted', file=sys.stderr)
        return 130
