"""`/v1/live`: camera frames over a WebSocket, newest frame wins, streams in turns (live.py, turns.py)."""

from __future__ import annotations

import io
import json
import queue
import socket
import threading
import time

import pytest
from conftest import LOCAL, hold_rendering, synthetic_image
from PIL import Image
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from adain_cli import images, live, serve, web
from adain_cli.turns import Turns

WS = LOCAL.replace("http", "ws") + "/v1/live"
SETTINGS = {"type": "settings", "style_name": ["one.png"], "content_size": 32}


def jpeg(seed: int, size: tuple[int, int] = (48, 36)) -> bytes:
    buffer = io.BytesIO()
    synthetic_image(*size, seed=seed).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def answer(ws) -> bytes:
    """The next frame the server sends, skipping its stats; an error fails the test."""
    while True:
        message = ws.receive()
        if message.get("bytes") is not None:
            return message["bytes"]
        text = json.loads(message["text"])
        assert text["type"] == "stats", text


def roundtrip(ws, frame: bytes) -> bytes:
    ws.send_bytes(frame)
    return answer(ws)


def reply(ws, kind: str) -> dict:
    """The next text message of `kind`, skipping stats (and nothing else)."""
    while True:
        message = json.loads(ws.receive_text())
        if message["type"] == kind:
            return message
        assert message["type"] == "stats", message


def stats(ws) -> dict:
    """Counts once every message sent before has been handled (the stream reads in order);
    frames answered meanwhile are skipped."""
    ws.send_text(json.dumps({"type": "stats", "id": "asked"}))
    while True:
        message = ws.receive()
        if message.get("text") is not None and json.loads(message["text"]).get("id") == "asked":
            return json.loads(message["text"])


def started(ws, **settings) -> dict:
    assert reply(ws, "ready")["settings"]["content_size"] == live.DEFAULT_CONTENT_SIZE
    ws.send_text(json.dumps({**SETTINGS, **settings}))
    return reply(ws, "settings")


def api_picture(client, frame: bytes, **fields) -> bytes:
    response = client.post("/v1/stylize", files={"content": ("f.jpg", frame)},
                           data={"style_name": "one.png", "content_size": "32", "format": "png", **fields})
    assert response.status_code == 200, response.text
    return response.content


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


# --- the protocol -------------------------------------------------------------------------------------


def test_each_frame_is_answered_with_one_frame_in_the_chosen_format(client):
    with client.websocket_connect(WS) as ws:
        assert started(ws)["style_name"] == ["one.png"]
        first = Image.open(io.BytesIO(roundtrip(ws, jpeg(1))))
        assert first.format == "JPEG" and first.size == images.resized_size(48, 36, 32)
        ws.send_text(json.dumps({"type": "settings", "format": "webp", "content_size": 36}))
        assert reply(ws, "settings")["format"] == "webp"
        second = Image.open(io.BytesIO(roundtrip(ws, jpeg(2))))
        assert second.format == "WEBP" and second.size == (48, 36)
        counts = stats(ws)
    assert (counts["frames_in"], counts["frames_out"], counts["dropped"], counts["failed"]) == (2, 2, 0, 0)
    assert counts["latency_ms"]["p50"] > 0 and counts["latency_ms"]["p99"] >= counts["latency_ms"]["p50"]


def test_with_smooth_off_a_frame_is_the_apis_picture_pixel_for_pixel_and_settings_apply_next_frame(client):
    frame = jpeg(3)
    with client.websocket_connect(WS) as ws:
        started(ws, format="png", smooth=0)
        assert roundtrip(ws, frame) == api_picture(client, frame)
        ws.send_text(json.dumps({"type": "settings", "alpha": 0.4, "preserve_color": True}))
        assert reply(ws, "settings")["alpha"] == 0.4
        assert pixels(roundtrip(ws, frame)) == pixels(api_picture(client, frame, alpha="0.4", preserve_color="true"))
        ws.send_text(json.dumps({"type": "settings", "content_size": 36, "work_size": 16}))  # guided up to 36
        assert reply(ws, "settings")["work_size"] == 16
        assert pixels(roundtrip(ws, frame)) == pixels(api_picture(client, frame, alpha="0.4", preserve_color="true",
                                                                  content_size="36", work_size="16"))


