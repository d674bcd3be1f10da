"""The CLI against a running daemon (a simulated building): status, events tail, grants list."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config.schema import load_config
from agent.runtime.control import ControlError, call
from firmware_sim.site import SimulatedSite
from tests.support.e2e import EXAMPLES, GUEST_A, Guest, make_guest, present

pytestmark = pytest.mark.skipif(
    not EXAMPLES.is_dir(), reason=f"face photos not found at {EXAMPLES}"
)
LOCKGW = [str(Path(sys.executable).with_name("lockgw"))]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LOCKGW, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimulatedSite, Guest]]:
    simulated = SimulatedSite(["L101"], tmp_path_factory.mktemp("cli"), secure_channel=False)
    simulated.start()
    guest = make_guest(GUEST_A, name="钱多多")
    platform = simulated.building.platform
    platform.wait_ack(platform.put_grant("G-cli", ["L101"], [guest.entry()], room="8"))
    mark = present(simulated, "L101", guest.card, guest.live_photo)
    platform.wait_for_event("door.opened", after_seq=mark)
    yield simulated, guest
    simulated.stop()


def test_status_shows_the_live_gateway(site: tuple[SimulatedSite, Guest]) -> None:
    simulated, _ = site
    result = run("status", "--config", str(simulated.config_path))
    assert result.returncode == 0, result.stderr
    assert "connected" in result.stdout
    assert "1 active of 1 stored" in result.stdout
    doc = json.loads(run("status", "--config", str(simulated.config_path), "--json").stdout)
    assert doc["readers"]["L101"]["sam_id"], "the reader's SAM id is reported"
    assert doc["locks"]["bus0"][0]["online"] is True


def test_events_tail_shows_metadata_only(site: tuple[SimulatedSite, Guest]) -> None:
    simulated, guest = site
    result = run("events", "tail", "-n", "10", "--config", str(simulated.config_path))
    assert result.returncode == 0, result.stdout
    assert "checkin.verified" in result.stdout and "door.opened" in result.stdout
    assert "lock=L101" in result.stdout
    assert guest.card.name not in result.stdout
    assert guest.card.id_number not in result.stdout
    as_json = run("events", "tail", "--json", "--config", str(simulated.config_path))
    entries = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {"seq", "type"} <= set(entries[-1])


def test_grants_list_is_masked(site: tuple[SimulatedSite, Guest]) -> None:
    simulated, guest = site
    result = run("grants", "list", "--json", "--config", str(simulated.config_path))
    assert result.returncode == 0, result.stderr
    (grant,) = json.loads(result.stdout)
    assert grant["grant_id"] == "G-cli" and grant["verified"] and grant["state"] == "active"
    (shown,) = grant["guests"]
    number = guest.card.id_number
    assert shown["id_number"] == number[:6] + "********" + number[-4:]
    assert shown["checked_in"] is True
    table = run("grants", "list", "--config", str(simulated.config_path))
    assert number not in table.stdout and guest.card.name not in table.stdout


def test_live_commands_say_when_the_daemon_is_down(write_config: object, tmp_path: Path) -> None:
    config = write_config()  # type: ignore[operator]
    for args in (("events", "tail"), ("grants", "list")):
        result = run(*args, "--config", str(config))
        assert result.returncode == 1
        assert "the daemon is not running" in result.stdout + result.stderr


def test_locks_commands_go_through_the_running_daemon(site: tuple[SimulatedSite, Guest]) -> None:
    simulated, _ = site
    config = str(simulated.config_path)
    listed = run("locks", "list", "--config", config, "--json")
    assert listed.returncode == 0, listed.stderr
    (lock,) = json.loads(listed.stdout)["locks"]
    assert lock["address"] == 1 and lock["online"] is True

    mark = simulated.building.platform.last_seq
    tested = run("locks", "test", "1", "--config", config, "--seconds", "1", "--watch", "1")
    assert tested.returncode == 0, tested.stderr
    assert "recorded as seq" in tested.stdout
    opened = simulated.building.platform.wait_for_event("door.opened", after_seq=mark)["body"]
    assert opened["method"] == ["remote"] and opened["remote"] == "technician test"
    # The control socket checks seconds as the CLI does: nothing unlocks, the key is named.
    sock = load_config(simulated.config_path).gateway.control_socket
    mark = simulated.building.platform.last_seq
    for bad in ("nan", 1e9, -1, "inf", True):
        with pytest.raises(ControlError, match="seconds must be"):
            call(sock, "locks.test", {"lock": "L101", "seconds": bad})
    assert simulated.building.platform.last_seq == mark  # nothing recorded, nothing opened

    refused = run("locks", "keyset", "1", "--config", config)
    assert refused.returncode == 2
    assert "stop it first" in refused.stderr


def test_a_daemon_whose_status_fails_is_running_and_a_spent_reserve_is_a_full_disk(
    write_config: object, tmp_path: Path
) -> None:
    # With the state disk full the daemon can answer a status request with an error;
    # it is running all the same, and the disk line says why doors only refuse.
    import socket
    import threading

    from agent.state.store import Store

    config_path = write_config()  # type: ignore[operator]
    config = load_config(config_path)
    config.db_path.parent.mkdir(parents=True, exist_ok=True)
    Store.open(config.db_path).close()  # the daemon ran here and released its reserve
    sock_path = config.gateway.control_socket
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b'{"ok": false, "error": "database or disk is full"}\n')

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        result = run("status", "--config", str(config_path))
    finally:
        thread.join(5)
        server.close()
    assert result.returncode == 0, result.stderr
    assert "running, status failed (database or disk is full)" in result.stdout
    assert "not running" not in result.stdout
    assert "disk full" in result.stdout and "used its reserve" in result.stdout
