"""One registry for every named plugin point (judges, SAE architectures, offline models, CLI
commands): registering a taken name raises, looking up an unknown one gives one clear error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import RefusalEvalError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, *, fold_case: bool = False) -> None:
        self.kind = kind
        self._fold = fold_case
        self._items: dict[str, T] = {}

    def _key(self, name: str) -> str:
        return name.lower() if self._fold else name

    def add(self, name: str, item: T) -> T:
        key = self._key(name)
        if key in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[key] = item
        return item

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under every one of ``names``."""

        def wrap(item: T) -> T:
            for name in names:
                self.add(name, item)
            return item

        return wrap

    def get(self, name: str) -> T:
        try:
            return self._items[self._key(name)]
        except KeyError:
            raise RefusalEvalError(f"unknown {self.kind} {name!r}", f"use one of {self.names()}") from None

    def find(self, name: str) -> T | None:
        return self._items.get(self._key(name))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._items
