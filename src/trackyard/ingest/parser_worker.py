"""A parser process (see parsers.py): `python -m trackyard.ingest.parser_worker FD`.

Reads request frames from the socket FD, answers each in order, and exits when the serving
process closes its end (or dies: the kernel closes it then).
"""

from __future__ import annotations

import signal
import socket
import sys

import orjson

from trackyard.ingest.children import read_frame, tune_garbage_collector
from trackyard.ingest.parsers import answer, shape_of


def serve(sock: socket.socket) -> None:
    with sock, sock.makefile("rb") as frames:
        while (request := read_frame(frames)) is not None:
            meta, body = request
            sock.sendall(answer(body, shape_of(orjson.loads(meta))))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops serve, which closes the socket
    tune_garbage_collector()
    serve(socket.socket(fileno=int(sys.argv[1])))
