"""argparse types for numbers with a valid range: a bad value is an argparse error (exit 2), not a traceback."""
import argparse
import math
from typing import Callable

__all__ = ['positive_int', 'non_negative_int', 'positive_float', 'random_seed', 'ratio_target']


def _number(kind: Callable, what: str, valid: Callable[[float], bool]) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not {what}') from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f'{text!r} is not {what}')
        return value
    parse.__name__ = what  # argparse names the type in "invalid <name> value" messages
    return parse


positive_int = _number(int, 'a positive integer', lambda v: v > 0)
non_negative_int = _number(int, 'a non-negative integer', lambda v: v >= 0)
positive_float = _number(float, 'a positive number', lambda v: v > 0 and math.isfinite(v))
random_seed = _number(int, 'a seed from 0 to 2**32 - 1', lambda v: 0 <= v < 2 ** 32)
ratio_target = _number(float, 'a ratio above 0 and at most 10', lambda v: 0 < v <= 10)
