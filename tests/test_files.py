"""Memmaps and open files cross as what they are (``wire.files``): at the wire, and through the real magic."""

from __future__ import annotations

import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from modal_magic import wire
from modal_magic.notebook import magic
from modal_magic.wire.updates import updatable, update_in_place

from .conftest import run

SHARED = wire.Disks(True, sender="the worker", receiver="the notebook")
"""The local backend: the other side sees this disk."""
OTHER_DISK = wire.Disks(False, sender="the worker", receiver="the notebook")
"""A Modal container: the other side has a disk of its own."""


def across(variables: dict, disks: wire.Disks, *, lenient: bool = False) -> tuple[dict, wire.Payload]:
    """pack → the buffers copied into fresh memory (what a socket does) → unpack."""
    payload = wire.pack(variables, disks=disks, lenient=lenient)
    payload.buffers = [bytearray(b) for b in payload.buffers]
    return wire.unpack(payload), payload


def lines_file(tmp_path: Path, count: int = 5) -> Path:
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"line {i}\n" for i in range(count)))
    return path


# ------------------------------------------------------------------ memmaps at the wire
@pytest.mark.parametrize("order", ["C", "F"])
def test_memmap_travels_as_a_memmap_of_its_file_where_the_disk_is_shared(tmp_path: Path, order: str) -> None:
    path = tmp_path / "data.f32"
    path.write_bytes(b"\xff" * 16)  # a header the memmap starts after
    mm = np.memmap(path, dtype="float32", mode="w+", offset=16, shape=(4, 6), order=order)
    mm[:] = np.arange(24, dtype="float32").reshape(4, 6)
    got, payload = across({"mm": mm, "corner": mm[1:3, 2:5], "column": mm[:, 1]}, SHARED)
    assert payload.nbytes < 2000  # the file's place went, not its bytes
    back = got["mm"]
    assert type(back) is np.memmap and back.filename == mm.filename == path and back.offset == 16
    assert back.mode == "r+"  # 'w+' would have truncated the file
    assert back.shape == (4, 6) and back.dtype == np.float32 and back.strides == mm.strides
    np.testing.assert_array_equal(back, mm)
    assert path.stat().st_size == 16 + 24 * 4
    got["corner"][0, 0] = -1.0  # the views are over the one mapping
    assert back[1, 2] == -1.0 and np.shares_memory(got["column"], back)
    back.flush()
    on_disk = np.fromfile(path, dtype="float32", offset=16).reshape((4, 6), order=order)
    assert on_disk[1, 2] == -1.0
    assert got["corner"].filename == path


def test_a_read_only_memmap_arrives_read_only(tmp_path: Path) -> None:
    path = tmp_path / "data.u8"
    path.write_bytes(bytes(range(10)))
    got, _ = across({"mm": np.memmap(path, dtype="uint8", mode="r")}, SHARED)
    assert got["mm"].mode == "r" and not got["mm"].flags.writeable
    assert list(got["mm"]) == list(range(10))


def test_memmap_travels_as_a_plain_array_with_a_note_where_the_other_side_has_another_disk(tmp_path: Path) -> None:
    path = tmp_path / "data.f32"
    mm = np.memmap(path, dtype="float32", mode="w+", shape=(100,))
    mm[:] = 2.0
    got, payload = across({"mm": mm, "part": mm[10:20]}, OTHER_DISK)
    assert type(got["mm"]) is np.ndarray and type(got["part"]) is np.ndarray
    np.testing.assert_array_equal(got["mm"], mm)
    assert np.shares_memory(got["mm"], got["part"])  # a view sent after its memmap stays a view of it
    assert payload.notes == [
        f"mm: a memmap of {path} travels as a plain in-memory array, not as a memmap of the file: "
        "the notebook cannot see the worker's disk",
        f"part: a memmap of {path} travels as a plain in-memory array, not as a memmap of the file: "
        "the notebook cannot see the worker's disk"]


def test_a_copy_on_write_memmap_travels_as_the_plain_array_it_has_become(tmp_path: Path) -> None:
    path = tmp_path / "data.u8"
    path.write_bytes(bytes(8))
    mm = np.memmap(path, dtype="uint8", mode="c")
    mm[0] = 9  # in memory only: the file keeps its 0
    got, payload = across({"mm": mm}, SHARED)
    assert type(got["mm"]) is np.ndarray and got["mm"][0] == 9
    assert "copy-on-write" in payload.notes[0]


