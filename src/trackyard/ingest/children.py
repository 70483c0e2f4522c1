"""What serve's ingest child processes (parsers, the writer) share: frames, sockets, GC.

Frames, both ways: two little-endian u32 lengths, then a JSON header and a payload. Kept
apart from the parsers and the writer so that each child imports only what it runs.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import sys
from typing import BinaryIO

import orjson

FRAME_HEAD = struct.Struct("<II")
SOCKET_BUFFER_BYTES = 1 << 20


def frame(header: object, payload: bytes) -> bytes:
    meta = orjson.dumps(header)
    return FRAME_HEAD.pack(len(meta), len(payload)) + meta + payload


def read_frame(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    """The next (header, payload) from a blocking stream; None at its end (or a cut frame)."""
    head = stream.read(FRAME_HEAD.size)
    if len(head) < FRAME_HEAD.size:
        return None
    meta_size, payload_size = FRAME_HEAD.unpack(head)
    meta = stream.read(meta_size)
    payload = stream.read(payload_size)
    if len(meta) < meta_size or len(payload) < payload_size:
        return None
    return meta, payload


async def read_frame_async(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The next (header, payload); raises asyncio.IncompleteReadError at the end."""
    meta_size, payload_size = FRAME_HEAD.unpack(await reader.readexactly(FRAME_HEAD.size))
    meta = await reader.readexactly(meta_size)
    return meta, await reader.readexactly(payload_size)


async def start_child(
    module: str, *arguments: str
) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader, asyncio.StreamWriter]:
    """`python -m MODULE FD ARGUMENTS…`, FD its end of a socket pair; ours as streams."""
    mine, theirs = socket_pair()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, str(theirs.fileno()), *arguments, pass_fds=(theirs.fileno(),)
        )
    except OSError:
        mine.close()
        raise
    finally:
        theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=mine)
    return process, reader, writer


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair with 1 MB buffers: frames of a 500 KB batch go in one write."""
    pair = socket.socketpair()
    for end in pair:
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    return pair


def tune_garbage_collector() -> None:
    """Events are dicts without reference cycles, freed by reference counting; with the default
    thresholds the cyclic collector ran every 700 allocations and took ~24% of the ingest
    loop's CPU (py-spy, bench/ingest.py). Long-lived start-up objects are frozen out of it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)
