"""Sealed messages: exact headers, interop with a second JOSE library, every way to fail."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import KeySet, OKPKey
from jwcrypto import jwe as cjwe
from jwcrypto import jwk as cjwk
from jwcrypto import jws as cjws

from agent.contract.keys import new_key
from agent.contract.seal import (
    SealBodyError,
    SealDecryptError,
    SealError,
    SealFormatError,
    SealSignatureError,
    SealTooLarge,
    open_sealed,
    seal,
    verify_jws,
)
from firmware_sim.platform import open_jw, seal_jw

BODY = {"v": 1, "type": "ping", "body": {"name": "张三"}}


def _segment(text: str, index: int) -> dict[str, Any]:
    part = text.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _public(key: OKPKey) -> OKPKey:
    return OKPKey.import_key(key.as_dict(private=False))


@pytest.fixture
def keys() -> dict[str, OKPKey]:
    return {"sig": new_key("Ed25519"), "enc": new_key("X25519")}


def _open(text: str | bytes, keys: dict[str, OKPKey], **kw: Any) -> Any:
    return open_sealed(text, KeySet([keys["enc"]]), KeySet([_public(keys["sig"])]), **kw)


def test_round_trip_with_exact_contract_headers(keys: dict[str, OKPKey]) -> None:
    text = seal(BODY, keys["sig"], _public(keys["enc"]))
    header = _segment(text, 0)
    assert set(header) == {"alg", "enc", "kid", "cty", "epk"}
    assert (header["alg"], header["enc"], header["cty"]) == ("ECDH-ES", "A256GCM", "JWT")
    assert header["kid"] == keys["enc"].kid
    assert header["epk"]["crv"] == "X25519" and "d" not in header["epk"]
    assert text.split(".")[1] == ""  # ECDH-ES direct: no encrypted key
    opened = _open(text, keys)
    assert opened.body == BODY
    assert opened.signer_kid == keys["sig"].kid
    assert _segment(opened.jws_compact, 0) == {"alg": "Ed25519", "kid": keys["sig"].kid}
    assert "张三" not in text and "name" not in text  # nothing readable on the wire


def test_jwcrypto_opens_what_joserfc_seals_and_back() -> None:
    gw_sig, gw_enc = new_key("Ed25519"), new_key("X25519")
    pf_sig = cjwk.JWK.generate(kty="OKP", crv="Ed25519", kid="pf-sig")
    pf_enc = cjwk.JWK.generate(kty="OKP", crv="X25519", kid="pf-enc")
    to_platform = seal(BODY, gw_sig, OKPKey.import_key(json.loads(pf_enc.export_public())))
    got = open_jw(to_platform, pf_enc, {str(gw_sig.kid): cjwk.JWK(**gw_sig.as_dict(private=False))})
    assert got == BODY
    to_gateway = seal_jw(BODY, pf_sig, cjwk.JWK(**gw_enc.as_dict(private=False)))
    opened = open_sealed(
        to_gateway,
        KeySet([gw_enc]),
        KeySet([OKPKey.import_key(json.loads(pf_sig.export_public()))]),
    )
    assert opened.body == BODY and opened.signer_kid == "pf-sig"


def test_several_kids_pinned_for_rotation(keys: dict[str, OKPKey]) -> None:
    old_sig, old_enc = new_key("Ed25519"), new_key("X25519")
    text = seal(BODY, old_sig, _public(old_enc))
    opened = open_sealed(
        text,
        KeySet([keys["enc"], old_enc]),
        KeySet([_public(keys["sig"]), _public(old_sig)]),
    )
    assert opened.signer_kid == old_sig.kid


def test_unknown_signer_is_refused(keys: dict[str, OKPKey]) -> None:
    text = seal(BODY, new_key("Ed25519"), _public(keys["enc"]))
    with pytest.raises(SealSignatureError, match="not pinned"):
        _open(text, keys)


def test_signer_with_a_pinned_kid_but_another_key_is_refused(keys: dict[str, OKPKey]) -> None:
    impostor = OKPKey.import_key(
        new_key("Ed25519").as_dict(private=True) | {"kid": str(keys["sig"].kid)}
    )
    text = seal(BODY, impostor, _public(keys["enc"]))
    with pytest.raises(SealSignatureError, match="does not verify"):
        _open(text, keys)


@pytest.mark.parametrize("part", [2, 3, 4])
def test_tampered_iv_ciphertext_or_tag_does_not_decrypt(keys: dict[str, OKPKey], part: int) -> None:
    parts = seal(BODY, keys["sig"], _public(keys["enc"])).split(".")
    raw = bytearray(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    raw[0] ^= 0x80
    parts[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(SealDecryptError):
        _open(".".join(parts), keys)


def test_tampered_protected_header_does_not_decrypt(keys: dict[str, OKPKey]) -> None:
    parts = seal(BODY, keys["sig"], _public(keys["enc"])).split(".")
    header = _segment(".".join(parts), 0)
    header["epk"]["x"] = new_key("X25519").as_dict(private=False)["x"]
    parts[0] = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(SealDecryptError):
        _open(".".join(parts), keys)


def test_encrypted_to_another_key_is_refused(keys: dict[str, OKPKey]) -> None:
    text = seal(BODY, keys["sig"], _public(new_key("X25519")))
    with pytest.raises(SealDecryptError, match="not one of our decryption keys"):
        _open(text, keys)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"alg": "ECDH-ES+A256KW"}, "alg must be ECDH-ES"),
        ({"enc": "A128CBC-HS256"}, "enc must be A256GCM"),
        ({"cty": "json"}, "cty must be JWT"),
        ({"zip": "DEF"}, "exactly alg, enc, kid, cty, epk"),
    ],
)
def test_header_downgrades_are_refused_before_decryption(
    keys: dict[str, OKPKey], change: dict[str, str], message: str
) -> None:
    parts = seal(BODY, keys["sig"], _public(keys["enc"])).split(".")
    header = _segment(".".join(parts), 0) | change
    parts[0] = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(SealFormatError, match=message):
        _open(".".join(parts), keys)


def test_eddsa_alg_name_is_refused(keys: dict[str, OKPKey]) -> None:
    signer = cjwk.JWK(**keys["sig"].as_dict(private=True))
    jws = cjws.JWS(json.dumps(BODY).encode())
    jws.add_signature(
        signer, alg="EdDSA", protected=json.dumps({"alg": "EdDSA", "kid": signer.get("kid")})
    )
    with pytest.raises(SealSignatureError, match="alg must be Ed25519"):
        verify_jws(jws.serialize(compact=True), KeySet([_public(keys["sig"])]))


def test_payload_that_is_not_an_object_is_refused(keys: dict[str, OKPKey]) -> None:
    pf_enc = cjwk.JWK(**keys["enc"].as_dict(private=False))
    signer = cjwk.JWK(**keys["sig"].as_dict(private=True))
    for payload, message in ((b"[1,2]", "not a JSON object"), (b'{"a":1,"a":2}', "duplicate")):
        jws = cjws.JWS(payload)
        jws.add_signature(
            signer,
            alg="Ed25519",
            protected=json.dumps({"alg": "Ed25519", "kid": signer.get("kid")}),
        )
        header = {"alg": "ECDH-ES", "enc": "A256GCM", "kid": keys["enc"].kid, "cty": "JWT"}
        token = cjwe.JWE(
            jws.serialize(compact=True).encode(), protected=json.dumps(header), recipient=pf_enc
        )
        with pytest.raises(SealBodyError, match=message):
            _open(token.serialize(compact=True), keys)


def test_size_limit_on_both_sides(keys: dict[str, OKPKey]) -> None:
    big = {"pad": "x" * 5000}
    with pytest.raises(SealTooLarge):
        seal(big, keys["sig"], _public(keys["enc"]), max_bytes=4096)
    text = seal(big, keys["sig"], _public(keys["enc"]))
    with pytest.raises(SealTooLarge, match="limit 4096"):
        _open(text, keys, max_bytes=4096)


@pytest.mark.parametrize(
    "junk",
    [b"", b"\xff\xfe", b"a.b.c.d.e", b"not-a-jwe", b"....", "é.a.b.c.d".encode()],
)
def test_garbage_is_a_format_error(keys: dict[str, OKPKey], junk: bytes) -> None:
    with pytest.raises(SealFormatError):
        _open(junk, keys)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_input_fails_only_with_a_seal_error(junk: bytes) -> None:
    keys = {"sig": _KEYS[0], "enc": _KEYS[1]}
    with pytest.raises(SealError):
        _open(junk, keys)


_KEYS = (new_key("Ed25519"), new_key("X25519"))


def test_errors_never_quote_the_content(keys: dict[str, OKPKey]) -> None:
    secret = "110105194912310021"
    junk = base64.urlsafe_b64encode(json.dumps({"id": secret}).encode()).decode() + ".x.y.z.w"
    with pytest.raises(SealError) as info:
        _open(junk, keys)
    assert secret not in str(info.value)
