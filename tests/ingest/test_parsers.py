"""Parser processes (ingest/parsers.py): batch bodies parsed in a child answer exactly as
parsing in place does, a parser that dies costs no request, and `serve` runs them as its
children."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.test_background import children, wait_gone
from trackyard.ingest import parsers
from trackyard.ingest.parse import Parsed, RequestError, RequestShape, parse_request
from trackyard.ingest.parsers import OFFLOAD_MIN_BYTES, ParserPool

SHAPE = RequestShape(
    batch=True, implied_type=None, client=False, received_ms=1_764_324_000_000, client_ip="::1"
)
CLIENT = RequestShape(
    batch=True, implied_type=None, client=True, received_ms=1_764_324_000_000, client_ip="::1"
)


def track(number: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{number}",
        "messageId": f"m-{number}",
        "timestamp": "2026-11-28T10:00:00.123Z",
        "properties": {"revenue": 12.5, "products": [{"sku": "a", "price": 1}], "note": "é ✓ 😀"},
        "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
        **fields,
    }


# nested deeper than orjson serialises (~254 levels), so written by hand
DEEP = b'{"type":"track","event":"e","userId":"u","messageId":"deep","properties":{"d":%s1%s}}' % (
    b"[" * 300,
    b"]" * 300,
)


def body_of(batch: list[Any], **envelope: Any) -> bytes:
    """A batch body big enough to be sent to a parser process; bytes items go in as they are."""
    padded = [*batch, *(track(10_000 + n) for n in range(40))]
    items = b",".join(item if isinstance(item, bytes) else orjson.dumps(item) for item in padded)
    rest = orjson.dumps({"sentAt": "2026-11-28T10:00:01.000Z", **envelope})
    body = b'{"batch":[' + items + b"]," + rest[1:]
    assert len(body) >= OFFLOAD_MIN_BYTES
    return body


BODIES = {
    "valid": body_of([track(n) for n in range(100)]),
    "invalid neighbours": body_of(
        [
            track(1),
            {"type": "track", "userId": "u", "messageId": "no-event"},
            {"type": "identify", "messageId": "nobody"},
            {"type": "group", "userId": "u", "messageId": "no-group"},
            "not an object",
            track(2, userId=42, anonymousId=7.0),
            track(3, messageId=12345),
            track(4, timestamp="yesterday"),
            track(5, properties=[1, 2]),
            track(6, properties={"pad": "x" * 40_000}),
            DEEP,
        ]
    ),
    "envelope context and key": body_of(
        [track(n) for n in range(5)],
        context={"locale": "nl-NL"},
        integrations={"All": False},
        writeKey="wk-1",
    ),
    "key in the first item": body_of([track(1, writeKey="wk-2"), track(2)]),
    "batch not a list": orjson.dumps({"batch": {"no": 1}, "pad": "x" * OFFLOAD_MIN_BYTES}),
    "context not an object": orjson.dumps(
        {"batch": [track(1)], "context": 5, "pad": "x" * OFFLOAD_MIN_BYTES}
    ),
    "too many events": orjson.dumps({"batch": [{"type": "track"}] * 2501}),
}
BAD_BODIES = {
    "malformed": b'{"batch": [' + b"1," * OFFLOAD_MIN_BYTES + b"]",
    "not an object": orjson.dumps([track(n) for n in range(100)]),
    "invalid utf-8": b'{"batch": [{"type": "track", "event": "\xff"}], "pad": "'
    + b"x" * OFFLOAD_MIN_BYTES
    + b'"}',
}


def as_comparable(parsed: Parsed) -> tuple[Any, ...]:
    error = parsed.error
    return (
        parsed.write_key,
        parsed.events,
        parsed.failures,
        None if error is None else (error.status, error.code, error.message),
    )


def raise_in_place(body: bytes, shape: RequestShape) -> Parsed:
    raise AssertionError("parsed in the serving process: the parser was not used")


async def started_pool(size: int) -> ParserPool:
    pool = ParserPool(size)
    await pool.start()
    deadline = time.monotonic() + 20
    while len(pool.pids) < size:
        assert time.monotonic() < deadline, "parsers did not start"
        await asyncio.sleep(0.05)
    return pool


async def replaced(pool: ParserPool, old: int) -> None:
    """Wait until another parser runs in `old`'s place."""
    deadline = time.monotonic() + 20
    while pool.pids in ([], [old]):
        assert time.monotonic() < deadline, f"no parser was started in place of {old}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("shape", [SHAPE, CLIENT], ids=["server", "client"])
