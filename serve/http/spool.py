"""Large request bodies, gathered through a temporary file so that one costs one copy in memory.

An asynchronous endpoint takes bodies up to 1 GB. Read whole from the engine's input, such a body
is held twice at its peak (the engine's buffer or a list of pieces, then the ``bytes`` made from
them). Here its pieces go to an unlinked temporary file as they arrive (memory: one piece), and
the file is read back with one ``read`` of its exact size into a new ``bytes`` object (memory:
the body, once). Handlers still get ``bytes``, the type every handler style is written against
(``json.loads``, ``isinstance(body, bytes)``, ``hash``, ``np.frombuffer`` all keep working);
a ``bytearray`` or a memory map would have saved the read back but broken some of them.

Small bodies never touch the disk: the pieces stay in memory up to ``SPOOL_ABOVE`` bytes, which
keeps an ordinary request as fast as before. The file lives in the temporary directory
(``TMPDIR``), is unlinked from the start, and is closed before the handler runs.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable
from typing import IO

MIB = 1024 * 1024
SPOOL_ABOVE = 8 * MIB
"""Bodies up to this size are gathered in memory; larger ones through a temporary file."""
PIECE = MIB
"""How much is read from the engine's input at a time on the way to the file."""


def gather(pieces: Iterable[bytes], spool_above: int = SPOOL_ABOVE) -> bytes:
    """The pieces as one ``bytes``; past ``spool_above`` bytes through a temporary file.

    The pieces are consumed in order; whatever their iterator raises (a limit, a client gone)
    propagates, and the file is removed.
    """
    held: list[bytes] = []
    size = 0
    spool: IO[bytes] | None = None
    with contextlib.ExitStack() as closing:
        for piece in pieces:
            size += len(piece)
            if spool is not None:
                _write_all(spool, piece)
                continue
            held.append(piece)
            if size > spool_above:
                spool = closing.enter_context(
                    tempfile.TemporaryFile(buffering=0, prefix="byoserve-body-")
                )
                for kept in held:
                    _write_all(spool, kept)
                held.clear()
        if spool is None:
            return held[0] if len(held) == 1 else b"".join(held)
        spool.seek(0)
        return _read_all(spool, size)


def _write_all(spool: IO[bytes], piece: bytes) -> None:
    view = memoryview(piece)
    while view:
        written = spool.write(view)
        view = view[written or 0 :]


def _read_all(spool: IO[bytes], size: int) -> bytes:
    """``size`` bytes from an unbuffered file: one allocation of that size, filled by the read
    itself (a regular file answers a read whole; a short one is finished at the cost of a copy)."""
    data = spool.read(size)
    if len(data) == size:
        return data
    rest = [data]
    got = len(data)
    while got < size:
        more = spool.read(size - got)
        if not more:
            raise OSError(f"the spooled request body ended at {got} of {size} bytes")
        rest.append(more)
        got += len(more)
    return b"".join(rest)
