"""Memmaps and open files cross as what they are: the same file, where the receiving side sees the sender's disk.

Left to themselves, cloudpickle sends an open text file as an ``io.StringIO`` of its whole content (a 176 MB
log is read and shipped; ``/dev/zero`` is read until memory runs out) and numpy sends a memmap as an in-memory
copy whose ``filename`` is None, so writes and ``flush()`` on the other side silently miss the file. Here:

* where the receiver sees the sender's files (``Disks.shared``: the local backend's worker shares the
  notebook's disk), a memmap goes as its file, offset, dtype, shape, strides and mode ('w+' reopens as 'r+': the
  file is never truncated) and arrives as a memmap of the same file, every view of one mapping over one mapping
  there too; an open file goes as its path, mode and position and arrives opened there, at that position, never
  truncated or created (``_existing``). Writes the sender made through either are flushed first;
* where it does not (a Modal container has a disk of its own), a memmap goes as a plain array, with a note that
  names it; an open file is not read at all: the variable holding it is left out, with one sentence saying why
  and what to do (``StaysBehind``). So is an open file that is no regular file (a device such as /dev/zero, a
  pipe, a socket, standard input) or that has no path, wherever it would go;
* a closed file arrives as a closed file object of that name and mode;
* a copy-on-write memmap (mode 'c') holds changes that were never in its file: it goes as a plain array.

The receiver checks that the path names the very file the sender had (device and inode): a path that names no
file or another one there fails the variable with a sentence, never silently opening something else. A text
file reopens with its encoding and errors but Python's default ``newline`` (a ``TextIOWrapper`` does not tell
what it was opened with).

A ``Files`` is made per payload by the pickler (``payload._Pickler``), which asks it about exactly the types in
``Files.types``.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import stat
import sys
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Disks", "ELSEWHERE", "StaysBehind", "Files", "in_its_file"]

FILE_TYPES = (io.TextIOWrapper, io.BufferedReader, io.BufferedWriter, io.BufferedRandom, io.FileIO)
"""What ``open`` returns: the file objects sent as their path."""


@dataclass(frozen=True)
class Disks:
    """Whether the side a payload goes to sees the sender's files, and both sides' names for the sentences
    that say what could not travel ('the notebook', 'the worker'; 'the cell' for where inputs are read)."""

    shared: bool = False
    sender: str = "this side"
    receiver: str = "the other side"


ELSEWHERE = Disks()
"""The receiver has a disk of its own: what a payload assumes unless told otherwise."""


class StaysBehind(pickle.PicklingError):
    """A value that cannot travel as what it is and must not be read whole: the variable holding it is left
    out. Its message is one sentence saying why and what to do instead (``PackError`` shows it as it is)."""


def in_its_file(obj: Any) -> bool:
    """Whether ``obj`` is a memmap over its file: an input that arrived so came as a memmap of the notebook's
    file, so the cell's writes to it are in the notebook's memory already (``identity`` sends it back as a
    reference, without reading it)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(obj, numpy.memmap) and _root(obj) is not None


