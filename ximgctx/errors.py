"""The exceptions ximgctx raises for things a user can fix.

Every error that means "the input, the artifact, the config or the output location is wrong" derives from
:class:`XimgctxError`. The command line turns these into one clear line and exit status 2; anything else is a
bug and keeps its traceback. Each subclass also derives from the built-in exception callers caught before
these classes existed (``ValueError``, ``OSError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["ArtifactError", "ConfigError", "InputError", "OutputError", "XimgctxError"]


class XimgctxError(Exception):
    """Base class: a problem a user can fix, with a message that says what and where."""


class ConfigError(XimgctxError, ValueError):
    """A configuration value is invalid; the message names the field and the value."""


class InputError(XimgctxError, ValueError):
    """Input data (a posts file, a record, a request, an option) is malformed; names the file, line, field."""


class ArtifactError(XimgctxError, ValueError):
    """A saved folder (model, checkpoint, index, label memory) is incomplete, altered, unsafe or of another
    kind; the message names the file."""


class OutputError(XimgctxError, OSError):
    """An output cannot be written where asked (it would destroy data, it is an input, it is locked, the disk
    is full, the folder is read-only); the message names the output."""
