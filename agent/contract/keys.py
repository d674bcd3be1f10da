"""JWK Set files: the gateway's private keys and the platform's pinned public keys.

Both files are JWK Sets (RFC 7517 §5) of OKP keys (RFC 8037): Ed25519 with
``"use":"sig"`` and X25519 with ``"use":"enc"``.

- ``kid`` of every key we create is its RFC 7638 thumbprint (SHA-256,
  base64url), so anyone holding the public key can recompute it.
- The *fingerprint* of a set, for reading out at registration, is
  ``SHA256:`` + base64url(SHA-256(the set's key thumbprints, sorted, joined
  with ``","``)). It covers every key of the set and nothing else (not the
  file's formatting or member order). Each key's own thumbprint is shown too.
- Rotation: the newest key of each curve is *current* (we sign with it; the
  platform should encrypt to it). Older keys stay in the set with
  ``"lockgw_retire_at"`` (RFC 3339) and still decrypt until that moment, so
  messages sealed to them in flight still open; afterwards they are ignored and
  removed at the next rotation.
- The platform set may pin several kids: every Ed25519 key there verifies;
  we encrypt to the last X25519 key in the file (the platform lists its newest
  last).

The gateway's private file must have mode 0600 (no group or other access);
loading refuses anything looser. The platform file must hold public keys only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OKPKey

RETIRE_MEMBER = "lockgw_retire_at"
_CURVE_USE = {"Ed25519": "sig", "X25519": "enc"}


class KeyFileError(Exception):
    """A key file is missing, unreadable, badly formed or too open; the text names the file."""


@dataclass(frozen=True)
class GatewayKeys:
    """The gateway's own keys: the current signer and every X25519 key that may still decrypt."""

    signing: OKPKey
    decryption: KeySet
    public_set: dict[str, Any]


@dataclass(frozen=True)
class PlatformKeys:
    """The platform's pinned keys: every Ed25519 key verifies; we encrypt to ``encryption``."""

    encryption: OKPKey
    verify: KeySet
    public_set: dict[str, Any]


def new_key(curve: str) -> OKPKey:
    """A fresh OKP key for ``curve`` ("Ed25519" or "X25519") with kid = its thumbprint."""
    if curve not in _CURVE_USE:
        raise ValueError(f"unsupported curve {curve!r}")
    key = OKPKey.generate_key(curve, parameters={"use": _CURVE_USE[curve]})  # type: ignore[arg-type]
    return OKPKey.import_key(
        key.as_dict(private=True) | {"kid": key.thumbprint(), "use": _CURVE_USE[curve]}
    )


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of an OKP JWK."""
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":")
    )
    return _b64(hashlib.sha256(canonical.encode()).digest())


def fingerprint(jwk_set: dict[str, Any]) -> str:
    """Fingerprint of a (public or private) JWK Set; see the module text."""
    prints = sorted(thumbprint(k) for k in jwk_set["keys"])
    return "SHA256:" + _b64(hashlib.sha256(",".join(prints).encode()).digest())


def public_set(jwk_set: dict[str, Any]) -> dict[str, Any]:
    """The set without private parts (``d``), keeping kid, use and retire marks."""
    return {"keys": [{k: v for k, v in key.items() if k != "d"} for key in jwk_set["keys"]]}


def create_gateway_keys(path: Path, *, force: bool = False) -> dict[str, Any]:
    """Write a new gateway key set (one Ed25519, one X25519) to ``path`` with mode 0600."""
    if path.exists() and not force:
        raise KeyFileError(f"{path} already exists; use rotate, or --force to replace it")
    jwk_set = {
        "keys": [new_key("Ed25519").as_dict(private=True), new_key("X25519").as_dict(private=True)]
    }
    _write_private(path, jwk_set)
    return jwk_set


def rotate_gateway_keys(
    path: Path, grace: dt.timedelta, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Add a new current key of each curve; old ones retire after ``grace``; expired ones go."""
    now = now or dt.datetime.now(dt.UTC)
    jwk_set = read_jwk_set(path, private=True)
    retire = _iso(now + grace)
    kept: list[dict[str, Any]] = []
    for key in jwk_set["keys"]:
        if _retired(key, now):
            continue
        kept.append(key if RETIRE_MEMBER in key else key | {RETIRE_MEMBER: retire})
    kept += [new_key("Ed25519").as_dict(private=True), new_key("X25519").as_dict(private=True)]
    out = {"keys": kept}
    _write_private(path, out)
    return out


