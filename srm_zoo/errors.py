"""Errors meant for users: one clear paragraph, no traceback (the CLI prints them and exits non-zero)."""
import difflib
from typing import Iterable

__all__ = ['UserError', 'UnknownNameError', 'error_reason', 'unknown_model_message']


class UserError(Exception):
    """Bad input from a user (unknown name, missing file, mismatching checkpoint, ...)."""


class UnknownNameError(UserError, KeyError):
    """A model or weight tag the catalogue does not hold: a lookup's KeyError and a message for users."""

    def __str__(self) -> str:  # the message itself, not KeyError's quoted repr
        return str(self.args[0]) if self.args else ''


def error_reason(error: BaseException) -> str:
    """The first line of a library's error message (its type name when it has none), for quoting in a UserError."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def unknown_model_message(name: str, known: Iterable[str] = ()) -> str:
    """A message for an unknown model name, suggesting the closest known names."""
    import timm

    candidates = list(known) or timm.list_models()
    arch = name.split('.', 1)[0]
    close = difflib.get_close_matches(arch, candidates, n=5, cutoff=0.6)
    hint = f' Did you mean: {", ".join(close)}?' if close else ''
    return f'Unknown model {name!r}.{hint} `srm-zoo list` shows the SRM models.'
