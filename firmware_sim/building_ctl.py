"""Drive a running simulated building: its control socket, a client, and the command line.

The socket (``<dir>/building.sock``, mode 0600) speaks JSON lines: each request
is one object ``{"op": "...", ...}``, each answer one line
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. A bad
request is answered with the error, counted, and changes nothing.

``python -m firmware_sim.building_ctl --doors 4 --dir D`` starts a building and
runs until Ctrl-C; ``python -m firmware_sim.building_ctl ctl --dir D ACTION ...``
sends one action to it (``ctl --help`` lists them).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from firmware_sim.building import (
    GRANT_PHOTO_SIZE,
    Building,
    BuildingError,
    card_with_photo,
    portrait_jpeg,
    summarize,
)
from firmware_sim.idcards import VirtualCard, make_id_number, sample_card

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20
SOCKET_NAME = "building.sock"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

_CARD_TEXT = (
    "name",
    "sex",
    "nation",
    "birth",
    "address",
    "id_number",
    "issuer",
    "valid_from",
    "valid_until",
    "card_type",
)


class RequestError(Exception):
    """A control request is malformed; the message names the field."""


# ------------------------------------------------------------- arguments
def _get(req: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in req:
        if default is ...:
            raise RequestError(f"missing {key!r}")
        return default
    value = req[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise RequestError(f"{key!r} has the wrong type ({type(value).__name__})")
    return value


def card_from_request(req: dict[str, Any]) -> VirtualCard:
    """A card from text fields; a missing ID number is made to match birth and sex."""
    fields = {k: _get(req, k, str) for k in _CARD_TEXT if k in req}
    if "id_number" not in fields:
        birth_text = fields.get("birth", "19900307")
        try:
            birth = date(int(birth_text[:4]), int(birth_text[4:6]), int(birth_text[6:8]))
        except ValueError:
            raise RequestError("'birth' must be YYYYMMDD") from None
        sex = int(fields.get("sex", "1"))
        seq = _get(req, "seq", int, 12)
        fields["birth"] = birth_text
        fields["id_number"] = make_id_number(birth, "110101", seq, sex)
    photo = _get(req, "photo", str, None)
    if photo is None:
        return sample_card(**fields)
    if not Path(photo).is_file():
        raise RequestError(f"card photo {photo} does not exist")
    return card_with_photo(Path(photo), **fields)


def _guests(req: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(_get(req, "guests", list)):
        if not isinstance(raw, dict):
            raise RequestError(f"guests[{i}] is not an object")
        entry = {
            "guest_id": _get(raw, "guest_id", str, f"{_get(req, 'grant_id', str)}-g{i + 1}"),
            "id_number": _get(raw, "id_number", str),
            "name": _get(raw, "name", str),
        }
        face = _get(raw, "face", str, None)
        if face is not None:
            jpeg = portrait_jpeg(Path(face), GRANT_PHOTO_SIZE)
            entry["face_jpeg_b64"] = base64.b64encode(jpeg).decode("ascii")
        out.append(entry)
    return out


def _door(req: dict[str, Any]) -> str:
    return str(_get(req, "door", str))


def _events(b: Building, req: dict[str, Any]) -> list[dict[str, Any]]:
    after = _get(req, "after_seq", int, 0)
    return [
        summarize(e)
        for e in b.platform.received(_get(req, "type", str, None))
        if int(e.get("seq", 0)) > after
    ]


def _wait_event(b: Building, req: dict[str, Any]) -> dict[str, Any]:
    lock = _get(req, "lock", str, None)
    env = b.wait_for_event(
        _get(req, "type", str),
        (lambda body: body.get("lock") == lock) if lock else None,
        float(_get(req, "timeout", (int, float), 20.0)),
        after_seq=_get(req, "after_seq", int, 0),
    )
    return summarize(env)


def _show_face(b: Building, req: dict[str, Any]) -> None:
    photo = _get(req, "photo", (str, type(None)), None)
    b.show_face(_door(req), photo)


# op -> handler(building, request) -> JSON-able result
OPS: dict[str, Callable[[Building, dict[str, Any]], Any]] = {
    "status": lambda b, r: b.status(),
    "present_card": lambda b, r: b.present_card(_door(r), card_from_request(r)),
    "remove_card": lambda b, r: b.remove_card(_door(r)),
    "show_face": _show_face,
    "open_door": lambda b, r: b.open_door(_door(r)),
    "close_door": lambda b, r: b.close_door(_door(r)),
    "lock_power": lambda b, r: b.lock_power(_door(r), _get(r, "on", bool)),
    "tamper": lambda b, r: b.tamper(_door(r), _get(r, "on", bool)),
    "keypad": lambda b, r: b.keypad(_door(r), _get(r, "digits", str)),
    "relay": lambda b, r: b.relay_unlocked(_door(r)),
    "led": lambda b, r: b.led(_door(r)),
    "reader_unplug": lambda b, r: b.reader(_door(r)).unplug(),
    "reader_replug": lambda b, r: b.reader(_door(r)).replug(),
    "cut_network": lambda b, r: b.cut_network(_get(r, "mode", str, "reset")),
    "restore_network": lambda b, r: b.restore_network(),
    "pin_gateway": lambda b, r: b.pin_gateway_keys(_get(r, "jwks", dict)),
    "put_grant": lambda b, r: b.platform.put_grant(
        _get(r, "grant_id", str),
        _get(r, "locks", list),
        _guests(r),
        hours=float(_get(r, "hours", (int, float), 24.0)),
        pin=_get(r, "pin", str, None),
    ),
    "revoke": lambda b, r: b.platform.revoke(
        _get(r, "grant_id", str), _get(r, "reason", str, "checkout")
    ),
    "unlock": lambda b, r: b.platform.remote_unlock(
        _get(r, "lock", str), _get(r, "seconds", int, 5), _get(r, "reason", str, "remote")
    ),
    "wait_ack": lambda b, r: b.platform.wait_ack(
        _get(r, "cmd_id", str), float(_get(r, "timeout", (int, float), 20.0))
    ),
    "events": _events,
    "wait_event": _wait_event,
}


def handle_request(building: Building, line: bytes) -> dict[str, Any]:
    """Decode one request line, run it, and build the answer (never raises)."""
    try:
        req = json.loads(line)
        if not isinstance(req, dict):
            raise RequestError("a request is a JSON object")
        op = req.get("op")
        if op not in OPS:
            raise RequestError(f"unknown op {op!r} (known: {', '.join(sorted(OPS))})")
        return {"ok": True, "result": OPS[str(op)](building, req)}
    except (ValueError, RequestError, BuildingError, TimeoutError) as exc:
        # ValueError covers bad JSON and bad values the simulators refuse.
        return {"ok": False, "error": str(exc) or type(exc).__name__}
    except Exception as exc:  # a simulator failed: answer, keep serving
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


class _Handler(socketserver.StreamRequestHandler):
    server: _UnixServer

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_REQUEST_BYTES:
                answer: dict[str, Any] = {"ok": False, "error": "request line too long"}
            elif not line.strip():
                continue
            else:
                answer = handle_request(self.server.building, line)
            if not answer["ok"]:
                self.server.bad_requests += 1
                log.warning("building control request refused: %s", answer["error"])
            self.wfile.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
            self.wfile.flush()
            if len(line) > MAX_REQUEST_BYTES:
                return


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, building: Building) -> None:
        self.building = building
        self.bad_requests = 0
        super().__init__(path, _Handler)


class BuildingControlServer:
    """The building's control socket, served on a background thread."""

    def __init__(self, building: Building, path: Path) -> None:
        self.path = Path(path)
        self._building = building
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def bad_requests(self) -> int:
        return self._server.bad_requests if self._server else 0

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = _UnixServer(str(self.path), self._building)
        finally:
            os.umask(old_umask)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="building-ctl", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# ---------------------------------------------------------------- client
