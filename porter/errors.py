"""The one error type porter raises for bad input; the CLI prints it as a single line."""

from __future__ import annotations


class PorterError(Exception):
    """Bad input or an impossible request. ``str()`` is the whole one-line message.

    ``where`` is ``file:line`` (or just a path) when the problem has a position.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
