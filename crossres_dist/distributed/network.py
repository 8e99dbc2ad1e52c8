"""Which interface reaches the rendezvous: the kernel's own choice for a packet to it (a
connected UDP socket; nothing is sent), handed to gloo and NCCL; and the launchers' question,
``python -m crossres_dist.distributed route HOST``."""

from __future__ import annotations

import os
import socket
import sys
import threading
from dataclasses import dataclass

from crossres_dist.errors import LaunchError


@dataclass(frozen=True)
class Route:
    """How this host reaches the rendezvous host: the interface and the address it leaves from."""

    host: str
    address: str  # the rendezvous host's address
    interface: str
    local_address: str
    is_local: bool  # the rendezvous host is this host


def interface_addresses() -> dict[str, str]:
    """Every IPv4 interface of this host and its address (Linux's SIOCGIFADDR)."""
    import fcntl
    import struct

    found = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue  # no IPv4 address on it
            found[name] = socket.inet_ntoa(packed[20:24])
    return found


def resolve(host: str, timeout_s: float = 10.0) -> str:
    """The IPv4 address of `host`, or a LaunchError within `timeout_s` (a resolver that does
    not answer must not hold the job)."""
    answer: list = []

    def lookup():
        try:
            answer.append(socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0])
        except (OSError, UnicodeError) as err:
            answer.append(err)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not answer:
        raise LaunchError(f"rendezvous host {host!r} did not resolve within {timeout_s:.0f} s")
    if isinstance(answer[0], BaseException):
        raise LaunchError(
            f"rendezvous host {host!r} does not resolve ({answer[0]}); give its address"
        )
    return answer[0]


def route_to(host: str, port: int = 9) -> Route:
    """The interface whose address routes to `host`: the kernel's own choice for a packet to
    it (a connected UDP socket sends nothing). Refused in one line when no interface does."""
    address = resolve(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((address, port))
        except OSError as err:
            raise LaunchError(
                f"rendezvous host {host} ({address}): no interface of {socket.gethostname()} "
                f"reaches it ({err.strerror}); check the address, or the network this host is on"
            ) from None
        local = s.getsockname()[0]
    interfaces = interface_addresses()
    name = next((n for n, a in interfaces.items() if a == local), "lo")
    return Route(host, address, name, local, address in interfaces.values() or local == address)


def choose_interface(master_addr: str) -> str:
    """Point gloo and NCCL at the interface that reaches the rendezvous host, unless the user
    named one (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME). Left alone, both take the address the
    host name resolves to: on many clusters a management address that the other nodes cannot
    reach, or a container bridge. Returns what was chosen, for the log."""
    named = {v: os.environ[v] for v in SOCKET_IFNAME_VARS if os.environ.get(v)}
    if named:
        return ", ".join(f"{k}={v}" for k, v in named.items()) + " (as set)"
    route = route_to(master_addr)
    for variable in SOCKET_IFNAME_VARS:
        os.environ[variable] = route.interface
    return f"{route.interface} {route.local_address} (routes to {master_addr})"


SOCKET_IFNAME_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def main(argv: list[str] | None = None) -> int:
    """``python -m crossres_dist.distributed route HOST``: ``INTERFACE LOCAL_ADDRESS IS_LOCAL``
    (the launchers' one answer to "which of my addresses do the other nodes reach")."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "route":
        print("usage: python -m crossres_dist.distributed route HOST", file=sys.stderr)
        return 2
    try:
        route = route_to(args[1])
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(route.interface, route.local_address, "1" if route.is_local else "0")
    return 0
