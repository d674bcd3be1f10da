"""Sealed messages of the platform contract: JWS (Ed25519) inside JWE (ECDH-ES/X25519, A256GCM).

A pure codec, no I/O: the caller hands in keys and text. Sealing signs the
UTF-8 JSON body with the sender's Ed25519 key (protected header exactly
``{"alg":"Ed25519","kid":…}``) and encrypts the JWS compact text to the
receiver's X25519 key (protected header exactly
``{"alg":"ECDH-ES","enc":"A256GCM","kid":…,"cty":"JWT"}`` plus the ephemeral
``epk``). Opening checks every header field before any cryptography runs and
accepts only the algorithms above, so a message cannot downgrade itself.

Errors never carry message content, only what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwe import JWERegistry
from joserfc.jwk import KeySet, OKPKey
from joserfc.jws import JWSRegistry

from agent.contract.limits import MAX_PACKET_BYTES

SIG_ALG = "Ed25519"
KEY_ALG = "ECDH-ES"
CONTENT_ENC = "A256GCM"
CONTENT_TYPE = "JWT"
DEFAULT_MAX_BYTES = 1_048_576

_JWS_REGISTRY = JWSRegistry(algorithms=[SIG_ALG])
# joserfc's default caps (64 kB ciphertext, 128 kB JWS payload) are below what the
# contract carries (a grant with its guests' photos); the bound that applies is
# the whole message's size, checked before anything is parsed.
_JWE_REGISTRY = JWERegistry(algorithms=[KEY_ALG, CONTENT_ENC])
# A command a little over the payload limit is still opened (to answer it too_large).
_JWE_REGISTRY.max_ciphertext_length = MAX_PACKET_BYTES
_JWS_REGISTRY.max_payload_length = MAX_PACKET_BYTES
_JWE_HEADER_KEYS = frozenset({"alg", "enc", "kid", "cty", "epk"})
_JWS_HEADER_KEYS = frozenset({"alg", "kid"})


class SealError(Exception):
    """A message could not be sealed or opened; the text says why (never the content)."""

    reason = "sealed message invalid"


class SealTooLarge(SealError):
    """The sealed text (or the body to seal) exceeds the size limit."""

    reason = "oversized"


class SealFormatError(SealError):
    """Not a JWE compact text with exactly the contract's header."""

    reason = "malformed"


class SealDecryptError(SealError):
    """Encrypted to a key we do not hold, or the ciphertext was altered."""

    reason = "undecryptable"


class SealSignatureError(SealError):
    """The inner JWS is malformed, signed by an unpinned key, or does not verify."""

    reason = "bad_signature"


class SealBodyError(SealError):
    """The signed payload is not a UTF-8 JSON object."""

    reason = "bad_body"


@dataclass(frozen=True)
class Opened:
    """A verified message: its body, the signed JWS text (kept for re-verification), its signer."""

    body: dict[str, Any]
    jws_compact: str
    signer_kid: str