def test_steady_statistics_are_on_by_default_and_restart_at_a_cut(client):
    """`smooth` (on by default) averages content statistics over frames: a frame close to the
    last is not painted on its own statistics; a cut (a different picture) starts afresh. A long
    time constant here, so that the test does not depend on how fast frames come."""
    base = synthetic_image(48, 36, seed=4)
    shaken = base.point(lambda v: min(255, v + 6))  # the same scene a little brighter: flicker
    cut = Image.new("RGB", (48, 36), (250, 250, 250))
    cut.paste((10, 10, 200), (0, 0, 24, 36))
    frames = []
    for picture in (base, shaken, cut):
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        frames.append(buffer.getvalue())
    with client.websocket_connect(WS) as ws:
        assert reply(ws, "ready")["settings"]["smooth"] == live.DEFAULT_SMOOTH > 0
        ws.send_text(json.dumps({**SETTINGS, "format": "png", "smooth": 30}))
        reply(ws, "settings")
        got = [roundtrip(ws, frame) for frame in frames]
    own = [api_picture(client, frame) for frame in frames]
    assert got[0] == own[0]  # the first frame has no past
    assert pixels(got[1]) != pixels(own[1])  # steadied towards the first
    assert got[2] == own[2]  # a cut: its own statistics again
    with client.websocket_connect(WS) as ws:  # a change of size starts afresh too
        started(ws, format="png", smooth=30)
        roundtrip(ws, frames[0])
        ws.send_text(json.dumps({"type": "settings", "content_size": 36}))
        reply(ws, "settings")
        assert roundtrip(ws, frames[1]) == api_picture(client, frames[1], content_size="36")


def test_a_painting_of_ones_own_is_sent_once_and_used_by_name(client):
    import base64

    painting = io.BytesIO()
    synthetic_image(40, 40, seed=9).save(painting, "PNG")
    data = base64.b64encode(painting.getvalue()).decode()
    with client.websocket_connect(WS) as ws:
        started(ws, format="png", smooth=0)
        ws.send_text(json.dumps({"type": "style", "name": "mine.png", "data": data}))
        assert reply(ws, "style") == {"type": "style", "name": "mine.png", "width": 40, "height": 40}
        ws.send_text(json.dumps({"type": "settings", "style_name": ["mine.png", "one.png"], "weights": [3, 1]}))
        assert reply(ws, "settings")["weights"] == [3, 1]
        mixed = roundtrip(ws, jpeg(5))
    expected = client.post("/v1/stylize", files=[("content", ("f.jpg", jpeg(5))),
                                                 ("style", ("mine.png", painting.getvalue()))],
                           data={"style_name": "one.png", "weights": "3,1", "content_size": "32", "format": "png"})
    assert mixed == expected.content


@pytest.mark.parametrize(("send", "status", "says"), [
    (lambda ws: ws.send_text("{not json"), 400, "must be JSON"),
    (lambda ws: ws.send_text('["settings"]'), 400, "unknown message type"),
    (lambda ws: ws.send_text('{"type": "settings", "alpha": 2}'), 400, "alpha must be between 0 and 1"),
    (lambda ws: ws.send_text('{"type": "settings", "alpha": "1"}'), 400, "alpha must be a number"),
    (lambda ws: ws.send_text('{"type": "settings", "work_size": 64}'), 400, "work-size"),
    (lambda ws: ws.send_text('{"type": "settings", "colour": "x"}'), 400, "unknown settings field 'colour'"),
    (lambda ws: ws.send_text('{"type": "settings", "style_name": ["nope.png"]}'), 400, "not in the styles folder"),
    (lambda ws: ws.send_text('{"type": "settings", "preserve_color": true, "luminance_only": true}'), 400,
     "not both"),
    (lambda ws: ws.send_text('{"type": "style", "name": "x", "data": "%%%"}'), 400, "x: data is not base64"),
    (lambda ws: ws.send_text('{"type": "style", "name": "x", "data": "aGVsbG8="}'), 415, "x: not an image"),
    (lambda ws: ws.send_bytes(b"\xff\xd8 a broken camera frame"), 415, "frame 1: not an image"),
    (lambda ws: ws.send_bytes(bytes(3000)), 413, "frame 1: 3,000 bytes, over the limit of 2,000"),
    (lambda ws: ws.send_text('{"type": "stats", "id": [' + "{}," * 30000 + "{}]}"), 413, "must be a style message"),
    (lambda ws: ws.send_text("[" * 50000), 400, "must be JSON"),
])
def test_a_bad_message_or_frame_gets_an_error_and_the_next_frame_is_served(make_client, send, status, says):
    client = make_client(live=live.StreamLimits(max_frame=2000))
    with client.websocket_connect(WS) as ws:
        before = started(ws)
        send(ws)
        error = reply(ws, "error")
        assert error["status"] == status and says in error["error"], error
        assert Image.open(io.BytesIO(roundtrip(ws, jpeg(6, (24, 20))))).size == images.resized_size(24, 20, 32)
        ws.send_text('{"type": "settings"}')
        assert reply(ws, "settings") == before  # a refused change changed nothing


