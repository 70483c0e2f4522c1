"""A parser process (see parsers.py): `python -m trackyard.ingest.parser_worker FD`.

Reads request frames from the socket FD, answers each in order, and exits when the serving
process closes its end (or dies: the kernel closes it then).
"""

from __future__ import annotations

import signal
import socket
import sys

import orjson

from trackyard.ingest.parsers import FRAME_HEAD, answer, shape_of, tune_garbage_collector


def serve(sock: socket.socket) -> None:
    with sock, sock.makefile("rb") as frames:
        while head := frames.read(FRAME_HEAD.size):
            if len(head) < FRAME_HEAD.size:
                return
            meta_size, body_size = FRAME_HEAD.unpack(head)
            header = orjson.loads(frames.read(meta_size))
            body = frames.read(body_size)
            sock.sendall(answer(body, shape_of(header)))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops serve, which closes the socket
    tune_garbage_collector()
    serve(socket.socket(fileno=int(sys.argv[1])))
