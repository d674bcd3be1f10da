"""Helpers for the ID card tests: waiting, a simulator + reader pair, card sets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from drivers.idcard.reader import CardRead, IdCardReader, ReaderStatus
from firmware_sim.idcards import (
    FOREIGN_2017,
    FOREIGN_2023,
    HMT_PERMIT,
    VirtualCard,
    make_foreign_2017_number,
    make_id_number,
)
from firmware_sim.idreader import IdReaderSimulator

FACES = Path(__file__).resolve().parents[3] / "shared" / "faces"

# A name pool long enough for 15-character names, an address pool for 35.
_NAME_CHARS = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
_ADDRESS = "新疆维吾尔自治区乌鲁木齐市天山区解放南路一百二十三号院七号楼二单元四零一室"


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Harness:
    """A simulator and a reader connected over a pty, with what the reader reported."""

    sim: IdReaderSimulator
    reader: IdCardReader
    cards: list[CardRead] = field(default_factory=list)
    statuses: list[ReaderStatus] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def states(self) -> list[str]:
        """Names of the states reported so far."""
        with self.lock:
            return [s.state.value for s in self.statuses]

    def present_and_read(self, card: VirtualCard, timeout: float = 10.0) -> CardRead:
        """Present ``card``, wait for its read, then remove it and wait until the
        reader has seen it gone (so the next presentation counts as new)."""
        before = len(self.cards)
        self.sim.present(card)
        wait_for(lambda: len(self.cards) > before, timeout, "a card read")
        self.remove_and_settle()
        return self.cards[before]

    def remove_and_settle(self) -> None:
        """Remove the card and wait until the reader has polled find enough times."""
        self.sim.remove()
        n = self.sim.commands["find"]
        wait_for(lambda: self.sim.commands["find"] >= n + 3, 10.0, "find polls after removal")


@contextmanager
def harness(baud: int = 921600, **reader_kwargs: object) -> Iterator[Harness]:
    """Start a simulator (``baud`` paces its wire) and a reader polling it."""
    sim_kwargs = {}
    if "refind_while_present" in reader_kwargs:
        sim_kwargs["refind_while_present"] = bool(reader_kwargs.pop("refind_while_present"))
    sim = IdReaderSimulator(baud=baud, seed=7, **sim_kwargs)  # type: ignore[arg-type]
    port = sim.start()
    h: Harness | None = None

    def on_card(read: CardRead) -> None:
        assert h is not None
        with h.lock:
            h.cards.append(read)

    def on_status(status: ReaderStatus) -> None:
        assert h is not None
        with h.lock:
            h.statuses.append(status)

    options: dict[str, object] = {"poll_interval": 0.03, "reply_timeout": 0.5}
    options.update(reader_kwargs)
    reader = IdCardReader(port, on_card, on_status, **options)  # type: ignore[arg-type]
    h = Harness(sim, reader)
    reader.start()
    try:
        wait_for(lambda: "connected" in h.states(), 10.0, "reader connected")
        yield h
    finally:
        reader.stop()
        sim.stop()


def resident_card(
    i: int, *, name_len: int = 2, address_len: int = 10, nation: str = "01", sex: str = "1"
) -> VirtualCard:
    """A valid resident card, varied by ``i``."""
    birth = date(1950 + i % 60, 1 + i % 12, 1 + i % 28)
    name = "".join(_NAME_CHARS[(i + k) % len(_NAME_CHARS)] for k in range(name_len))
    return VirtualCard(
        name=name,
        sex=sex,
        nation=nation,
        birth=f"{birth:%Y%m%d}",
        address=_ADDRESS[:address_len],
        id_number=make_id_number(birth, "650102", i % 100, int(sex)),
        issuer="乌鲁木齐市公安局天山区分局",
        valid_from="20200101",
        valid_until="20400101",
    )


def other_cards() -> dict[str, VirtualCard]:
    """One valid card of each non-resident type."""
    birth = date(1985, 5, 5)
    return {
        HMT_PERMIT: VirtualCard(
            name="陈大文",
            sex="2",
            nation="",
            birth="19850505",
            address="广东省深圳市福田区福华一路一号",
            id_number=make_id_number(birth, "810000", 3, 2),
            issuer="深圳市公安局",
            valid_from="20200101",
            valid_until="20300101",
            card_type=HMT_PERMIT,
            pass_number="H12345678",
            issue_count="01",
        ),
        FOREIGN_2017: VirtualCard(
            name="史密斯",
            sex="1",
            nation="",
            birth="19850505",
            address="",
            id_number=make_foreign_2017_number("USA", birth),
            issuer="1100",
            valid_from="20200101",
            valid_until="20300101",
            card_type=FOREIGN_2017,
            name_en="SMITH, JOHN",
            nationality="USA",
            card_version="20",
        ),
        FOREIGN_2023: VirtualCard(
            name="",
            sex="2",
            nation="",
            birth="19850505",
            address="",
            id_number=make_id_number(birth, "911840", 3, 2),
            issuer="",
            valid_from="20230101",
            valid_until="20330101",
            card_type=FOREIGN_2023,
            name_en="WORTHINGTON-SMITHERSON, ALEXANDRA JANE",
            nationality="GBR",
        ),
    }
