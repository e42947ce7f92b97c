"""Errors raised for bad input data, always naming the file, the row and what was expected."""
from __future__ import annotations

__all__ = ["DataFormatError", "DataWarning", "LINE_COLUMN"]

#: Optional column a loader may add to a frame with the 1-based line number of each row in its
#: source file; the graph builder then names that line in its errors instead of a frame row.
LINE_COLUMN = "_line"


class DataFormatError(ValueError):
    """Input data does not have the expected format.

    Args:
        source: the file (or frame) the bad data came from.
        message: what is wrong and what was expected.
        line: 1-based line number in ``source`` (``None`` when it does not apply).
    """

    def __init__(self, source: str, message: str, line: int | None = None) -> None:
        self.source = str(source)
        self.line = line
        self.detail = message
        where = self.source if line is None else f"{self.source}, line {line}"
        super().__init__(f"{where}: {message}")


class DataWarning(UserWarning):
    """Input data was filtered, merged or is suspicious (duplicates, dangling links, a raw file
    that differs from the published one): shown through :mod:`warnings`, so a Python user sees
    it without configuring logging; the counts are also kept in ``data.build_report``."""