def test_a_frame_over_the_pixel_limit_is_413_before_decoding_and_the_next_is_served(make_client):
    client = make_client(limits=serve.Limits(max_pixels=1300))  # the painting is 36x36
    with client.websocket_connect(WS) as ws:
        started(ws, content_size=0, style_size=0)
        ws.send_bytes(jpeg(1, (48, 36)))  # 1,728 pixels
        error = reply(ws, "error")
        assert error["status"] == 413 and error["frame"] == 1 and "1,300" in error["error"], error
        assert Image.open(io.BytesIO(roundtrip(ws, jpeg(2, (30, 30))))).size == (30, 30)


def test_frames_before_any_painting_is_chosen_are_refused_with_a_reason_but_not_closed(client):
    with client.websocket_connect(WS) as ws:
        reply(ws, "ready")
        for _ in range(live.ERRORS_IN_A_ROW + 5):  # a slip, not a broken protocol: the stream stays
            ws.send_bytes(jpeg(1))
        error = reply(ws, "error")
        assert error == {"type": "error", "status": 400, "frame": 1,
                         "error": "choose a painting first: send settings with style_name"}
        assert stats(ws)["failed"] == live.ERRORS_IN_A_ROW + 5 - stats(ws)["limited"]


def test_an_answer_carries_its_messages_id_when_it_is_short(client):
    with client.websocket_connect(WS) as ws:
        reply(ws, "ready")
        ws.send_text(json.dumps({"type": "settings", "alpha": 0.5, "id": 7}))
        assert reply(ws, "settings")["id"] == 7
        ws.send_text(json.dumps({"type": "stats", "id": "x" * 65}))  # too long to echo: answered without
        assert "id" not in reply(ws, "stats")
        ws.send_text(json.dumps({"type": "nonsense", "id": "q"}))
        assert reply(ws, "error")["id"] == "q"


def test_text_messages_and_paintings_have_a_rate_limit_of_their_own(client):
    import base64

    painting = io.BytesIO()
    synthetic_image(20, 20, seed=9).save(painting, "PNG")
    data = base64.b64encode(painting.getvalue()).decode()
    with client.websocket_connect(WS) as ws:
        reply(ws, "ready")
        for k in range(serve.MAX_STYLES + 1):  # a burst of a set of paintings passes, not more
            ws.send_text(json.dumps({"type": "style", "name": f"p{k}.png", "data": data}))
        answers = [json.loads(ws.receive_text()) for _ in range(serve.MAX_STYLES + 1)]
        assert [a["type"] for a in answers[:-1]] == ["style"] * serve.MAX_STYLES
        assert answers[-1]["status"] == 429 and "too many paintings" in answers[-1]["error"]
        for _ in range(int(2 * live.TEXT_RATE)):
            ws.send_text('{"type": "stats"}')
        kinds = [json.loads(ws.receive_text()) for _ in range(int(2 * live.TEXT_RATE))]
    assert any(k.get("status") == 429 and "too many messages" in k["error"] for k in kinds)


def test_frames_are_also_limited_in_pixels_a_second(make_client):
    """A small PNG can decode to many pixels: a stream's decoding is bounded in pixels a second
    (at --max-fps 1: a 720p camera's pixels, in bursts of two frames' worth)."""
    client = make_client(live=live.StreamLimits(max_fps=1))
    big = io.BytesIO()
    Image.new("RGB", (2000, 1000), (90, 120, 150)).save(big, "PNG")  # 2 Mpx in a few kB
    with client.websocket_connect(WS) as ws:
        started(ws)
        ws.send_bytes(big.getvalue())  # a burst's worth: passes a full bucket
        ws.send_bytes(jpeg(2))  # tiny, but the pixels of the last second are spent
        counts = stats(ws)
    assert (counts["frames_in"], counts["limited"]) == (2, 1)


def test_a_client_that_keeps_breaking_the_protocol_is_closed_1008(client):
    with client.websocket_connect(WS) as ws:
        reply(ws, "ready")
        for _ in range(live.ERRORS_IN_A_ROW):
            ws.send_text("nonsense")
        errors = [reply(ws, "error") for _ in range(live.ERRORS_IN_A_ROW)]
        assert len(errors) == live.ERRORS_IN_A_ROW
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1008


