"""User-facing errors.

Every error that a user can cause (a wrong path, a checkpoint that does not fit its config, a prompt
longer than the context, ...) is raised as :class:`JaxDeltaError` with a one-line message that says what
is wrong and what to do. The CLI prints it without a traceback and exits with status 2.
"""

from __future__ import annotations


class JaxDeltaError(Exception):
    """A problem with the user's input, reported in one line."""


class CheckpointError(JaxDeltaError):
    """A checkpoint directory or file that cannot be loaded as asked."""


class UnsupportedModelError(JaxDeltaError):
    """A config.json whose architecture jaxdelta does not implement."""


class ContextLengthError(JaxDeltaError):
    """A prompt (or prompt plus new tokens) longer than the model's context."""
