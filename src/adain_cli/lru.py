"""A least-recently-used cache bounded by entries and by a size the caller measures."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """The most recently used values, at most `max_entries` of them and (when `max_size` is set)
    at most `max_size` in all as `size_of` measures them; the one newest value stays whatever its
    size. Safe from several threads (a server's request threads look up while its worker fills it)."""

    def __init__(self, max_entries: int, max_size: int = 0, size_of: Callable[[V], int] = lambda v: 0) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._max_entries, self._max_size, self._size_of = max_entries, max_size, size_of
        self._size = 0  # kept as items come and go: summing on every put is quadratic in a big library
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: K) -> V | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            return None

    def put(self, key: K, value: V) -> None:
        with self._lock:
            if key in self._items:
                self._size -= self._size_of(self._items[key])
            self._items[key] = value
            self._size += self._size_of(value)
            self._items.move_to_end(key)
            while len(self._items) > 1 and (len(self._items) > self._max_entries or (
                    self._max_size and self._size > self._max_size)):
                _, dropped = self._items.popitem(last=False)
                self._size -= self._size_of(dropped)

    def hold_at_least(self, entries: int) -> None:
        """Raise the entry bound (never lower it): for a caller that knows how many it will need."""
        with self._lock:
            self._max_entries = max(self._max_entries, entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)