# --- the guards ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "url", "headers", "refused"), [
    ({"token": "s3cret"}, WS, {}, 401),
    ({"token": "s3cret"}, WS + "?token=wrong", {}, 401),
    ({"token": "s3cret"}, WS + "?token=s3cret", {}, None),
    ({"token": "s3cret"}, WS, {"authorization": "Bearer s3cret"}, None),
    ({}, WS, {"host": "rebound.example:8000"}, 421),
    ({}, WS, {"origin": "http://evil.example"}, 403),
    ({}, WS, {"origin": "http://127.0.0.1:8000.evil.example"}, 403),
    ({}, WS, {"origin": LOCAL}, None),
    ({"allow_origins": ("https://app.example",)}, WS, {"origin": "https://app.example"}, None),
])
def test_token_host_and_origin_are_checked_at_the_handshake(make_client, options, url, headers, refused):
    """Refused before the WebSocket opens, with the API's JSON error as the handshake's answer."""
    client = make_client(**options)
    if refused:
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect(url, headers=headers):
            pass
        assert denied.value.status_code == refused and denied.value.json()["status"] == refused
    else:
        with client.websocket_connect(url, headers=headers) as ws:
            assert reply(ws, "ready")["limits"]["max_styles"] == serve.MAX_STYLES


def test_streams_beyond_max_streams_are_refused_503_at_the_handshake(make_client):
    client = make_client(live=live.StreamLimits(max_streams=1))
    with client.websocket_connect(WS) as first:
        reply(first, "ready")
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect(WS):
            pass
        assert denied.value.status_code == 503 and "--max-streams" in denied.value.json()["error"]
        assert denied.value.headers["retry-after"] == "5"
    with client.websocket_connect(WS) as again:  # the first has gone: room again
        reply(again, "ready")


def test_an_idle_stream_is_closed(make_client):
    client = make_client(live=live.StreamLimits(idle=0.3))
    with client.websocket_connect(WS) as ws:
        reply(ws, "ready")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1000 and "idle" in closed.value.reason


def test_frames_over_the_rate_limit_are_counted_and_left(make_client):
    client = make_client(live=live.StreamLimits(max_fps=1))  # a burst of two, then one a second
    with client.websocket_connect(WS) as ws:
        started(ws)
        for seed in range(6):
            ws.send_bytes(jpeg(seed))
        counts = stats(ws)
        assert counts["frames_in"] == 6 and counts["limited"] >= 3
        answered = [answer(ws) for _ in range(6 - counts["limited"] - counts["dropped"] - counts["frames_out"])]
        counts = stats(ws)
    assert counts["frames_out"] + counts["limited"] + counts["dropped"] == 6 and answered is not None


# --- real time: newest frame wins, streams in turns -----------------------------------------------------


def test_newest_frame_wins_at_most_one_waits_and_the_dropped_count_is_honest(make_client, stylizer):
    held, release = hold_rendering(stylizer)
    client = make_client(engine_stylizer=held, live=live.StreamLimits(max_fps=1000))  # no frame over the rate
    frames = [jpeg(seed) for seed in range(12)]
    with client.websocket_connect(WS) as ws:
        started(ws, format="png", smooth=0)
        for frame in frames:  # far faster than the model: the first is in work, held
            ws.send_bytes(frame)
        counts = stats(ws)
        assert (counts["frames_in"], counts["dropped"], counts["limited"]) == (12, 10, 0)  # 2-11 each replaced
        release.set()
        got = [answer(ws), answer(ws)]
        counts = stats(ws)
    assert (counts["frames_out"], counts["dropped"], counts["failed"]) == (2, 10, 0)
    assert got == [api_picture(client, frames[0]), api_picture(client, frames[-1])]  # the first, then the newest


def test_three_streams_take_turns_so_a_fast_one_starves_none(make_client, stylizer):
    held, release = hold_rendering(stylizer)
    client = make_client(engine_stylizer=held)
    engine = client.engine
    served: list[bytes] = []
    done = engine.done
    engine.done = lambda job, result: (served.append(job.work.request.content.data), done(job, result))[1]
    with client.websocket_connect(WS) as a, client.websocket_connect(WS) as b, client.websocket_connect(WS) as c:
        for ws in (a, b, c):
            started(ws)
        a.send_bytes(jpeg(1))
        assert stats(a)["frames_in"] == 1
        time.sleep(0.2)  # a's frame is in work (held); b and c each have one waiting, a floods
        b.send_bytes(jpeg(2))
        c.send_bytes(jpeg(3))
        for seed in range(4, 10):
            a.send_bytes(jpeg(seed))
        for ws in (a, b, c):
            stats(ws)
        release.set()
        for ws in (a, b, c):
            answer(ws)
        answer(a)
    assert served == [jpeg(1), jpeg(2), jpeg(3), jpeg(9)]


