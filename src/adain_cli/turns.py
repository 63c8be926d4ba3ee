"""The server's queue: requests first come first served, live streams newest frame wins, all in turns.

    POST /v1/stylize  --put_nowait-->  the requests' lane: in order, at most `limit` waiting
    live stream k     --offer------->  stream k's lane: one frame; a newer one replaces it
    the runner        <--get---------  the next lane that holds something, round-robin

So a camera that sends frames faster than the model runs holds one frame waiting, never a
backlog (latency stays one frame's work whatever the client sends), and neither a fast
stream nor a burst of requests can starve the others: each lane gives one item per turn.
Once `end` is called the requests still waiting are given out and then None, the runner's
sign to stop; streams get nothing more.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Lane(Generic[T]):
    """One source's waiting items: the requests' (up to the queue's limit), or a stream's (one)."""

    def __init__(self) -> None:
        self.items: deque[T] = deque()
        self.open = True


class Turns(Generic[T]):
    """The lanes behind one lock, taken round-robin; `get`/`get_nowait` as a `queue.Queue`'s."""

    def __init__(self, limit: int) -> None:
        self._changed = threading.Condition()
        self._limit = limit
        self._requests: Lane[T] = Lane()
        self._ring: deque[Lane[T]] = deque([self._requests])
        self._ended = False

    # --- the requests' lane ---------------------------------------------------------------------

    def put_nowait(self, item: T) -> None:
        """A request at the back of its lane; queue.Full when `limit` wait already."""
        with self._changed:
            if len(self._requests.items) >= self._limit:
                raise queue.Full
            self._requests.items.append(item)
            self._changed.notify()

    def qsize(self) -> int:
        """Requests waiting (streams' frames are not a queue)."""
        return len(self._requests.items)

    # --- streams ----------------------------------------------------------------------------------

    def open_lane(self) -> Lane[T]:
        """A lane for one stream, at the back of the ring."""
        lane: Lane[T] = Lane()
        with self._changed:
            self._ring.append(lane)
        return lane

    def offer(self, lane: Lane[T], item: T) -> T | None:
        """`item` waits in `lane`; returns the item it replaced (dropped), or `item` itself when
        it cannot wait (the lane is closed or the queue has ended)."""
        with self._changed:
            if not lane.open or self._ended:
                return item
            replaced = lane.items.popleft() if lane.items else None
            lane.items.append(item)
            self._changed.notify()
            return replaced

    def close_lane(self, lane: Lane[T]) -> T | None:
        """The stream has gone: its lane leaves the ring; returns the item left waiting, if any."""
        with self._changed:
            lane.open = False
            if lane in self._ring:
                self._ring.remove(lane)
            return lane.items.popleft() if lane.items else None

    # --- the runner's side --------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> T | None:
        """The next item in turn, waiting for one; None once ended and no request is left."""
        with self._changed:
            while True:
                found, item = self._take()
                if found or self._ended:
                    return item
                if not self._changed.wait(timeout):
                    raise queue.Empty

    def get_nowait(self) -> T | None:
        with self._changed:
            found, item = self._take()
            if found or self._ended:
                return item
            raise queue.Empty

    def _take(self) -> tuple[bool, T | None]:
        """The first lane after the last one served that holds an item gives it (the ring turns
        past each lane it looks at, so the next look starts after the one that gave)."""
        for _ in range(len(self._ring)):
            lane = self._ring[0]
            self._ring.rotate(-1)
            if lane.items and (lane is self._requests or not self._ended):
                return True, lane.items.popleft()
        return False, None

    # --- stopping ---------------------------------------------------------------------------------

    def end(self) -> list[T]:
        """No more items: the requests waiting are still given out, then None. Returns the
        streams' waiting frames, which are not (their streams are told so by the caller)."""
        with self._changed:
            self._ended = True
            left = [lane.items.popleft() for lane in self._ring if lane is not self._requests and lane.items]
            self._changed.notify_all()
        return left

    def drain(self) -> list[T]:
        """The requests still waiting, taken out (answered by the caller)."""
        with self._changed:
            left = list(self._requests.items)
            self._requests.items.clear()
            self._changed.notify_all()
        return left
