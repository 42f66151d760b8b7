"""Frames in pieces: what crosses Modal's generator as bounded messages is rebuilt exactly, writable."""

from __future__ import annotations

import numpy as np
import pytest

from modal_magic.wire import frames


@pytest.mark.parametrize("sizes, piece", [((10, 0, 7, 33), 8), ((0,), 8), ((), 8), ((64,), 64), ((5, 5), 1000)])
def test_a_frame_in_pieces_is_rebuilt_exactly_into_writable_memory(sizes, piece) -> None:
    rng = np.random.default_rng(0)
    buffers = [rng.integers(0, 255, size, dtype=np.uint8) for size in sizes]
    messages = list(frames.encode_pieces({"kind": "result", "n": 1}, buffers, piece=piece))
    head, _ = frames.decode(messages[0])
    rebuilt = frames.Pieces(head)
    for message in messages[1:]:
        meta, slices = frames.decode(message)
        assert meta["kind"] == "piece" and sum(s.nbytes for s in slices) <= piece  # bounded
        rebuilt.add(slices)
    assert rebuilt.complete and rebuilt.meta == {"kind": "result", "n": 1}
    assert len(messages) - 1 == -(-sum(sizes) // piece)  # as few pieces as the bound allows
    for original, copy in zip(buffers, rebuilt.buffers, strict=True):
        assert bytes(copy) == original.tobytes() and not memoryview(copy).readonly


def test_more_bytes_than_announced_is_refused() -> None:
    head, _ = frames.decode(next(frames.encode_pieces({"kind": "result"}, [b"abc"])))
    rebuilt = frames.Pieces(head)
    with pytest.raises(ValueError, match="more bytes"):
        rebuilt.add([b"abcd"])


def test_the_workers_frames_go_out_whole_even_when_an_interrupt_lands_mid_frame() -> None:
    """SIGINT while a 50 MB frame waits on a full socket: the frame is finished, then the interrupt raised, so
    the notebook never reads half a frame followed by the next one (``worker/serve.py``'s ``Channel``)."""
    import os
    import signal
    import socket
    import threading
    import time

    from modal_magic.worker.serve import Channel

    ours, theirs = socket.socketpair()
    received: list[dict] = []

    def read() -> None:
        time.sleep(0.5)  # the interrupt comes while the sender waits for room
        received.extend(frames.recv(theirs)[0] for _ in range(2))

    reader = threading.Thread(target=read)
    reader.start()
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    channel = Channel(ours)
    try:
        with pytest.raises(KeyboardInterrupt):
            channel.send({"kind": "stream", "text": "y" * 50_000_000})
        channel.send({"kind": "after"})
    finally:
        reader.join(30)
        ours.close()
        theirs.close()
    assert [meta["kind"] for meta in received] == ["stream", "after"]
    assert received[0]["text"] == "y" * 50_000_000
