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
