"""`with reader:` for the readers and writers of this package: closed at the end."""

from __future__ import annotations

from typing import TypeVar

C = TypeVar("C", bound="Closing")


class Closing:
    """A resource with `close()` that is also its own context manager."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
