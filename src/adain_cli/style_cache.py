"""Style statistics, cached once for every command: an LRU in memory, the on-disk bank behind it.

A style contributes only the mean and std of its relu4_1 features (4 KB however large the
painting), so each style is decoded and encoded once and its statistics kept, under a key
the caller chooses (a style file; an upload's digest and size). The colour-mode rule is
written here and nowhere else: under --preserve-color a style is recoloured towards each
content, so its statistics hold for one content only; then the decoded picture is kept
instead (bounded in bytes) and encoded per content, and the bank is not used.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING

from torch import Tensor

from . import color
from .errors import ImageError
from .lru import Recent
from .model import FeatureStats
from .stylizer import EncodedContent, Stylizer

if TYPE_CHECKING:
    from .style_bank import StyleBank

STATS_ENTRIES = 4096  # 4 KB each
# Decoded styles kept for "coral", which re-encodes them per content; the least recently used go.
IMAGE_BYTES = 1 << 30


def shared(color_mode: color.ColorMode) -> bool:
    """Whether a style's statistics hold for every content in `color_mode` (so that they may be
    kept, and banked); not where the style is recoloured towards each content."""
    return not color.recolours_style(color_mode)


class StyleCache:
    """Statistics by key for one Stylizer and one way of preparing styles. Keys are style files
    when there is a `bank` (it looks styles up by file). Used from one thread (the runner's);
    `holds` may be asked from any."""

    def __init__(self, stylizer: Stylizer, *, bank: StyleBank | None = None, entries: int = STATS_ENTRIES,
                 image_bytes: int = IMAGE_BYTES, keep_images: bool = True, keep_failures: bool = True) -> None:
        """`entries`: statistics kept at most (4 KB each); `keep_images`: whether pictures are
        kept for per-content colour modes (`image_bytes` of them at most); `keep_failures`:
        whether a style that failed fails again at once (a run) or is tried again (a server,
        where out of memory may pass)."""
        self._stylizer = stylizer
        self._bank = bank
        # A style that cannot be used is remembered with its error: its other pairs fail alike, at once.
        self._stats: Recent[Hashable, FeatureStats | Exception] = Recent(entries)
        self._images: Recent[Hashable, Tensor] = Recent(entries, image_bytes, lambda image: image.nbytes)
        self._keep_images, self._keep_failures = keep_images, keep_failures
        self._upcoming: deque[Hashable] = deque()
        self._fetching: dict[Hashable, Future[Tensor | FeatureStats]] = {}
        self._pool: Executor | None = None
        self._fetch: Callable[[Hashable], Tensor] | None = None
        self._ahead = 0
        self._bank_ahead = False

    @property
    def entries(self) -> int:
        return len(self._stats) + len(self._images)

    @property
    def hits(self) -> int:
        return self._stats.hits + self._images.hits

    def holds(self, key: Hashable, color_mode: color.ColorMode) -> bool:
        """Whether `stats` for this style needs no decoding (a server decodes only what it must)."""
        return key in self._stats if shared(color_mode) else key in self._images

    def expect(self, keys: Iterable[Hashable], fetch: Callable[[Hashable], Tensor], pool: Executor,
               color_mode: color.ColorMode, ahead: int = 2) -> None:
        """Styles that will be asked for in this order, in `color_mode`: fetched on `pool` (from
        the bank, else decoded by `fetch`), `ahead` at a time — a folder of thousands must not
        sit in memory as pixels."""
        upcoming = dict.fromkeys(keys)
        self._stats.hold_at_least(len(upcoming))  # a run's styles are all kept: 4 KB each
        self._upcoming.extend(upcoming)
        self._pool, self._fetch, self._ahead = pool, fetch, ahead
        self._bank_ahead = self._bank is not None and shared(color_mode)
        self._top_up()

    def stats(self, key: Hashable, load: Callable[[], Tensor], content: EncodedContent | None = None,
              color_mode: color.ColorMode = "style") -> FeatureStats:
        """The style's statistics for this content (`load` decodes it if it must be); the
        style's ImageError if it cannot be read, the raw error if it cannot be encoded."""
        found = self._stats.get(key)
        if isinstance(found, Exception):
            raise found
        if not shared(color_mode):
            image = self._images.get(key)
            if image is None:
                image = self._fetched(key, load, use_bank=False)  # type: ignore[assignment]
                if self._keep_images:
                    self._images.put(key, image)  # type: ignore[arg-type]
            return self._stylizer.style_stats(image, content, color_mode)
        return found if found is not None else self._encoded(key, load)

    def _encoded(self, key: Hashable, load: Callable[[], Tensor]) -> FeatureStats:
        fetched = self._fetched(key, load, use_bank=True)
        if isinstance(fetched, FeatureStats):
            stats = fetched
        else:
            try:
                stats = self._stylizer.style_stats(fetched)
            except Exception as exc:  # out of memory, say: its other pairs fail at once too
                self._failed(key, exc)
                raise
            if self._bank is not None:
                self._store(key, stats)
        self._stats.put(key, stats)
        return stats

    def _fetched(self, key: Hashable, load: Callable[[], Tensor], use_bank: bool) -> Tensor | FeatureStats:
        """The bank's statistics or the decoded style, fetched ahead or now; its ImageError is remembered."""
        future = self._fetching.pop(key, None)
        self._top_up()
        try:
            if future is not None:
                return future.result()
            banked = self._bank.get(key) if use_bank and self._bank is not None else None  # type: ignore[arg-type]
            return banked if banked is not None else load()
        except ImageError as exc:
            self._failed(key, exc)
            raise

    def _failed(self, key: Hashable, error: Exception) -> None:
        if self._keep_failures:
            self._stats.put(key, error)

    def _store(self, key: Hashable, stats: FeatureStats) -> None:
        if self._pool is None:
            self._bank.put(key, stats)  # type: ignore[union-attr, arg-type]
        else:  # off the model's thread
            self._pool.submit(self._bank.put, key, stats)  # type: ignore[union-attr]

    def _top_up(self) -> None:
        while self._upcoming and len(self._fetching) < self._ahead:
            key = self._upcoming.popleft()
            if key not in self._fetching and key not in self._stats and key not in self._images:
                self._fetching[key] = self._pool.submit(self._fetch_one, key)  # type: ignore[union-attr]

    def _fetch_one(self, key: Hashable) -> Tensor | FeatureStats:
        """On a worker: the statistics from the bank, else the decoded style."""
        banked = self._bank.get(key) if self._bank_ahead else None  # type: ignore[union-attr, arg-type]
        return banked if banked is not None else self._fetch(key)  # type: ignore[misc]