def test_a_parser_answers_as_parsing_in_place(monkeypatch: pytest.MonkeyPatch, shape: RequestShape) -> None:
    expected = {name: as_comparable(parse_request(body, shape)) for name, body in BODIES.items()}
    assert expected["valid"][1] and expected["invalid neighbours"][2]  # events and failures both exercised
    errors = {}
    for name, body in BAD_BODIES.items():
        with pytest.raises(RequestError) as caught:
            parse_request(body, shape)
        errors[name] = (caught.value.status, caught.value.code, caught.value.message)
    monkeypatch.setattr(parsers, "parse_request", raise_in_place)

    async def through_a_parser() -> None:
        pool = await started_pool(1)
        try:
            answers = await asyncio.gather(*(pool.parse(body, shape) for body in BODIES.values()))
            assert {name: as_comparable(a) for name, a in zip(BODIES, answers, strict=True)} == expected
            for name, body in BAD_BODIES.items():
                with pytest.raises(RequestError) as caught:
                    await pool.parse(body, shape)
                assert (caught.value.status, caught.value.code, caught.value.message) == errors[name], name
        finally:
            await pool.stop()

    asyncio.run(through_a_parser())


def test_a_parser_that_dies_costs_no_request() -> None:
    body = BODIES["valid"]
    expected = as_comparable(parse_request(body, SHAPE))

    async def kill_while_busy() -> None:
        pool = await started_pool(1)
        try:
            [first] = pool.pids
            requests = [asyncio.ensure_future(pool.parse(body, SHAPE)) for _ in range(30)]
            await asyncio.sleep(0)  # the frames are on their way
            os.kill(first, signal.SIGKILL)
            answers = await asyncio.gather(*requests)
            assert all(as_comparable(answer) == expected for answer in answers)
            await replaced(pool, first)
            assert as_comparable(await pool.parse(body, SHAPE)) == expected
        finally:
            await pool.stop()
        assert pool.pids == []

    asyncio.run(kill_while_busy())


def test_a_stuck_parser_is_replaced_and_its_requests_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsers, "ANSWER_TIMEOUT_S", 0.5)
    body = BODIES["valid"]
    expected = as_comparable(parse_request(body, SHAPE))

    async def stop_it() -> None:
        pool = await started_pool(1)
        try:
            [stuck] = pool.pids
            os.kill(stuck, signal.SIGSTOP)
            answers = await asyncio.gather(*(pool.parse(body, SHAPE) for _ in range(3)))
            assert all(as_comparable(answer) == expected for answer in answers)
            await replaced(pool, stuck)
            assert (
                not Path(f"/proc/{stuck}").exists()
                or "Z" in Path(f"/proc/{stuck}/stat").read_text().split()[2]
            )
        finally:
            await pool.stop()

    asyncio.run(stop_it())


def parser_children(pid: int) -> list[int]:
    return [
        child
        for child in children(pid)
        if b"trackyard.ingest.parser_worker" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def test_serve_parses_batches_in_its_parser_processes_which_go_with_it(make_server) -> None:
    server = make_server(TRACKYARD_INGEST_PARSERS="2").start()
    deadline = time.monotonic() + 20
    while len(found := parser_children(server.process.pid)) < 2:
        assert time.monotonic() < deadline, "serve did not start two parsers"
        time.sleep(0.1)
    batch = [track(n, messageId=f"serve-{n}") for n in range(200)]
    response = httpx.post(
        f"{server.url}/v1/batch", json={"batch": batch}, auth=(server.write_key, ""), timeout=15
    )
    assert response.status_code == 200 and response.json() == {"success": True}
    stored = server.events()
    assert [event["messageId"] for event in stored] == [event["messageId"] for event in batch]
    assert stored[0]["properties"] == batch[0]["properties"] and stored[0]["receivedAt"]
    server.kill()  # SIGKILL: the parsers see their socket close and exit
    for pid in found:
        wait_gone(pid)
