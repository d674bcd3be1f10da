"""Template enrolment: each guest's grant photo encoded once, the template kept sealed.

Templates name their model; when the site's ``[face] model`` changes, every
template of another model is re-encoded from the photo inside the sealed signed
grant (the photo is never written anywhere else), and the old template serves
until the new one is made, so no guest is left without one."""

from __future__ import annotations

import logging
from typing import Protocol

from agent.grants.store import GrantStore

log = logging.getLogger(__name__)

# How long one enrolment may take the face worker, at the door (a guest waits) or ahead of
# time; a timeout leaves the guest pending, tried again by the periodic job.
ENROL_TIMEOUT_S = 5.0
# Worker answers that say "try again later", not "this photo has no usable face".
TRANSIENT_FACE_REASONS = frozenset({"busy", "worker_starting", "timeout"})


class TemplateEncoder(Protocol):
    """What enrolment needs of the face worker."""

    @property
    def model(self) -> str:
        """The name of the face model whose templates it makes."""
        ...

    def encode_reference(self, image: bytes, timeout: float) -> bytes | str:
        """A template from a photo, or the reason there is none."""
        ...


def enroll_template(
    grants: GrantStore,
    face: TemplateEncoder,
    grant_id: str,
    guest_id: str,
    timeout: float = ENROL_TIMEOUT_S,
) -> bytes | None:
    """Encode the guest's grant photo once and keep the template sealed (blocking).

    A photo without a usable face is marked failed, with the reason; a busy or
    restarting worker leaves the guest pending (keeping any template of an
    earlier model meanwhile), to be tried again.
    """
    photo = grants.guest_photo(grant_id, guest_id)
    if photo is None:
        grants.store_template(grant_id, guest_id, None, "no_photo")
        return None
    made = face.encode_reference(photo, timeout)
    if isinstance(made, bytes):
        grants.store_template(grant_id, guest_id, made, "ok", face.model)
        return made
    if str(made) in TRANSIENT_FACE_REASONS:
        grants.store_template(grant_id, guest_id, None, "pending")
    else:
        grants.store_template(grant_id, guest_id, None, f"failed:{made}")
        log.warning(
            "grant photo gives no face template", extra={"grant_id": grant_id, "reason": str(made)}
        )
    return None


def enroll_pending(grants: GrantStore, face: TemplateEncoder) -> int:
    """Enrol every guest still waiting for a template, and re-encode every template of
    another model from its sealed signed grant (blocking); how many were made."""
    grants.requeue_other_models(face.model)
    made = 0
    for grant_id, guest_id in grants.pending_templates():
        if enroll_template(grants, face, grant_id, guest_id) is not None:
            made += 1
    return made