class Files:
    """One payload's memmaps and open files; a mapping (the file under a memmap and its views) goes once."""

    def __init__(self, disks: Disks, notes: list[str]) -> None:
        self.disks = disks
        self.notes = notes
        """The pickler's notes: a memmap that travels as a plain array says so there."""
        numpy = sys.modules.get("numpy")
        self.types = frozenset((*FILE_TYPES, *(() if numpy is None else (numpy.memmap,))))
        self._mappings: dict[int, _Mapping | str] = {}  # id(an mmap) → how its file goes, or why it cannot
        self._plain: dict[int, Any] = {}  # id(a root memmap) → a plain array over its memory (kept alive)

    def reduce(self, obj: Any) -> Any:
        """How ``obj`` (of one of ``types``) travels; ``NotImplemented``: as cloudpickle or numpy send it."""
        if isinstance(obj, FILE_TYPES):
            return self._file(obj)
        return self._memmap(obj)

    # ------------------------------------------------------------ memmaps
    def _memmap(self, array: Any) -> Any:
        root = _root(array)
        if root is None:  # a memmap over no file (numpy's copy of one): numpy sends it as any array
            return NotImplemented
        key = id(root.base)
        if key not in self._mappings:
            self._mappings[key] = self._mapping(root)
        mapping = self._mappings[key]
        if isinstance(mapping, _Mapping):
            return _memmap_view, (mapping, *_geometry(array, root))
        self.notes.append(f"a memmap of {root.filename} travels as a plain in-memory array, not as a memmap of "
                          f"the file: {mapping}")
        numpy = sys.modules["numpy"]
        plain = self._plain.get(id(root))
        if plain is None:
            plain = self._plain[id(root)] = root.view(numpy.ndarray)
        # A plain view of the root's plain array: the pickler sends a later view of it as a view (``view_within``).
        offset, shape, dtype, strides, writeable = _geometry(array, root)
        view = numpy.ndarray(shape, dtype, buffer=plain, offset=offset, strides=strides)
        view.flags.writeable = writeable and bool(plain.flags.writeable)
        return _same, (view,)

    def _mapping(self, root: Any) -> _Mapping | str:
        """How the file under ``root`` goes (flushed first); or why the memmap goes as a plain array instead."""
        why = self._why_plain(root)
        if why is not None:
            return why
        if root.mode in ("r+", "w+"):
            root.flush()  # what the sender wrote is in the file before the receiver maps it
        status = os.stat(root.filename)
        return _Mapping(root.filename, int(root.offset), int(root.nbytes), "r" if root.mode == "r" else "r+",
                        (status.st_dev, status.st_ino))

    def _why_plain(self, root: Any) -> str | None:
        if root.mode == "c":
            return "it is copy-on-write, and its changes were never in the file"
        if not self.disks.shared:
            return f"{self.disks.receiver} cannot see {self.disks.sender}'s disk"
        try:
            status = os.stat(root.filename)
        except OSError:
            return "its file is gone"
        if not stat.S_ISREG(status.st_mode) or status.st_size < root.offset + root.nbytes:
            return "its file was replaced or shortened"
        if not root.nbytes:
            return "it maps no bytes"
        return None

    # ------------------------------------------------------------ open files
    def _file(self, obj: Any) -> Any:
        if obj is sys.stdout or obj is sys.stderr:  # cloudpickle sends these as the receiver's own
            return NotImplemented
        if obj is sys.stdin or obj is sys.__stdin__:
            raise StaysBehind(f"it is standard input, which cannot be read from {self.disks.receiver}")
        raw = _raw(obj)
        name = getattr(raw, "name", None)
        path = os.path.abspath(os.fsdecode(name)) if isinstance(name, (str, bytes)) else None
        mode, kind = _mode(obj, raw), type(obj).__name__
        if obj.closed:
            if path is None:
                raise StaysBehind(f"it is a closed file that was open on descriptor {name}, not on a path")
            return _closed_file, (path, mode, kind)
        opened = self._regular(obj, path or f"a file open on descriptor {name}")
        if path is None:
            raise StaysBehind(f"it is a file open on descriptor {name}, not on a path, so it cannot be opened "
                              f"again in {self.disks.receiver}; open the file there instead")
        if not self.disks.shared:
            raise StaysBehind(f"it is an open file of {path} on {self.disks.sender}'s disk, which "
                              f"{self.disks.receiver} cannot see: it was not read or sent; open the file in "
                              f"{self.disks.receiver} instead")
        if not _names(path, opened):
            raise StaysBehind(f"it is an open file of {path}, a path that no longer names that file (it was "
                              "deleted or replaced), so it cannot be opened again elsewhere")
        if obj.writable():
            obj.flush()  # what the sender wrote is in the file before the receiver opens it
        try:
            position = obj.tell()
        except OSError as exc:  # a text file part-way through a `for line in f` loop
            raise StaysBehind(f"it is an open file of {path} whose position cannot be told ({exc}), so it "
                              f"cannot be opened at the same place in {self.disks.receiver}") from None
        text = (obj.encoding, obj.errors, obj.line_buffering) if isinstance(obj, io.TextIOWrapper) else None
        return _reopen, (path, mode, kind, position, text, (opened.st_dev, opened.st_ino))

    def _regular(self, obj: Any, label: str) -> os.stat_result:
        """What ``obj`` has open, a regular file; or ``StaysBehind`` saying what else it is (never read)."""
        try:
            opened = os.fstat(obj.fileno())
        except (OSError, ValueError) as exc:
            raise StaysBehind(f"it is {label}, which cannot be looked at ({exc})") from None
        if not stat.S_ISREG(opened.st_mode):
            raise StaysBehind(f"it is {label}, {_what(opened.st_mode)} rather than a regular file: reading it "
                              f"may never end, so it was not read or sent; open it in {self.disks.receiver} "
                              "instead")
        return opened


def _names(path: str, opened: os.stat_result) -> bool:
    """Whether ``path`` still names the file ``opened`` describes (device and inode)."""
    found = _identity(path)
    return found is not None and found[:2] == (opened.st_dev, opened.st_ino)


