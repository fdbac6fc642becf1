"""Bad-input handling shared by the data preparation stages.

Every check reports through :class:`BadInputs`, which either stops at the first problem with one
:class:`DataPrepError` naming the file (and line), or, with ``skip_bad``, drops the item, counts it
and logs it, so that a large corpus with a few broken files can still be prepared on purpose.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

# Individual skipped items logged before only the count is reported (avoids flooding the log).
_MAX_LOGGED = 20


class DataPrepError(ValueError):
    """Bad input data; the message names the file (and line or key) at fault."""


class BadInputs:
    """Raise on the first bad input, or (``skip_bad=True``) skip, count and log each one."""

    def __init__(self, skip_bad: bool, what: str) -> None:
        self.skip_bad = skip_bad
        self.what = what
        self.messages: list[str] = []

    @property
    def count(self) -> int:
        """Number of bad inputs skipped so far."""
        return len(self.messages)

    def report(self, message: str) -> None:
        """Raise ``DataPrepError(message)``, or record it when skipping bad inputs."""
        if not self.skip_bad:
            raise DataPrepError(message)
        self.messages.append(message)
        if self.count <= _MAX_LOGGED:
            logger.warning("%s: skipping bad input: %s", self.what, message)

    def log_summary(self) -> None:
        """Log how many bad inputs were skipped (nothing when there were none)."""
        if self.messages:
            logger.warning("%s: skipped %d bad input(s) (--skip_bad)", self.what, self.count)