def test_a_memmap_whose_file_is_gone_travels_as_a_plain_array(tmp_path: Path) -> None:
    path = tmp_path / "gone.u8"
    mm = np.memmap(path, dtype="uint8", mode="w+", shape=(8,))
    mm[:] = 4
    path.unlink()
    got, payload = across({"mm": mm}, SHARED)
    assert type(got["mm"]) is np.ndarray and list(got["mm"]) == [4] * 8
    assert payload.notes[0].endswith("its file is gone")


def test_a_memmap_arriving_where_its_path_names_another_file_fails_that_variable(tmp_path: Path) -> None:
    path = tmp_path / "data.u8"
    mm = np.memmap(path, dtype="uint8", mode="w+", shape=(8,))
    payload = wire.pack({"mm": mm}, disks=SHARED)
    path.unlink()  # (the mapping keeps the old file alive, so the new one cannot take its inode)
    path.write_bytes(bytes(8))  # another file at the same path (another disk looks the same)
    with pytest.raises(wire.UnpackError, match=r"variable 'mm' could not be rebuilt here: FileNotFoundError: .*"
                                                r"data.u8 is not on this side's disk as the file that was sent"):
        wire.unpack(payload)


def test_a_memmap_input_sent_as_a_plain_array_takes_its_new_values_into_its_file(tmp_path: Path) -> None:
    """The Modal path, coming back: the cell changed the plain array it got; the notebook's memmap takes the values."""
    path = tmp_path / "data.f32"
    mm = np.memmap(path, dtype="float32", mode="w+", shape=(5,))
    new = np.full(5, 3.0, dtype="float32")
    assert updatable(mm, new)
    update_in_place(mm, new)
    assert mm.filename == path  # still the file's memmap
    mm.flush()
    np.testing.assert_array_equal(np.fromfile(path, dtype="float32"), new)


# ------------------------------------------------------------------ open files at the wire
def test_an_open_text_file_travels_as_a_file_on_its_path_at_its_position(tmp_path: Path) -> None:
    path = lines_file(tmp_path)
    with open(path, encoding="latin-1") as fh:
        fh.readline()
        got, payload = across({"fh": fh}, SHARED)
    back = got["fh"]
    try:
        assert type(back) is io.TextIOWrapper and back.name == str(path) and back.mode == "r"
        assert back.encoding == "latin-1"
        assert back.readline() == "line 1\n"
        with open(path, "a") as more:
            more.write("line 5\n")
        assert back.read().endswith("line 4\nline 5\n")  # the file itself, not a copy of what it held
    finally:
        back.close()


@pytest.mark.parametrize("mode", ["rb", "r+b", "ab"])
def test_an_open_binary_file_travels_as_a_file_of_the_same_type_and_mode(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(100)))
    with open(path, mode) as fh:
        if fh.readable():
            fh.read(30)
        got, _ = across({"fh": fh, "raw": open(path, "rb", buffering=0)}, SHARED)
        position = fh.tell()
    back, raw = got["fh"], got["raw"]
    try:
        assert type(back) is type(fh) and back.mode == fh.mode and back.tell() == position
        assert type(raw) is io.FileIO and raw.tell() == 0
        assert path.stat().st_size == 100
    finally:
        back.close()
        raw.close()


