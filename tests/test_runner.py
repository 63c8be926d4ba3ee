"""The one runner under every command: batching, order, the failure rule, stopping, admission."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import pytest
import torch

from adain_cli import Stylizer, images
from adain_cli.errors import Busy, RequestError
from adain_cli.runner import Budget, Failed, Render, Runner
from adain_cli.stylizer import EncodedContent


def recording(stylizer: Stylizer, batch_size: int = 4, fail=lambda stage, n: False,
              interrupt_at: int | None = None) -> tuple[Stylizer, dict]:
    """A Stylizer (sharing the networks) that records each stage's batch sizes, raises where
    `fail(stage, batch_size)` says, and is interrupted (Ctrl-C) at render call `interrupt_at`."""
    made = Stylizer(stylizer.encoder, stylizer.decoder, "cpu", batch_size=batch_size)
    calls: dict[str, list[int]] = {"encode": [], "render": []}
    encode, render = made.encode_contents, made.render_batch

    def encode_contents(batch, work_size=0):
        calls["encode"].append(len(batch))
        if fail("encode", len(batch)):
            raise ValueError("cannot encode")
        return encode(batch, work_size)

    def render_batch(contents, styles, alpha=1.0, color_mode="style"):
        calls["render"].append(len(contents))
        if len(calls["render"]) == interrupt_at:
            raise KeyboardInterrupt
        if fail("render", len(contents)):
            raise ValueError("cannot render")
        return render(contents, styles, alpha, color_mode)

    made.encode_contents, made.render_batch = encode_contents, render_batch  # type: ignore[method-assign]
    return made, calls


def picture(seed: int, size: tuple[int, int] = (24, 32)) -> torch.Tensor:
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))


@dataclass
class Item:
    """A test item: a content of a given size, one output per style seed."""

    name: str
    size: tuple[int, int] = (24, 32)
    outputs: int = 1
    color_mode: str = "style"
    work_size: int = 0
    load_error: Exception | None = None
    declines: bool = False
    loads: list[str] = field(default_factory=list)

    def begin(self) -> bool:
        return not self.declines

    def cached(self) -> None:
        return None

    def load(self) -> torch.Tensor:
        self.loads.append(threading.current_thread().name)
        if self.load_error is not None:
            raise self.load_error
        return picture(hash(self.name) % 1000, self.size)

    def renders(self, content: EncodedContent) -> list[Render | Failed]:
        return [Render(f"{self.name}/{i}", content, STYLE, 1.0) for i in range(self.outputs)]

    def failed(self, error: BaseException) -> list[Failed]:
        return [Failed(f"{self.name}/{i}", error) for i in range(self.outputs)]


STYLE = None  # one style's statistics, which every test item's outputs take


@pytest.fixture(autouse=True)
def style(stylizer: Stylizer) -> None:
    global STYLE
    STYLE = stylizer.style_stats(picture(99, (32, 32)))


class Collected:
    """A sink that keeps what reaches it, in order."""

    def __init__(self) -> None:
        self.results: list[tuple[object, object]] = []
        self.finishers: set[str] = set()

    def finish(self, key: object, image: torch.Tensor) -> tuple[int, ...]:
        self.finishers.add(threading.current_thread().name)
        return tuple(image.shape)

    def done(self, key: object, result: object) -> None:
        self.results.append((key, result))

    @property
    def keys(self) -> list[object]:
        return [key for key, _ in self.results]


def test_a_batch_holds_contents_of_one_work_size(stylizer):
    made, calls = recording(stylizer, batch_size=4)
    items = [Item("a"), Item("b", work_size=16), Item("c", work_size=16), Item("d")]
    sink = Collected()
    Runner(made, workers=0, fill=True).run(items, sink)
    assert calls["encode"] == [1, 2, 1]
    assert [result for _, result in sink.results] == [(1, 3, 24, 32)] * 4  # each at its content's size


def test_every_output_reaches_the_sink_in_order_finished_on_workers(stylizer):
    made, calls = recording(stylizer, batch_size=2)
    items = [Item(f"c{i}", outputs=3) for i in range(3)]
    sink = Collected()
    assert Runner(made, workers=2).run(items, sink) == 3
    assert sink.keys == [f"c{i}/{j}" for i in range(3) for j in range(3)]
    assert all(result == (1, 3, 24, 32) for _, result in sink.results)
    assert all(name.startswith("adain-finish") for name in sink.finishers)
    assert all(item.loads[0].startswith("adain-load") for item in items)  # decoded on workers, once each
    assert sum(calls["render"]) == 9 and max(calls["render"]) <= 2


def test_a_batch_takes_what_is_ready_of_one_size_and_colour_mode(stylizer):
    made, calls = recording(stylizer, batch_size=4)
    items = [Item("a"), Item("b"), Item("c", size=(32, 24)), Item("d", size=(32, 24)),
             Item("e", size=(32, 24), color_mode="luminance"), Item("f")]
    source = queue.Queue()
    for item in items:
        source.put(item)
    source.put(None)
    sink = Collected()
    Runner(made).serve(source, sink)  # all queued before it starts: every batch is as full as it may be
    assert calls["encode"] == [2, 2, 1, 1]
    assert sink.keys == [f"{name}/0" for name in "abcdef"]


class Slow(Item):
    def load(self):
        time.sleep(0.1)
        return super().load()


def test_a_run_that_fills_its_batches_waits_for_decoding_a_stream_takes_what_is_ready(stylizer):
    filled, calls = recording(stylizer, batch_size=3)
    Runner(filled, workers=1, fill=True).run([Slow(f"c{i}") for i in range(6)], Collected())
    assert calls["encode"] == [3, 3]  # whatever the timing: a run's pixels never depend on it
    streamed, calls = recording(stylizer, batch_size=3)
    Runner(streamed, workers=1).run([Slow(f"c{i}") for i in range(6)], Collected())
    assert calls["encode"][0] == 1 and sum(calls["encode"]) == 6  # the next was still decoding


def test_after_ctrl_c_the_results_already_made_still_reach_the_sink(stylizer):
    # A dataset's manifest must record what was written before the interruption.
    made, _ = recording(stylizer, batch_size=1, interrupt_at=4)
    sink = Collected()
    with pytest.raises(KeyboardInterrupt):
        Runner(made, behind=10).run((Item(f"c{i}") for i in range(10)), sink)
    assert sink.keys == ["c0/0", "c1/0", "c2/0"]


def test_a_batch_that_fails_is_retried_item_by_item_so_one_failure_is_its_own(stylizer):
    # The encoder fails on batches of more than one (as if they did not fit), and on the one "bad" content.
    bad = picture(hash("bad") % 1000)
    made, calls = recording(stylizer, batch_size=3, fail=lambda stage, n: stage == "encode" and n > 1)
    items = [Item("a"), Item("bad"), Item("c")]
    real = made.encode_contents

    def encode_contents(batch, work_size=0):
        if len(batch) == 1 and torch.equal(batch, bad):
            raise ValueError("this one cannot")
        return real(batch, work_size)

    made.encode_contents = encode_contents  # type: ignore[method-assign]
    source = queue.Queue()
    for item in items:
        source.put(item)
    source.put(None)
    sink = Collected()
    Runner(made).serve(source, sink)
    assert sink.keys == ["a/0", "bad/0", "c/0"]
    assert sink.results[0][1] == sink.results[2][1] == (1, 3, 24, 32)
    assert isinstance(sink.results[1][1], ValueError) and "this one cannot" in str(sink.results[1][1])
    assert calls["encode"] == [3, 1, 1] and calls["render"] == [1, 1]


def test_a_server_s_next_batch_runs_while_this_one_finishes_and_results_keep_their_order(stylizer):
    """Runner.serve: the next batch does not wait for this one's finishing (a live frame's
    encoding overlaps the network); results still reach the sink in order."""
    made, calls = recording(stylizer, batch_size=1)
    overlapped: list[bool] = []

    class Slow(Collected):
        def finish(self, key, image):
            if key == "a/0":  # finishing until the next batch has been rendered (10 s at most)
                deadline = time.monotonic() + 10
                while len(calls["render"]) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                overlapped.append(len(calls["render"]) == 2)
            return super().finish(key, image)

    source = queue.Queue()
    for name in ("a", "b"):
        source.put(Item(name))
    source.put(None)
    sink = Slow()
    Runner(made, workers=1, finishers=2).serve(source, sink)
    assert overlapped == [True] and sink.keys == ["a/0", "b/0"]


def test_a_render_that_fails_in_a_batch_is_retried_one_by_one(stylizer):
    made, calls = recording(stylizer, batch_size=3, fail=lambda stage, n: stage == "render" and n > 1)
    sink = Collected()
    Runner(made).run([Item("a", outputs=3)], sink)
    assert calls["render"] == [3, 1, 1, 1]
    assert [result for _, result in sink.results] == [(1, 3, 24, 32)] * 3


def test_a_content_that_cannot_be_loaded_fails_its_outputs_and_the_rest_go_on(stylizer):
    made, _ = recording(stylizer, batch_size=1)
    sink = Collected()
    error = ValueError("unreadable")
    Runner(made).run([Item("a"), Item("b", outputs=2, load_error=error), Item("c")], sink)
    assert sink.keys == ["a/0", "b/0", "b/1", "c/0"]
    assert [result for key, result in sink.results if key.startswith("b")] == [error, error]


def test_an_item_that_declines_to_begin_is_skipped(stylizer):
    made, calls = recording(stylizer, batch_size=1)
    sink = Collected()
    assert Runner(made).run([Item("a"), Item("gone", declines=True), Item("c")], sink) == 2
    assert sink.keys == ["a/0", "c/0"] and calls["encode"] == [1, 1]


def test_the_sources_error_is_raised_after_the_items_before_it_and_the_threads_end(stylizer):
    made, _ = recording(stylizer, batch_size=1)

    def source():
        yield Item("a")
        raise OSError("the video stops decoding")

    sink = Collected()
    before = threading.active_count()
    with pytest.raises(OSError, match="stops decoding"):
        Runner(made).run(source(), sink)
    assert threading.active_count() == before


def test_a_sinks_error_stops_the_run_and_the_source_is_not_read_to_its_end(stylizer):
    made, _ = recording(stylizer, batch_size=1)
    taken = []

    def source():
        for i in range(1000):
            taken.append(i)
            yield Item(f"c{i}")

    class Refusing(Collected):
        def done(self, key, result):
            raise OSError("disk full")

    before = threading.active_count()
    with pytest.raises(OSError, match="disk full"):
        Runner(made, workers=1).run(source(), Refusing())
    assert len(taken) < 20 and threading.active_count() == before  # the feed is bounded, and stopped


def test_ctrl_c_stops_the_run_with_every_thread_joined(stylizer):
    made, _ = recording(stylizer, batch_size=1, interrupt_at=2)
    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        Runner(made).run((Item(f"c{i}") for i in range(100)), Collected())
    assert threading.active_count() == before


def test_results_are_answered_at_once_when_serving(stylizer):
    # A server's client waits for its answer: it must not wait for the next request to come.
    made, _ = recording(stylizer, batch_size=1)
    source = queue.Queue()
    answered = threading.Event()

    class Answering(Collected):
        def done(self, key, result):
            super().done(key, result)
            answered.set()

    worker = threading.Thread(target=Runner(made).serve, args=(source, Answering()))
    worker.start()
    try:
        source.put(Item("only"))
        assert answered.wait(30)
    finally:
        source.put(None)
        worker.join(30)
    assert not worker.is_alive()


def test_the_8_bit_frames_of_a_video_collate_as_stills_do(stylizer):
    # adain video hands (H, W, 3) 8-bit frames: the collate hook turns them into the network's range.
    made, _ = recording(stylizer, batch_size=2)
    frame = images.to_8bit(picture(5)[0]).permute(1, 2, 0)

    class Frame(Item):
        def load(self):
            return frame

    def collate(frames):
        return images.from_8bit(torch.stack(frames).permute(0, 3, 1, 2))

    sink = Collected()
    Runner(made, collate=collate).run([Frame("f0"), Frame("f1")], sink)
    assert [result for _, result in sink.results] == [(1, 3, 24, 32)] * 2


def test_the_budget_admits_in_bytes_refuses_at_once_and_is_given_back_once():
    budget = Budget(100)
    first = budget.reserve(60, lambda: 3)
    with pytest.raises(Busy) as busy:
        budget.reserve(50, lambda: 3)
    assert busy.value.retry_after == 3 and budget.held == 60
    with pytest.raises(RequestError) as never:
        budget.reserve(90, lambda: 3, held=20)  # with what it holds already it could never fit
    assert never.value.status == 413
    first.release()
    first.release()
    assert budget.held == 0
    started = time.perf_counter()
    budget.reserve(100, lambda: 3).release()
    assert time.perf_counter() - started < 1


def test_without_workers_contents_load_on_the_feeder_thread(stylizer):
    # A video's frames come decoded: handing each to a worker would only cost a thread switch.
    made, _ = recording(stylizer, batch_size=2)
    items = [Item(f"c{i}", load_error=ValueError("bad") if i == 1 else None) for i in range(3)]
    sink = Collected()
    Runner(made, workers=0).run(items, sink)
    assert all(item.loads == ["adain-feed"] for item in items)
    assert sink.keys == ["c0/0", "c1/0", "c2/0"] and isinstance(sink.results[1][1], ValueError)