class ServedBuilding(Building):
    """A building whose control socket (``<dir>/building.sock``) is served while it runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server: BuildingControlServer | None = None

    @property
    def control_server(self) -> BuildingControlServer | None:
        """The control socket server while it runs (its ``bad_requests`` counts refusals)."""
        return self._server

    def start(self) -> ServedBuilding:
        """Start the building, then its control socket."""
        super().start()
        self._server = BuildingControlServer(self, self.control_socket_path)
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop the control socket, then the building (safe to call twice)."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        super().stop()


class CtlError(Exception):
    """The building refused a request or cannot be reached."""


def request(socket_path: Path, op: str, /, *, io_timeout: float = 60.0, **args: Any) -> Any:
    """Send one request to a running building; returns its result or raises CtlError.

    ``args`` are the op's fields; ``io_timeout`` bounds the wait for the answer.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(io_timeout)
            sock.connect(str(socket_path))
            sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise CtlError(f"no building running: {socket_path} does not exist") from None
    except OSError as exc:
        raise CtlError(f"cannot reach the building at {socket_path}: {exc}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise CtlError("the building sent no valid answer") from None
    if not answer.get("ok"):
        raise CtlError(str(answer.get("error")))
    return answer.get("result")


# ------------------------------------------------------------ command line
def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected 'on' or 'off'")
    return text == "on"


def _ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m firmware_sim.building_ctl ctl",
        description="Send one action to a running simulated building.",
    )
    p.add_argument("--dir", type=Path, required=True, help="the building's work directory")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def door_cmd(name: str, help_: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help_)
        q.add_argument("door")
        return q

    sub.add_parser("status", help="doors, relays, network, events received")
    q = door_cmd("present-card", "put an ID card on the door's reader")
    for field in ("name", "sex", "birth", "address", "id-number", "valid-until", "card-type"):
        q.add_argument(f"--{field}")
    q.add_argument("--seq", type=int, help="sequence digits of a generated ID number")
    q.add_argument("--photo", help="card photo file (JPEG or PNG)")
    door_cmd("remove-card", "take the card away")
    q = door_cmd("show-face", "put a photo in front of the camera (no photo: nobody)")
    q.add_argument("photo", nargs="?")
    door_cmd("open-door", "open the door (contact reports open)")
    door_cmd("close-door", "close the door")
    q = door_cmd("power", "cut or restore the lock's power")
    q.add_argument("state", type=_on_off, metavar="on|off")
    q = door_cmd("tamper", "open or close the lock's tamper switch")
    q.add_argument("state", type=_on_off, metavar="on|off")
    q = door_cmd("keypad", "type digits on the lock's keypad")
    q.add_argument("digits")
    door_cmd("relay", "is the relay unlocked?")
    door_cmd("reader-unplug", "pull the ID reader's USB cable")
    door_cmd("reader-replug", "plug the ID reader back")
    q = sub.add_parser("cut-network", help="cut the gateway off the broker")
    q.add_argument("--blackhole", action="store_true", help="freeze instead of reset")
    sub.add_parser("restore-network", help="bring the gateway's network back")
    q = sub.add_parser("grant", help="platform: send grant.put")
    q.add_argument("grant_id")
    q.add_argument("--lock", action="append", required=True, dest="locks")
    q.add_argument(
        "--guest",
        action="append",
        required=True,
        metavar="ID_NUMBER:NAME[:FACE]",
        help="a guest; FACE is a photo file sent as face_jpeg_b64",
    )
    q.add_argument("--hours", type=float, default=24.0)
    q.add_argument("--pin")
    q = sub.add_parser("revoke", help="platform: send grant.revoke")
    q.add_argument("grant_id")
    q.add_argument("--reason", default="checkout")
    q = sub.add_parser("unlock", help="platform: send lock.unlock")
    q.add_argument("lock")
    q.add_argument("--seconds", type=int, default=5)
    q = sub.add_parser("events", help="platform: messages received (photos shown as sizes)")
    q.add_argument("--type")
    q.add_argument("--after", type=int, default=0, help="only seqs above this")
    q = sub.add_parser("wait-event", help="platform: wait for a message of a type")
    q.add_argument("type")
    q.add_argument("--lock")
    q.add_argument("--timeout", type=float, default=30.0)
    q.add_argument("--after", type=int, default=0)
    q = sub.add_parser("pin-gateway", help="platform: pin the gateway's public JWK Set file")
    q.add_argument("file", type=Path)
    return p


