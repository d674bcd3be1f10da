"""The Nuki Smart Lock Bluetooth API: codec, pairing, session and the family driver."""

from .codec import NukiCodecError
from .driver import NukiDriver, NukiFamily, to_status
from .pairing import Credentials, Pairing, PairingError
from .session import Session, SessionError

__all__ = [
    "Credentials",
    "NukiCodecError",
    "NukiDriver",
    "NukiFamily",
    "Pairing",
    "PairingError",
    "Session",
    "SessionError",
    "to_status",
]