def _identity(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """The device, inode and size of the file ``path`` names; None when it names none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino, status.st_size


class _Mapping:
    """The file under a memmap and its views, as the receiver maps it: pickled once per payload (the memo)."""

    __slots__ = ("path", "offset", "length", "mode", "identity")

    def __init__(self, path: str | os.PathLike[str], offset: int, length: int, mode: Literal["r", "r+"],
                 identity: tuple[int, int]) -> None:
        self.path, self.offset, self.length, self.mode, self.identity = path, offset, length, mode, identity

    def __reduce__(self) -> Any:
        return _open_mapping, (self.path, self.offset, self.length, self.mode, self.identity)


def _root(array: Any) -> Any:
    """The memmap that ``numpy.memmap`` made over its file, under ``array`` (itself, or what it views); None
    when ``array`` is over no file's mapping."""
    if getattr(array, "_mmap", None) is None or getattr(array, "filename", None) is None:
        return None
    while array is not None and not isinstance(array.base, mmap.mmap):
        array = array.base
        if getattr(array, "filename", None) is None:  # a plain array in between: not numpy's own chain
            return None
    return array


def _address(array: Any) -> int:
    return int(array.__array_interface__["data"][0])


def _geometry(array: Any, root: Any) -> tuple:
    """Where ``array`` lies in ``root``'s memory and how: offset, shape, dtype, strides, writeable."""
    return (_address(array) - _address(root), array.shape, array.dtype, array.strides, bool(array.flags.writeable))


def _raw(obj: Any) -> Any:
    """The ``FileIO`` under a file object (the raw file holds the name and the descriptor)."""
    if isinstance(obj, io.TextIOWrapper):
        obj = obj.buffer
    return obj if isinstance(obj, io.FileIO) else getattr(obj, "raw", None)


def _mode(obj: Any, raw: Any) -> str:
    """The mode ``open`` was given (a text file keeps it; a binary one's raw file says it: 'rb', 'rb+', 'ab')."""
    mode = getattr(obj, "mode", None) if isinstance(obj, io.TextIOWrapper) else None
    return mode if isinstance(mode, str) else str(getattr(raw, "mode", "r"))


def _what(mode: int) -> str:
    for test, words in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return words
    return "no regular file"


# ------------------------------------------------------------------- receiving
def _same(obj: Any) -> Any:
    """Identity at load time: a memmap that went as a plain array arrives as that array."""
    return obj


def _check_same_file(path: str | os.PathLike[str], identity: tuple[int, int], *, at_least: int = 0) -> None:
    """Refuse a path that names no file here, or another file than the sender's (another disk, a replaced file)."""
    found = _identity(path)
    if found is None or found[:2] != tuple(identity) or found[2] < at_least:
        raise FileNotFoundError(f"{path} is not on this side's disk as the file that was sent (this side has "
                                "another disk, or the file was deleted, replaced or shortened); open it here instead")


def _open_mapping(path: str | os.PathLike[str], offset: int, length: int, mode: Literal["r", "r+"],
                  identity: tuple[int, int]) -> Any:
    """The receiver's map of the sender's mapping: its bytes, as a uint8 memmap (its views are made over it).
    ``path`` is the sender's ``filename`` as numpy keeps it (a ``Path`` when it was given one)."""
    import numpy

    _check_same_file(path, identity, at_least=offset + length)
    return numpy.memmap(path, dtype=numpy.uint8, mode=mode, offset=offset, shape=(length,))


def _memmap_view(root: Any, offset: int, shape: tuple, dtype: Any, strides: tuple, writeable: bool) -> Any:
    """A memmap over ``root``'s mapping, as the sender's was over its own: numpy's own attributes (filename,
    offset, mode) set as numpy sets them on a view, so ``flush()`` reaches the file."""
    import numpy

    view = numpy.ndarray.__new__(numpy.memmap, shape, dtype, buffer=root, offset=offset, strides=strides)
    view.__array_finalize__(root)
    if not writeable:
        view.flags.writeable = False
    return view


def _existing(path: str, flags: int) -> int:
    """``open``'s opener that never creates or truncates: the file was the sender's, as it is."""
    return os.open(path, flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC))


def _reopen(path: str, mode: str, kind: str, position: int, text: tuple[str, str, bool] | None,
            identity: tuple[int, int]) -> Any:
    """The sender's open file, opened here on the same file in its mode, at its position."""
    _check_same_file(path, identity)
    if text is None:
        opened = open(path, mode, buffering=0 if kind == "FileIO" else -1, opener=_existing)
    else:
        encoding, errors, line_buffering = text
        opened = open(path, mode, buffering=1 if line_buffering else -1, encoding=encoding,
                      errors=errors, opener=_existing)
    opened.seek(position)
    return opened


def _closed_file(path: str, mode: str, kind: str) -> Any:
    """A closed file object of ``path``'s name, type and mode (nothing is opened on ``path``)."""
    placeholder: Any = open(os.devnull, mode.replace("x", "w"), buffering=0 if kind == "FileIO" else -1)
    _raw(placeholder).name = path
    if isinstance(placeholder, io.TextIOWrapper):
        placeholder.mode = mode  # type: ignore[misc]  # open() sets it so: an attribute, read-only in the stubs
    placeholder.close()
    return placeholder