@pytest.mark.parametrize("mode", ["w", "w+", "x", "a"])
def test_a_file_open_for_writing_is_reopened_without_truncating_it(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "out.txt"
    with open(path, mode) as fh:
        fh.write("written there;")  # unflushed until it is sent
        got, _ = across({"fh": fh}, SHARED)
    back = got["fh"]
    assert back.mode == mode
    back.write(" and here")
    back.close()
    assert path.read_text() == "written there; and here"


def test_a_closed_file_arrives_as_a_closed_file_of_that_name(tmp_path: Path) -> None:
    path = lines_file(tmp_path)
    fh = open(path)
    fh.close()
    for disks in (SHARED, OTHER_DISK):
        got, _ = across({"fh": fh}, disks)
        assert type(got["fh"]) is io.TextIOWrapper and got["fh"].closed
        assert got["fh"].name == str(path) and got["fh"].mode == "r"


def test_an_open_file_is_left_out_with_a_sentence_where_the_other_side_has_another_disk(tmp_path: Path) -> None:
    path = lines_file(tmp_path)
    with open(path) as fh:
        got, payload = across({"fh": fh, "fine": 1}, OTHER_DISK, lenient=True)
        assert got == {"fine": 1}
        assert payload.skipped == {"fh": f"it is an open file of {path} on the worker's disk, which the notebook "
                                         "cannot see: it was not read or sent; open the file in the notebook instead"}
        with pytest.raises(wire.PackError) as refused:  # as an input: the cell is refused, in one sentence
            wire.pack({"fh": fh}, disks=wire.Disks(False, sender="the notebook", receiver="the cell"))
    assert str(refused.value) == (f"variable 'fh' cannot be sent: it is an open file of {path} on the notebook's "
                                  "disk, which the cell cannot see: it was not read or sent; open the file in the "
                                  "cell instead.")
    assert isinstance(refused.value, pickle.PicklingError)


@pytest.mark.parametrize("disks", [SHARED, OTHER_DISK], ids=["shared disk", "other disk"])
def test_devices_and_pipes_are_never_read(disks: wire.Disks) -> None:
    read_end, write_end = os.pipe()
    with open("/dev/zero", "rb") as zero, open(read_end, "rb") as pipe, open(write_end, "wb") as sink:
        named = {"zero": open("/dev/zero"), "zero_bytes": zero, "pipe": pipe, "sink": sink}
        got, payload = across({**named, "fine": 1}, disks, lenient=True)
        named["zero"].close()
    assert got == {"fine": 1}
    assert payload.skipped["zero"] == ("it is /dev/zero, a character device rather than a regular file: reading it "
                                       "may never end, so it was not read or sent; open it in the notebook instead")
    assert payload.skipped["pipe"].startswith(f"it is a file open on descriptor {read_end}, a pipe rather than a "
                                              "regular file")
    assert set(payload.skipped) == set(named)


def test_a_file_whose_path_names_another_file_now_is_left_out(tmp_path: Path) -> None:
    path = lines_file(tmp_path)
    with open(path) as fh:
        path.unlink()
        path.write_text("another file\n")
        _, payload = across({"fh": fh}, SHARED, lenient=True)
    assert "a path that no longer names that file" in payload.skipped["fh"]


def test_a_text_file_part_way_through_a_for_loop_is_left_out_saying_why(tmp_path: Path) -> None:
    path = lines_file(tmp_path)
    with open(path) as fh:
        next(fh)  # Python cannot tell the position until the loop ends
        _, payload = across({"fh": fh}, SHARED, lenient=True)
    assert payload.skipped["fh"].startswith(f"it is an open file of {path} whose position cannot be told")


def test_stdout_still_travels_as_the_receivers_own(monkeypatch) -> None:
    with open(os.devnull, "w") as console:  # a real file object, as a terminal's (pytest's capture is none)
        monkeypatch.setattr(sys, "stdout", console)
        got, _ = across({"out": sys.stdout}, SHARED)
        assert got["out"] is sys.stdout


# ------------------------------------------------------------------ through the real magic
def test_memmap_made_remotely_comes_back_as_a_memmap_of_its_file(shell, tmp_path: Path) -> None:
    path = tmp_path / "made.f32"
    shell.user_ns["path"] = str(path)
    result = run(shell, "%%modal_gpu --backend local\nimport numpy as np\n"
                        "mm = np.memmap(path, dtype='float32', mode='w+', shape=(1000,))\nmm[:] = 1.0\n"
                        "part = mm[10:20]")
    assert result.success, result.error_in_exec
    mm, part = shell.user_ns["mm"], shell.user_ns["part"]
    assert type(mm) is np.memmap and mm.filename == str(path) and mm.mode == "r+"
    mm[0] = 7.0
    part[0] = 5.0  # a view of the same mapping here too
    mm.flush()
    on_disk = np.fromfile(path, dtype="float32")
    assert on_disk.shape == (1000,) and on_disk[0] == 7.0 and on_disk[10] == 5.0 and on_disk[999] == 1.0


def test_memmap_input_changed_in_the_cell_changes_its_file_in_place(shell, tmp_path: Path) -> None:
    path = tmp_path / "input.f32"
    mm = np.memmap(path, dtype="float32", mode="w+", shape=(100,))
    shell.user_ns["mm"] = mm
    result = run(shell, "%%modal_gpu --backend local\nmm[:50] = 3.0\nmm.flush()\nthere = mm.filename")
    assert result.success, result.error_in_exec
    assert shell.user_ns["there"] == path  # a memmap of the file in the cell too
    assert shell.user_ns["mm"] is mm and mm.filename == path
    assert mm[0] == 3.0 and mm[99] == 0.0
    np.testing.assert_array_equal(np.fromfile(path, dtype="float32")[:50], 3.0)
    mm[99] = 4.0  # still backed by its file after the cell
    mm.flush()
    assert np.fromfile(path, dtype="float32")[99] == 4.0


def test_open_file_made_in_a_cell_comes_back_at_its_position(shell, tmp_path: Path) -> None:
    path = lines_file(tmp_path)
    shell.user_ns["path"] = str(path)
    result = run(shell, "%%modal_gpu --backend local\nfh = open(path)\nfirst = fh.readline()\n"
                        "out = open(path + '.out', 'w')\nout.write('from the cell;')")
    assert result.success, result.error_in_exec
    fh, out = shell.user_ns["fh"], shell.user_ns["out"]
    try:
        assert type(fh) is io.TextIOWrapper and fh.name == str(path)
        assert shell.user_ns["first"] == "line 0\n" and fh.readline() == "line 1\n"
        with open(path, "a") as more:
            more.write("line 5\n")
        assert fh.read() == "line 2\nline 3\nline 4\nline 5\n"  # the file, read on
        out.write(" here")
        out.close()
        assert Path(f"{path}.out").read_text() == "from the cell; here"
    finally:
        fh.close()


def test_open_file_read_by_a_cell_moves_on_in_the_notebook(shell, tmp_path: Path) -> None:
    path = lines_file(tmp_path)
    fh = open(path)
    shell.user_ns["fh"] = fh
    try:
        assert fh.readline() == "line 0\n"
        result = run(shell, "%%modal_gpu --backend local\nsecond = fh.readline()")
        assert result.success, result.error_in_exec
        assert shell.user_ns["second"] == "line 1\n"
        assert shell.user_ns["fh"] is fh and fh.readline() == "line 2\n"  # as after a local cell
    finally:
        fh.close()


def test_an_open_file_the_cell_closes_is_closed_in_the_notebook(shell, tmp_path: Path) -> None:
    fh = open(lines_file(tmp_path))
    shell.user_ns["fh"] = fh
    result = run(shell, "%%modal_gpu --backend local\nfirst = fh.readline()\nfh.close()")
    assert result.success, result.error_in_exec
    assert shell.user_ns["first"] == "line 0\n" and shell.user_ns["fh"] is fh and fh.closed


def test_a_big_file_opened_in_a_cell_is_not_read_whole(shell, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.txt"
    with open(path, "wb") as big:
        big.truncate(50 << 20)
    shell.user_ns["path"] = str(path)
    events: list[dict] = []
    shown = magic.show_event
    monkeypatch.setattr(magic, "show_event", lambda event: (events.append(event), shown(event)))
    result = run(shell, "%%modal_gpu --backend local\nfh = open(path)")
    assert result.success, result.error_in_exec
    received = [event["bytes"] for event in events if event.get("stage") == "unpack"]
    assert received and received[0] < 64 << 10
    fh = shell.user_ns["fh"]
    assert fh.name == str(path) and fh.tell() == 0
    fh.close()


def test_dev_zero_opened_in_a_cell_is_not_read_and_stays_there_as_a_handle(shell, capsys) -> None:
    result = run(shell, "%%modal_gpu --backend local\nzero = open('/dev/zero')\nfine = 1")
    assert result.success, result.error_in_exec
    assert type(shell.user_ns["zero"]).__name__ == "RemoteHandle" and shell.user_ns["fine"] == 1
    assert ("modal_gpu: 'zero' stays where the cell ran, as a remote handle: it could not come back (it is "
            "/dev/zero, a character device rather than a regular file: reading it may never end, so it was not read "
            "or sent; open it in the notebook instead)" in capsys.readouterr().err)
    assert run(shell, "%%modal_gpu --backend local\nchunk = zero.read(3)").success  # the file, open where it is
    assert shell.user_ns["chunk"] == "\0\0\0"
