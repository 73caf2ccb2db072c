"""Small real datasets the zoo can write to disk by itself (no download)."""
from .digits import DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION, write_digits

__all__ = ['DIGITS_SPLIT_SEED', 'DIGITS_TEST_FRACTION', 'write_digits']
