"""lockgw: the gateway agent (configuration, store, link, grants, door decisions)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lockgw")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+src"
