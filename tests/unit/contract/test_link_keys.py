"""Key files and ``lockgw keys``: 0600, fingerprints, several kids, rotation with a grace period."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import pytest

from agent.contract.keys import (
    KeyFileError,
    create_gateway_keys,
    fingerprint,
    load_gateway_keys,
    load_platform_keys,
    public_set,
    rotate_gateway_keys,
    thumbprint,
)
from agent.contract.seal import open_sealed, seal
from firmware_sim.platform import SimKeys


def test_init_writes_0600_and_kids_are_thumbprints(tmp_path: Path) -> None:
    path = tmp_path / "k" / "gateway.jwks"
    jwk_set = create_gateway_keys(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert sorted(k["crv"] for k in jwk_set["keys"]) == ["Ed25519", "X25519"]
    for key in jwk_set["keys"]:
        assert key["kid"] == thumbprint(key)
    keys = load_gateway_keys(path)
    assert keys.signing.is_private
    assert all("d" not in k for k in keys.public_set["keys"])
    with pytest.raises(KeyFileError, match="already exists"):
        create_gateway_keys(path)


def test_loose_mode_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.jwks"
    create_gateway_keys(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match=r"mode 0644.*0600"):
        load_gateway_keys(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        ('{"keys": []}', "not a JWK Set"),
        ('{"keys": [{"kty": "RSA", "kid": "a"}]}', "not an OKP key"),
        ('{"keys": [{"kty": "OKP", "crv": "Ed448", "kid": "a", "x": "AA"}]}', "crv must be"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "platform.jwks"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=message) as info:
        load_platform_keys(path)
    assert str(path) in str(info.value)


def test_platform_file_with_private_key_is_refused(tmp_path: Path) -> None:
    gw = tmp_path / "gateway.jwks"
    create_gateway_keys(gw)
    pf = tmp_path / "platform.jwks"
    pf.write_text(gw.read_text())
    with pytest.raises(KeyFileError, match="must not hold private keys"):
        load_platform_keys(pf)


def test_fingerprint_covers_keys_not_formatting(tmp_path: Path) -> None:
    jwk_set = create_gateway_keys(tmp_path / "g.jwks")
    reordered = {"keys": list(reversed(public_set(jwk_set)["keys"]))}
    assert fingerprint(jwk_set) == fingerprint(reordered)
    other = create_gateway_keys(tmp_path / "h.jwks")
    assert fingerprint(jwk_set) != fingerprint(other)
    assert fingerprint(jwk_set).startswith("SHA256:")


def test_rotation_keeps_old_keys_decrypting_until_retired(tmp_path: Path) -> None:
    path = tmp_path / "gateway.jwks"
    create_gateway_keys(path)
    before = load_gateway_keys(path)
    platform = SimKeys()
    pf_path = tmp_path / "platform.jwks"
    pf_path.write_text(json.dumps(platform.public_jwks()))
    pf = load_platform_keys(pf_path)
    old_enc = next(k for k in before.public_set["keys"] if k["crv"] == "X25519")
    from joserfc.jwk import OKPKey

    sealed_to_old = seal({"x": 1}, before.signing, OKPKey.import_key(old_enc))
    now = dt.datetime.now(dt.UTC)
    rotate_gateway_keys(path, dt.timedelta(days=1), now=now)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    after = load_gateway_keys(path)
    assert after.signing.kid != before.signing.kid
    assert len(after.decryption.keys) == 2
    signer = OKPKey.import_key(before.signing.as_dict(private=False))
    from joserfc.jwk import KeySet

    assert open_sealed(sealed_to_old, after.decryption, KeySet([signer])).body == {"x": 1}
    later = load_gateway_keys(path, now=now + dt.timedelta(days=2))
    assert [k.kid for k in later.decryption.keys] != [old_enc["kid"]]
    assert old_enc["kid"] not in [k.kid for k in later.decryption.keys]
    rotate_gateway_keys(path, dt.timedelta(days=1), now=now + dt.timedelta(days=2))
    kids = [k["kid"] for k in json.loads(path.read_text())["keys"]]
    assert old_enc["kid"] not in kids and len(kids) == 4
    assert pf.encryption.kid == platform.enc.get("kid")


def lockgw(argv: list[str]) -> int:
    """``lockgw keys …`` through the real argparse wiring of :mod:`agent.cli.keys`.

    Uses the lead's ``agent.cli.main`` when it registers ``keys``; otherwise the same
    handling (UserError → one line on stderr, exit 2) on a parser with only ``keys``.
    """
    import argparse

    from agent.cli import keys as keys_cli
    from agent.cli import main as main_cli
    from agent.cli.common import UserError

    choices = main_cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    if "keys" in choices:  # type: ignore[operator]
        return main_cli.main(argv)
    parser = argparse.ArgumentParser(prog="lockgw")
    keys_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"lockgw: {exc}", file=sys.stderr)
        return 2


def test_cli_init_show_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.jwks"
    assert lockgw(["keys", "init", "--file", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["fingerprint"] == fingerprint(json.loads(path.read_text()))
    assert all("d" not in k for k in shown["jwks"]["keys"])
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert lockgw(["keys", "init", "--file", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert lockgw(["keys", "show", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"fingerprint: {shown['fingerprint']}"
    assert lockgw(["keys", "rotate", "--file", str(path), "--grace-days", "7", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["jwks"]["keys"]) == 4


def test_cli_user_errors_are_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lockgw(["keys", "show", "--file", str(tmp_path / "missing.jwks")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read key file" in err and "Traceback" not in err
    loose = tmp_path / "loose.jwks"
    create_gateway_keys(loose)
    os.chmod(loose, 0o640)
    assert lockgw(["keys", "show", "--file", str(loose)]) == 2
    assert "chmod 600" in capsys.readouterr().err