def test_frames_of_one_size_from_several_streams_are_stylized_in_one_call(make_client, stylizer):
    from adain_cli import Stylizer
    from adain_cli.execution import Execution

    batched = Stylizer(stylizer.encoder, stylizer.decoder, execution=Execution.resolve("cpu", batch_size=3))
    held, release = hold_rendering(batched)
    calls: list[int] = []
    render = held.render_batch
    held.render_batch = lambda contents, *rest, **options: (calls.append(len(contents)),  # type: ignore[method-assign]
                                                            render(contents, *rest, **options))[1]
    client = make_client(engine_stylizer=held)
    with client.websocket_connect(WS) as a, client.websocket_connect(WS) as b, client.websocket_connect(WS) as c:
        for ws in (a, b, c):
            started(ws)
        a.send_bytes(jpeg(1))
        stats(a)
        time.sleep(0.2)  # a's first frame is in work, held; then one frame waits in each lane
        for ws, seed in ((a, 2), (b, 3), (c, 4)):
            ws.send_bytes(jpeg(seed))
            stats(ws)
        release.set()
        for ws in (a, a, b, c):
            answer(ws)
    assert calls == [1, 3]


def test_info_says_how_many_live_streams_there_are(client):
    with client.websocket_connect(WS) as ws:
        reply(ws, "ready")
        info = client.get("/v1/info").json()["live"]
    assert info == {"streams": 1, "max_streams": live.DEFAULT_MAX_STREAMS, "max_fps": live.DEFAULT_MAX_FPS,
                    "max_frame_bytes": live.DEFAULT_MAX_FRAME, "idle_seconds": live.DEFAULT_IDLE}
    assert client.get("/v1/info").json()["live"]["streams"] == 0


def test_turns_give_each_lane_one_item_in_turn_and_a_stream_lane_holds_only_the_newest():
    turns: Turns[str] = Turns(limit=3)
    a, b = turns.open_lane(), turns.open_lane()
    for request in ("r1", "r2", "r3"):
        turns.put_nowait(request)
    with pytest.raises(queue.Full):
        turns.put_nowait("r4")
    assert turns.offer(a, "a1") is None and turns.offer(a, "a2") == "a1"  # replaced: the caller drops it
    assert turns.offer(b, "b1") is None
    assert turns.qsize() == 3
    assert [turns.get() for _ in range(5)] == ["r1", "a2", "b1", "r2", "r3"]
    with pytest.raises(queue.Empty):
        turns.get_nowait()
    turns.offer(b, "b2")
    turns.offer(a, "a3")
    assert [turns.get_nowait(), turns.get_nowait()] == ["a3", "b2"]  # after b1 came a's turn
    turns.offer(a, "a4")
    assert turns.close_lane(a) == "a4" and turns.offer(a, "a5") == "a5"  # a closed lane takes nothing


def test_after_end_waiting_requests_are_given_out_then_none_and_stream_frames_are_returned():
    turns: Turns[str] = Turns(limit=4)
    lane = turns.open_lane()
    turns.put_nowait("r1")
    turns.offer(lane, "a1")
    assert turns.end() == ["a1"]
    assert turns.offer(lane, "a2") == "a2"
    assert [turns.get(), turns.get(), turns.get_nowait()] == ["r1", None, None]


def test_a_waiting_get_wakes_for_a_frame_offered_from_another_thread():
    turns: Turns[str] = Turns(limit=1)
    lane = turns.open_lane()
    threading.Timer(0.05, turns.offer, (lane, "a1")).start()
    assert turns.get(timeout=5) == "a1"


# --- over a real socket: uvicorn's WebSocket, bounded ----------------------------------------------------


