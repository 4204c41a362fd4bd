"""One definition of the addresses FaceMoment binds or connects to.

Frames come from a ZeroMQ address (``tcp://host:port``, ``ipc:///path``,
``inproc://name``).  Text messages (TRIG, OBS) go to a ZeroMQ address too, or, for
TRIG, to a Unix datagram socket, ``unix:///path``, the other transport visualbase
ships (its ``ingest --trig-socket``).  Every place that takes an address checks it
here, so the rules and the error messages are the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

ZMQ_SCHEMES = ("tcp", "ipc", "inproc")
UNIX_SCHEME = "unix"


class AddressError(ValueError):
    """An address that cannot be used; the message says what would be right."""


@dataclass(frozen=True)
class Address:
    scheme: str  # tcp | ipc | inproc | unix
    rest: str  # what follows "scheme://"
    text: str  # the address as given

    @property
    def is_zmq(self) -> bool:
        return self.scheme in ZMQ_SCHEMES

    @property
    def path(self) -> str:
        """The socket file of an ``ipc://`` or ``unix://`` address."""
        return self.rest


def _check_tcp(rest: str, text: str, what: str) -> None:
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise AddressError(f"{what} address {text!r} must look like tcp://host:port")
    if port == "*":
        return
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise AddressError(f"{what} address {text!r}: port {port!r} is not a number from 1 to 65535 (or *)")


def parse_address(text: str, what: str = "ZeroMQ", unix: bool = False) -> Address:
    """Check ``text`` and split it; ``unix`` also allows ``unix:///path`` datagram sockets.

    ``what`` names the address in the error ("frame publisher", "TRIG", ...).
    Raises :class:`AddressError`.
    """
    text = (text or "").strip()
    schemes = ZMQ_SCHEMES + ((UNIX_SCHEME,) if unix else ())
    shapes = "tcp://host:port, ipc:///path" + (" or unix:///path" if unix else "")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in schemes:
        raise AddressError(f"{what} address {text!r} must look like {shapes}")
    if not rest:
        raise AddressError(f"{what} address {text!r} names no endpoint; expected {shapes}")
    if scheme == "tcp":
        _check_tcp(rest, text, what)
    if scheme == UNIX_SCHEME and not rest.startswith("/"):
        raise AddressError(f"{what} address {text!r} must name an absolute path: unix:///path/to/socket")
    return Address(scheme, rest, text)


def zmq_address(text: str, what: str = "ZeroMQ") -> str:
    """``text`` when it is a usable ZeroMQ address; raises :class:`AddressError`."""
    return parse_address(text, what).text


__all__ = ["Address", "AddressError", "ZMQ_SCHEMES", "UNIX_SCHEME", "parse_address", "zmq_address"]
