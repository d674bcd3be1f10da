"""The platform simulator's identity-service stand-in: short-lived, single-use codes."""

from __future__ import annotations

import base64

import cv2
import numpy as np

from firmware_sim.identity_service import IdentityService, SimIdentity

PERSON = SimIdentity("测试", "1", "01", "19900307", "310104199003071238")


def jpeg_b64() -> str:
    ok, enc = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    return base64.b64encode(enc.tobytes()).decode()


def test_a_code_verifies_once() -> None:
    service = IdentityService()
    code = service.issue(PERSON)
    first = service.verify(code, jpeg_b64())
    assert (first.status, first.identity) == ("verified", PERSON)
    assert service.verify(code, jpeg_b64()).error == "code_used"


def test_expired_unknown_faceless_and_failing() -> None:
    now = [1000.0]
    service = IdentityService(lifetime_s=60, clock=lambda: now[0])
    code = service.issue(PERSON)
    now[0] += 61
    assert service.verify(code, jpeg_b64()).error == "code_expired"
    assert service.verify("CTID1.nope", jpeg_b64()).error == "code_unknown"
    assert service.verify(service.issue(PERSON), "not base64!").error == "face_missing"
    service.mode = "failing"
    assert service.verify(service.issue(PERSON), jpeg_b64()).status == "failed"
    assert service.counters == {
        "code_expired": 1,
        "code_unknown": 1,
        "face_missing": 1,
        "service_error": 1,
    }


def test_modes_shape_the_answer_delay() -> None:
    service = IdentityService(delay_s=4.0)
    assert service.answer_delay() == 0.0
    service.mode = "slow"
    assert service.answer_delay() == 4.0
    service.mode = "unreachable"
    assert service.answer_delay() is None
