"""User errors: bad input or options. The CLI prints them as one line and exits 2."""

from __future__ import annotations


class UserError(ValueError):
    """A problem the user fixes in the input or the options; the message is one line naming
    the file, row or line, field and reason (and where the reject table is, if written)."""


class MissingInputError(UserError, FileNotFoundError):
    """An expected input file or role is absent; names the roles and what was found."""