def _ctl_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    a = args.action
    if a in ("status", "restore-network"):
        return a.replace("-", "_"), {}
    if a == "present-card":
        req: dict[str, Any] = {"door": args.door}
        for field in ("name", "sex", "birth", "address", "id_number", "valid_until", "card_type"):
            if getattr(args, field) is not None:
                req[field] = getattr(args, field)
        if args.seq is not None:
            req["seq"] = args.seq
        if args.photo:
            req["photo"] = str(Path(args.photo).resolve())
        return "present_card", req
    if a == "show-face":
        photo = str(Path(args.photo).resolve()) if args.photo else None
        return "show_face", {"door": args.door, "photo": photo}
    if a in ("power", "tamper"):
        return ("lock_power" if a == "power" else "tamper"), {"door": args.door, "on": args.state}
    if a == "keypad":
        return "keypad", {"door": args.door, "digits": args.digits}
    if a == "cut-network":
        return "cut_network", {"mode": "blackhole" if args.blackhole else "reset"}
    if a == "grant":
        guests = []
        for spec in args.guest:
            parts = spec.split(":", 2)
            if len(parts) < 2:
                raise CtlError(f"--guest {spec!r}: expected ID_NUMBER:NAME[:FACE]")
            guest = {"id_number": parts[0], "name": parts[1]}
            if len(parts) == 3:
                guest["face"] = str(Path(parts[2]).resolve())
            guests.append(guest)
        req = {"grant_id": args.grant_id, "locks": args.locks, "guests": guests}
        req["hours"] = args.hours
        if args.pin:
            req["pin"] = args.pin
        return "put_grant", req
    if a == "revoke":
        return "revoke", {"grant_id": args.grant_id, "reason": args.reason}
    if a == "unlock":
        return "unlock", {"lock": args.lock, "seconds": args.seconds}
    if a == "events":
        req = {"after_seq": args.after}
        if args.type:
            req["type"] = args.type
        return "events", req
    if a == "wait-event":
        req = {"type": args.type, "timeout": args.timeout, "after_seq": args.after}
        if args.lock:
            req["lock"] = args.lock
        return "wait_event", req
    if a == "pin-gateway":
        try:
            jwks = json.loads(args.file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CtlError(f"{args.file}: {exc}") from None
        return "pin_gateway", {"jwks": jwks.get("jwks", jwks)}
    return a.replace("-", "_"), {"door": args.door}


def ctl_main(argv: Sequence[str]) -> int:
    """``ctl``: one action; prints its result; one error line on failure."""
    args = _ctl_parser().parse_args(argv)
    try:
        op, req = _ctl_request(args)
        io_timeout = float(req.get("timeout", 0)) + 30.0
        result = request(args.dir / SOCKET_NAME, op, io_timeout=io_timeout, **req)
    except CtlError as exc:
        print(f"building: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if result is None:
        text = "ok"
    elif isinstance(result, dict | list):
        text = json.dumps(result, indent=2, ensure_ascii=False)
    else:
        text = str(result).lower() if isinstance(result, bool) else str(result)
    with contextlib.suppress(BrokenPipeError):  # e.g. piped into head
        print(text, flush=True)
    return EXIT_OK


def _override(text: str) -> tuple[str, str, Any]:
    key, sep, raw = text.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot or not section or not name:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected SECTION.KEY=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return section, name, value


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m firmware_sim.building_ctl",
        description="Start a simulated building (locks, ID readers, cameras, platform, broker) "
        "and run until Ctrl-C. Drive it with: "
        "python -m firmware_sim.building_ctl ctl --dir DIR ...",
    )
    p.add_argument("--dir", type=Path, required=True, help="work directory (created)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--doors", type=int, default=2, help="number of doors L101.. (default 2)")
    group.add_argument("--door-ids", help="comma-separated door ids instead")
    p.add_argument("--broker", metavar="HOST:PORT", help="use this broker, not a private one")
    p.add_argument("--gateway-id", default="sim-gw-01")
    p.add_argument(
        "--secure-channel",
        action="store_true",
        help="OSDP secure channel: locks start in install mode and are keyed with "
        "`lockgw locks keyset --install` into the gateway's state dir",
    )
    p.add_argument(
        "--no-gateway-keys",
        action="store_true",
        help="do not run `lockgw keys init`; pin later with `ctl pin-gateway FILE`",
    )
    p.add_argument(
        "--set",
        type=_override,
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="gateway configuration override, e.g. face.threshold=0.5 (VALUE as JSON)",
    )
    return p


def run_main(argv: Sequence[str]) -> int:
    """Start a building, print where things are, run until SIGINT/SIGTERM."""
    args = _run_parser().parse_args(argv)
    broker: tuple[str, int] | None = None
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not host or not port.isdigit():
            print("building: --broker must be HOST:PORT", file=sys.stderr)
            return EXIT_USAGE
        broker = (host, int(port))
    overrides: dict[str, dict[str, Any]] = {}
    for section, name, value in args.set:
        overrides.setdefault(section, {})[name] = value
    doors: int | list[str] = args.doors
    if args.door_ids:
        doors = [d.strip() for d in args.door_ids.split(",") if d.strip()]
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        building = ServedBuilding(
            doors,
            args.dir,
            broker=broker,
            secure_channel=args.secure_channel,
            gateway_id=args.gateway_id,
            config_overrides=overrides,
        )
        building.start()
    except (ValueError, BuildingError, OSError) as exc:
        print(f"building: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if not args.no_gateway_keys:
            try:
                building.init_gateway_keys()
            except BuildingError as exc:
                print(
                    f"building: gateway keys not pinned ({exc}); make them with "
                    "`lockgw keys init`, then `ctl pin-gateway FILE`",
                    file=sys.stderr,
                )
        if args.secure_channel:
            try:
                keyed = building.provision_lock_keys()
                print(f"locks keyed: {keyed or 'all had keys'}")
            except BuildingError as exc:
                print(
                    f"building: locks not keyed ({exc}); run `lockgw locks keyset "
                    "ADDR --install` for each",
                    file=sys.stderr,
                )
        host, port = building.broker_address
        print(f"config: {building.config_path}")
        print(f"control socket: {building.control_socket_path}")
        print(f"broker: {host}:{port} (the gateway goes through {building.link_address[1]})")
        print(f"run the gateway: lockgw run --config {building.config_path}")
        print(f"drive it: python -m firmware_sim.building_ctl ctl --dir {args.dir} status")
        print("ready", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        building.stop()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m firmware_sim.building_ctl [ctl ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ctl"]:
        return ctl_main(argv[1:])
    return run_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
