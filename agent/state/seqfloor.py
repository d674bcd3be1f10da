"""A reservation of sequence numbers kept outside the database, so ``seq`` never repeats.

The outbox takes ``seq`` from its counter row in the database. If that database
is lost (found corrupt and moved aside, deleted, or an old copy restored), the
counter would start again below numbers the platform already has, and the
platform would drop the new records as duplicates. So before the outbox uses a
number past the reservation, the reservation moves ahead by a block and is
written durably to a small file beside the database; after a database loss the
counter resumes above the reservation. The cost is one fsync per block; the
price of a loss is a gap of at most one block, which the platform sees and the
accompanying incident alert explains.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK = 1000
FILE_NAME = "seq.reserved"


class SeqReservation:
    """The highest ``seq`` the outbox may use without writing a new reservation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reserved = self._read()

    def ensure(self, seq: int) -> None:
        """Make sure ``seq`` is covered by a durable reservation before it is used."""
        if seq > self.reserved:
            self._write(seq + BLOCK)

    def floor_for(self, last_seq: int) -> int | None:
        """Where the counter must resume when the database's ``last_seq`` is below what may
        have been used (a lost or older database); None when ``last_seq`` is plausible."""
        # ensure(seq) wrote seq + BLOCK before seq was committed: a database that holds
        # seq (last_seq == reserved - BLOCK) is current, not lost.
        if self.reserved > 0 and last_seq < self.reserved - BLOCK:
            return self.reserved
        return None

    def _read(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            raise ValueError(f"{self.path}: not a sequence number reservation")
        return int(text)

    def _write(self, value: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{value}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.reserved = value
