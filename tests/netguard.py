"""A guard on the socket module for the no-outbound tests: every name lookup and every connection
that is not to a loopback address is recorded and refused, as a network that is not there would
refuse it (libraries that catch the error and carry on, as tldextract does, are still caught by
the record).

Guarded: ``socket.getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``, ``gethostbyaddr``,
``create_connection`` and ``socket.socket.connect`` / ``connect_ex`` (asyncio, kafka-python,
aiokafka, httpx, aiohttp and requests all connect through these). Allowed: loopback addresses and
names, Unix sockets, and the passive lookups of a server binding (host None, "", 0.0.0.0, ::).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_BIND_HOSTS = {None, "", "0.0.0.0", "::"}


def _host(host: Any) -> Any:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    return host.strip("[]").split("%")[0] if isinstance(host, str) else host


def is_loopback(host: Any) -> bool:
    host = _host(host)
    if not isinstance(host, str):
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetGuard:
    def __init__(self) -> None:
        self.attempts: list[str] = []
        self._saved: dict[tuple[Any, str], Any] = {}

    def _refuse(self, what: str) -> None:
        self.attempts.append(what)

    def install(self) -> NetGuard:
        guard = self
        real_getaddrinfo = socket.getaddrinfo
        real_byname = socket.gethostbyname
        real_byname_ex = socket.gethostbyname_ex
        real_byaddr = socket.gethostbyaddr
        real_create = socket.create_connection
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex

        def getaddrinfo(host, port, *args, **kwargs):
            if _host(host) in _BIND_HOSTS or is_loopback(host):
                return real_getaddrinfo(host, port, *args, **kwargs)
            guard._refuse(f"getaddrinfo {host!r}:{port}")
            raise socket.gaierror(socket.EAI_NONAME, "name lookups are not allowed here")

        def by_name(real):
            def lookup(name, *args):
                if is_loopback(name):
                    return real(name, *args)
                guard._refuse(f"{real.__name__} {name!r}")
                raise socket.gaierror(socket.EAI_NONAME, "name lookups are not allowed here")

            return lookup

        def address_ok(sock, address) -> bool:
            if getattr(sock, "family", None) == getattr(socket, "AF_UNIX", None) or not isinstance(address, tuple):
                return True
            return is_loopback(address[0])

        def connect(sock, address):
            if address_ok(sock, address):
                return real_connect(sock, address)
            guard._refuse(f"connect {address!r}")
            raise OSError(errno.ENETUNREACH, "connections are not allowed here")

        def connect_ex(sock, address):
            if address_ok(sock, address):
                return real_connect_ex(sock, address)
            guard._refuse(f"connect_ex {address!r}")
            return errno.ENETUNREACH

        def create_connection(address, *args, **kwargs):
            if is_loopback(address[0]):
                return real_create(address, *args, **kwargs)
            guard._refuse(f"create_connection {address!r}")
            raise OSError(errno.ENETUNREACH, "connections are not allowed here")

        replacements = {
            (socket, "getaddrinfo"): getaddrinfo,
            (socket, "gethostbyname"): by_name(real_byname),
            (socket, "gethostbyname_ex"): by_name(real_byname_ex),
            (socket, "gethostbyaddr"): by_name(real_byaddr),
            (socket, "create_connection"): create_connection,
            (socket.socket, "connect"): connect,
            (socket.socket, "connect_ex"): connect_ex,
        }
        for (owner, name), fn in replacements.items():
            self._saved[(owner, name)] = owner.__dict__.get(name, _MISSING)
            setattr(owner, name, fn)
        return self

    def uninstall(self) -> None:
        for (owner, name), original in self._saved.items():
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._saved.clear()


_MISSING = object()