def encode_body(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the exact bytes that get signed."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def seal(
    body: dict[str, Any],
    signing_key: OKPKey,
    recipient_key: OKPKey,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> str:
    """Sign ``body`` with ``signing_key`` (Ed25519) and encrypt it to ``recipient_key`` (X25519)."""
    sig_kid = _kid_of(signing_key, "Ed25519", "signing key", private=True)
    enc_kid = _kid_of(recipient_key, "X25519", "recipient key", private=False)
    try:
        payload = encode_body(body)
    except (TypeError, ValueError) as exc:
        raise SealBodyError(f"body is not JSON-serialisable: {type(exc).__name__}") from None
    signed = jws.serialize_compact(
        {"alg": SIG_ALG, "kid": sig_kid}, payload, signing_key, registry=_JWS_REGISTRY
    )
    text = jwe.encrypt_compact(
        {"alg": KEY_ALG, "enc": CONTENT_ENC, "kid": enc_kid, "cty": CONTENT_TYPE},
        signed,
        recipient_key,
        registry=_JWE_REGISTRY,
    )
    if len(text) > max_bytes:
        raise SealTooLarge(f"sealed message is {len(text)} bytes, limit {max_bytes}")
    return text


def open_sealed(
    jwe_text: str | bytes,
    decryption_keys: KeySet,
    verify_keys: KeySet,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Opened:
    """Decrypt with one of ``decryption_keys`` (by ``kid``), verify with a pinned key, parse."""
    if len(jwe_text) > max_bytes:
        raise SealTooLarge(f"sealed message is {len(jwe_text)} bytes, limit {max_bytes}")
    if isinstance(jwe_text, bytes):
        try:
            jwe_text = jwe_text.decode("ascii")
        except UnicodeDecodeError:
            raise SealFormatError("sealed message is not ASCII") from None
    parts = jwe_text.split(".")
    if len(parts) != 5:
        raise SealFormatError(f"JWE compact text has {len(parts)} parts, expected 5")
    header = _json_segment(parts[0], "JWE header", SealFormatError)
    _check_jwe_header(header)
    if parts[1] != "":
        raise SealFormatError("JWE encrypted key must be empty for ECDH-ES")
    key = _find(decryption_keys, header["kid"], "X25519")
    if key is None:
        raise SealDecryptError("JWE kid is not one of our decryption keys")
    try:
        decrypted = jwe.decrypt_compact(jwe_text, key, registry=_JWE_REGISTRY)
    except (JoseError, ValueError, TypeError, binascii.Error) as exc:
        raise SealDecryptError(f"JWE did not decrypt ({type(exc).__name__})") from None
    inner = decrypted.plaintext
    if inner is None:
        raise SealDecryptError("JWE has no plaintext")
    try:
        jws_text = inner.decode("ascii")
    except UnicodeDecodeError:
        raise SealSignatureError("inner JWS is not ASCII") from None
    body, kid = verify_jws(jws_text, verify_keys)
    return Opened(body=body, jws_compact=jws_text, signer_kid=kid)


def verify_jws(jws_text: str, verify_keys: KeySet) -> tuple[dict[str, Any], str]:
    """Verify a JWS compact text with a pinned Ed25519 key; return (body, signer kid).

    Used when opening a message and again whenever a stored signed grant is used.
    """
    parts = jws_text.split(".")
    if len(parts) != 3:
        raise SealSignatureError(f"JWS compact text has {len(parts)} parts, expected 3")
    header = _json_segment(parts[0], "JWS header", SealSignatureError)
    if set(header) != _JWS_HEADER_KEYS:
        raise SealSignatureError(
            f"JWS header must have exactly alg, kid; has {', '.join(sorted(header))}"
        )
    if header["alg"] != SIG_ALG:
        raise SealSignatureError(f"JWS alg must be {SIG_ALG}")
    kid = header["kid"]
    if not isinstance(kid, str):
        raise SealSignatureError("JWS kid must be a string")
    key = _find(verify_keys, kid, "Ed25519")
    if key is None:
        raise SealSignatureError("JWS signed by a key that is not pinned")
    try:
        obj = jws.deserialize_compact(jws_text, key, registry=_JWS_REGISTRY)
    except (JoseError, ValueError, TypeError, binascii.Error) as exc:
        raise SealSignatureError(f"JWS signature does not verify ({type(exc).__name__})") from None
    try:
        body = json.loads(obj.payload.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SealBodyError(f"signed payload is not UTF-8 JSON: {_short(exc)}") from None
    if not isinstance(body, dict):
        raise SealBodyError("signed payload is not a JSON object")
    return body, kid


def _check_jwe_header(header: dict[str, Any]) -> None:
    if set(header) != _JWE_HEADER_KEYS:
        raise SealFormatError(
            "JWE header must have exactly alg, enc, kid, cty, epk; has "
            + ", ".join(sorted(map(str, header)))
        )
    for name, want in (("alg", KEY_ALG), ("enc", CONTENT_ENC), ("cty", CONTENT_TYPE)):
        if header[name] != want:
            raise SealFormatError(f"JWE {name} must be {want}")
    if not isinstance(header["kid"], str):
        raise SealFormatError("JWE kid must be a string")
    epk = header["epk"]
    if not (isinstance(epk, dict) and epk.get("kty") == "OKP" and epk.get("crv") == "X25519"):
        raise SealFormatError("JWE epk must be an OKP X25519 public key")
    if "d" in epk:
        raise SealFormatError("JWE epk must not hold a private part")


def _find(keys: KeySet, kid: str, curve: str) -> OKPKey | None:
    for key in keys.keys:
        if key.kid == kid and isinstance(key, OKPKey) and key.curve_name == curve:
            return key
    return None


def _kid_of(key: OKPKey, curve: str, what: str, *, private: bool) -> str:
    if not isinstance(key, OKPKey) or key.curve_name != curve:
        raise SealError(f"{what} must be an OKP {curve} key")
    if private and not key.is_private:
        raise SealError(f"{what} must hold its private part")
    if not key.kid:
        raise SealError(f"{what} has no kid")
    return key.kid


def _json_segment(segment: str, what: str, error: type[SealError]) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise error(f"{what} is not base64url JSON: {_short(exc)}") from None
    if not isinstance(value, dict):
        raise error(f"{what} is not a JSON object")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"duplicate member {name!r}")
        out[name] = value
    return out


def _short(exc: Exception) -> str:
    # json errors quote a position, not content; keep only the first line anyway.
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
