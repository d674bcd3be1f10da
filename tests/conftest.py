"""Fixtures shared by the whole suite."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FACES = SHARED / "faces"


@pytest.fixture(autouse=True)
def contract_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Every sealed gateway message this test produces, or the platform simulator receives,
    is validated against docs/schemas/gateway-messages.json (the AsyncAPI document's
    schemas); an undocumented type or field, or a missing required one, fails the test."""
    import agent.sync.outbox
    from firmware_sim.platform import PlatformSim
    from tests.support.contract import ContractChecker

    checker = ContractChecker()
    real_seal = agent.sync.outbox.seal
    real_store = PlatformSim._store

    def checked_seal(envelope: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        checker.check(envelope, "seal")
        return real_seal(envelope, *args, **kwargs)

    def checked_store(self: PlatformSim, gw: str, env: dict[str, Any]) -> None:
        checker.check(env, "platform")
        real_store(self, gw, env)

    monkeypatch.setattr(agent.sync.outbox, "seal", checked_seal)
    monkeypatch.setattr(PlatformSim, "_store", checked_store)
    yield checker
    if checker.violations:
        unique = sorted(set(checker.violations))
        pytest.fail(
            f"{len(unique)} contract violation(s) in sealed messages:\n" + "\n".join(unique[:20]),
            pytrace=False,
        )


@pytest.fixture
def repo_root() -> Path:
    """The project's root folder."""
    return REPO


@pytest.fixture
def faces_dir() -> Path:
    """``../shared/faces``, or a skip with the reason when it is absent."""
    if not FACES.is_dir():
        pytest.skip(f"face photos not found at {FACES} (../shared/faces beside the repo)")
    return FACES


@pytest.fixture
def lockgw_cmd() -> list[str]:
    """How to run the ``lockgw`` command as a user would (the installed entry point)."""
    exe = Path(sys.executable).with_name("lockgw")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "agent.cli.main"]


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a minimal valid configuration (plain TCP to a loopback broker) plus overrides."""

    def _write(extra: str = "", gateway_id: str = "test-gw-01", port: int = 1883) -> Path:
        state = tmp_path / "state"
        path = tmp_path / "gateway.toml"
        make_key_files(tmp_path / "keys")
        path.write_text(
            f'[gateway]\nid = "{gateway_id}"\nstate_dir = "{state}"\n'
            f'control_socket = "{tmp_path / "control.sock"}"\n\n'
            f'[link]\ntransport = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
            f'[keys]\ngateway_keys = "{tmp_path / "keys" / "gateway.jwks"}"\n'
            f'platform_keys = "{tmp_path / "keys" / "platform.jwks"}"\n' + extra,
            encoding="utf-8",
        )
        return path

    return _write


def make_key_files(keys_dir: Path) -> None:
    """A gateway key set (0600) and a platform public set, as `lockgw keys init` and the
    platform's registration would leave them."""
    from agent.contract.keys import create_gateway_keys, new_key, public_set

    keys_dir.mkdir(parents=True, exist_ok=True)
    if not (keys_dir / "gateway.jwks").exists():
        create_gateway_keys(keys_dir / "gateway.jwks")
    platform = {
        "keys": [new_key("Ed25519").as_dict(private=True), new_key("X25519").as_dict(private=True)]
    }
    (keys_dir / "platform.jwks").write_text(json.dumps(public_set(platform)), encoding="utf-8")


@pytest.fixture
def clean_env() -> dict[str, str]:
    """The environment without systemd's variables (tests set their own)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    }
    return env
