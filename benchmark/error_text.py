"""An error as one line of a message: a user-facing error says the problem and the fix in one line, and a
library's exception (MLflow, SQLAlchemy, torchvision, Ray) may run to pages of traceback-like text."""

from __future__ import annotations


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first non-blank line of `error`'s text, cut to `limit` characters ("" for an empty one)."""
    return (str(error).strip().splitlines() or [""])[0][:limit]