def load_gateway_keys(path: Path, now: dt.datetime | None = None) -> GatewayKeys:
    """Load the gateway's private set; checks mode 0600, one usable key of each curve."""
    now = now or dt.datetime.now(dt.UTC)
    jwk_set = read_jwk_set(path, private=True)
    signers = [k for k in jwk_set["keys"] if k["crv"] == "Ed25519"]
    live_enc = [k for k in jwk_set["keys"] if k["crv"] == "X25519" and not _retired(k, now)]
    if not signers or not live_enc:
        raise KeyFileError(f"{path}: needs an Ed25519 and an unexpired X25519 key")
    return GatewayKeys(
        signing=_import(signers[-1], path),
        decryption=KeySet([_import(k, path) for k in live_enc]),
        public_set=public_set(jwk_set),
    )


def load_platform_keys(path: Path) -> PlatformKeys:
    """Load the platform's pinned public set (no private parts allowed)."""
    jwk_set = read_jwk_set(path, private=False)
    verify = [k for k in jwk_set["keys"] if k["crv"] == "Ed25519"]
    enc = [k for k in jwk_set["keys"] if k["crv"] == "X25519"]
    if not verify or not enc:
        raise KeyFileError(f"{path}: needs at least one Ed25519 and one X25519 public key")
    return PlatformKeys(
        encryption=_import(enc[-1], path),
        verify=KeySet([_import(k, path) for k in verify]),
        public_set=jwk_set,
    )


def read_jwk_set(path: Path, *, private: bool) -> dict[str, Any]:
    """Read and check a JWK Set file; private sets must be 0600 and hold ``d`` in every key."""
    try:
        st = path.stat()
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.strerror})") from None
    if private and stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyFileError(
            f"{path}: private key file has mode {stat.S_IMODE(st.st_mode):04o}; "
            "it must be 0600 (chmod 600)"
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or not data["keys"]:
        raise KeyFileError(f'{path}: not a JWK Set (an object with a non-empty "keys" list)')
    kids: set[str] = set()
    for i, key in enumerate(data["keys"]):
        where = f"{path}: keys[{i}]"
        if not isinstance(key, dict) or key.get("kty") != "OKP":
            raise KeyFileError(f"{where}: not an OKP key")
        if key.get("crv") not in _CURVE_USE:
            raise KeyFileError(f"{where}: crv must be Ed25519 or X25519")
        kid = key.get("kid")
        if not isinstance(kid, str) or not kid:
            raise KeyFileError(f"{where}: missing kid")
        if kid in kids:
            raise KeyFileError(f"{where}: duplicate kid {kid}")
        kids.add(kid)
        if private and "d" not in key:
            raise KeyFileError(f"{where}: private key file holds a key without its private part")
        if not private and "d" in key:
            raise KeyFileError(f"{where}: pinned public key file must not hold private keys")
        if RETIRE_MEMBER in key:
            _parse_time(key[RETIRE_MEMBER], where)
        _import(key, path)
    return data


def _import(key: dict[str, Any], path: Path) -> OKPKey:
    params = {k: v for k, v in key.items() if k != RETIRE_MEMBER}
    try:
        return OKPKey.import_key(params)
    except (JoseError, ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: kid {key.get('kid')}: not a valid key ({exc})") from None


def _write_private(path: Path, jwk_set: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        json.dump(jwk_set, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _retired(key: dict[str, Any], now: dt.datetime) -> bool:
    at = key.get(RETIRE_MEMBER)
    return at is not None and _parse_time(at, "key") <= now


def _parse_time(value: Any, where: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise KeyFileError(f"{where}: {RETIRE_MEMBER} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise KeyFileError(f"{where}: {RETIRE_MEMBER} needs a time zone")
    return parsed


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
