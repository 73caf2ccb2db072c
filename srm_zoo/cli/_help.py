"""The help layout of every ``srm-zoo`` command."""
import argparse
import textwrap

__all__ = ['DefaultsHelpFormatter']


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: ...)" after an option's help, unless the help already says what the default
    is or the default is None (worked out at run time, as the help or its group's title says); lines broken
    between words only, so that names such as ``hf-hub:REPO`` stay whole."""

    def _split_lines(self, text: str, width: int):
        return textwrap.wrap(' '.join(text.split()), width, break_on_hyphens=False)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ''
        if action.default is None or 'default:' in help_text:
            return help_text
        return super()._get_help_string(action)