@pytest.fixture
def start_server(library):
    """The app under uvicorn (web.serve_forever's WebSocket settings) on a free port, in a thread:
    start(stylizer) gives its /v1/live URL and its engine."""
    import uvicorn

    running = []

    def start(stylizer) -> tuple[str, serve.Engine]:
        engine = serve.Engine(stylizer)
        options = web.Options(live=live.StreamLimits(max_frame=50_000))
        config = uvicorn.Config(web.create_app(engine, library, options), log_level="warning",
                                ws=web._stream_protocol(stuck_after=1.0), ws_max_size=options.live.max_message,
                                ws_per_message_deflate=False)
        server = uvicorn.Server(config)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        running.append((server, thread, engine))
        while not server.started:
            time.sleep(0.01)
        return f"ws://127.0.0.1:{listener.getsockname()[1]}/v1/live", engine

    yield start
    for server, thread, engine in running:
        server.should_exit = True
        thread.join(30)
        engine.close()


@pytest.fixture
def real_server(start_server, stylizer) -> str:
    return start_server(stylizer)[0]


def test_a_client_gone_while_its_frame_is_in_work_leaves_no_memory_held(start_server, stylizer):
    from websockets.sync.client import connect

    held, release = hold_rendering(stylizer)
    url, engine = start_server(held)
    with connect(url) as ws:
        ws.recv()
        ws.send(json.dumps({**SETTINGS, "format": "png"}))
        ws.recv()
        ws.send(jpeg(1))
        deadline = time.monotonic() + 30
        while not engine._begun and time.monotonic() < deadline:  # in work, held
            time.sleep(0.01)
    release.set()  # the frame finishes after its client has gone
    while engine.budget.held and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.budget.held == 0 and engine.served == 1


def test_a_large_style_message_is_parsed_without_its_data_and_names_may_hold_brackets(client):
    import base64

    painting = io.BytesIO()
    Image.effect_noise((200, 200), 90).convert("RGB").save(painting, "PNG")  # noise: over 64 KB as base64
    data = base64.b64encode(painting.getvalue()).decode()
    assert len(data) > live.SMALL_TEXT
    with client.websocket_connect(WS) as ws:
        reply(ws, "ready")
        ws.send_text(json.dumps({"type": "style", "name": "photo [1] {copy}.png", "data": data, "id": 3}))
        assert reply(ws, "style") == {"type": "style", "name": "photo [1] {copy}.png", "width": 200, "height": 200,
                                      "id": 3}
        ws.send_text(json.dumps({"type": "settings", "style_name": ["x" * 201]}))
        assert "1 to 200 characters" in reply(ws, "error")["error"]


def test_over_a_real_socket_frames_flow_and_a_message_over_the_transport_bound_closes_1009(real_server):
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
    from websockets.sync.client import connect

    with connect(real_server) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        ws.send(json.dumps(SETTINGS))
        assert json.loads(ws.recv())["type"] == "settings"
        ws.send(bytes(60_000))  # over max_frame, under the transport's bound: an error, and on
        assert json.loads(ws.recv())["status"] == 413
        ws.send(jpeg(1))
        while isinstance(message := ws.recv(), str):
            assert json.loads(message)["type"] == "stats"
        assert Image.open(io.BytesIO(message)).format == "JPEG"
        ws.send(bytes(200_000))  # over the transport's bound: the stream ends
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    with pytest.raises(InvalidHandshake):  # refused before the WebSocket opens
        connect(real_server, additional_headers={"Origin": "http://evil.example"})


def test_a_peer_that_stops_reading_is_cut_off_and_its_stream_given_back(real_server):
    """Pings from a client that reads nothing: each queues a pong, so the server stops reading it,
    and cuts it off once its writes have waited `stuck_after` (1 s here)."""
    import base64
    import urllib.request

    port = int(real_server.split(":")[2].split("/")[0])
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.connect(("127.0.0.1", port))
    key = base64.b64encode(bytes(16)).decode()
    peer.sendall(f"GET /v1/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert b" 101 " in peer.recv(200)
    info = real_server.replace("ws://", "http://").replace("/v1/live", "/v1/info")
    assert json.load(urllib.request.urlopen(info))["live"]["streams"] == 1
    ping = bytes([0x89, 0x80 | 125]) + bytes(4) + bytes(125)  # masked with a zero key
    peer.setblocking(False)
    deadline, cut = time.monotonic() + 30, False
    while time.monotonic() < deadline and not cut:
        try:
            peer.send(ping * 64)
        except BlockingIOError:  # the server has stopped reading us
            time.sleep(0.05)
        except OSError:  # reset: cut off
            cut = True
    peer.close()
    assert cut
    while json.load(urllib.request.urlopen(info))["live"]["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.load(urllib.request.urlopen(info))["live"]["streams"] == 0
