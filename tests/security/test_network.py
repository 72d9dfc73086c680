"""Where an instance may connect: not to loopback, this host or private networks, no
listening, only loopback with `--network none`, and only Internet, Unix and netlink sockets
(attack 8 of docs/security.md)."""

from __future__ import annotations

import socket
import textwrap

import psutil
import pytest

from tests.security.conftest import TRY, Platform

pytestmark = [pytest.mark.timeout(120)]


# -- 8. the network ------------------------------------------------------------------------------


def test_8_no_loopback_or_private_address_and_no_listening(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            out = {}
            for host, port in event["targets"]:
                out[f"{host}:{port}"] = attempt(
                    lambda: socket.create_connection((host, port), timeout=2))
            def serve():
                s = socket.socket()
                s.bind(("0.0.0.0", 8099))
                s.listen()
            out["listen"] = attempt(serve)
            out["dns"] = attempt(lambda: socket.getaddrinfo(event["name"], 443)[0][4][0])
            return out
    """)
    port = int(platform.url.rsplit(":", 1)[1])
    targets = [
        ("127.0.0.1", port),
        ("127.0.0.1", 5432),
        ("127.0.0.1", 6379),
        ("127.0.0.1", 5672),
        ("::1", port),
        ("10.0.0.1", 80),
        ("192.168.1.1", 80),
        ("169.254.169.254", 80),
    ]
    targets += [
        (a.address, port)
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family.name == "AF_INET" and not a.address.startswith("127.")
    ]
    try:  # a name this host resolves through its resolver (not /etc/hosts)
        name = "pypi.org"
        socket.getaddrinfo(name, 443)
    except OSError:
        name = ""
    seen = platform.attack("net", source, {"targets": targets, "name": name or "localhost"})
    if name:
        assert seen["dns"].startswith("succeeded"), seen  # the resolver stays reachable
    for target, outcome in seen.items():
        if target not in ("listen", "dns"):
            # Rejected by the firewall: EHOSTUNREACH (IPv4) or EACCES (IPv6), never connected.
            assert "No route to host" in outcome or "Permission denied" in outcome, (
                target,
                outcome,
            )
    assert seen["listen"].startswith("failed: PermissionError"), seen
    platform.healthy()


def test_8b_network_none_has_only_loopback(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            def loop():
                server = socket.socket()
                server.bind(("127.0.0.1", 0))
                server.listen()
                socket.create_connection(server.getsockname(), timeout=2)
                return "own loopback works"
            return {"out": attempt(lambda: socket.create_connection(("1.1.1.1", 53), 2)),
                    "gateway": attempt(lambda: socket.create_connection(
                        ("127.0.0.1", event["port"]), 2)),
                    "loop": attempt(loop)}
    """)
    port = int(platform.url.rsplit(":", 1)[1])
    seen = platform.attack("offline", source, {"port": port}, network="none")
    assert "Network is unreachable" in seen["out"], seen
    assert seen["gateway"].startswith("failed: ConnectionRefusedError"), seen  # its own lo
    assert seen["loop"] == "succeeded: 'own loopback works'", seen
    platform.healthy()


# -- found by a hostile review: socket families ----------------------------------------------------


def test_only_internet_unix_and_netlink_sockets(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            libc = ctypes.CDLL(None, use_errno=True)

            def raw_socket(family, kind, protocol):
                fd = libc.syscall(41, ctypes.c_long(family), ctypes.c_long(kind),
                                  ctypes.c_long(protocol))
                if fd < 0:
                    raise OSError(ctypes.get_errno(), "socket")
                os.close(fd)

            return {"diag high bits": attempt(lambda: raw_socket(16, 3, (1 << 32) | 4)),
                    "unix high bits": attempt(lambda: raw_socket((1 << 32) | 1, 1, 0)),
                    "vsock": attempt(lambda: socket.socket(40, socket.SOCK_STREAM)),
                    "alg": attempt(lambda: socket.socket(38, socket.SOCK_SEQPACKET)),
                    "sock_diag": attempt(lambda: socket.socket(16, socket.SOCK_DGRAM, 4)),
                    "route": attempt(lambda: socket.socket(16, socket.SOCK_DGRAM, 0).close()),
                    "tcp": attempt(lambda: socket.socket().close())}
    """)
    for network in ("egress", "none"):
        seen = platform.attack(f"families-{network}", source, network=network)
        assert seen["vsock"].startswith("failed: OSError: [Errno 97]"), seen  # EAFNOSUPPORT
        assert seen["alg"].startswith("failed: OSError: [Errno 97]"), seen
        assert seen["sock_diag"].startswith("failed: PermissionError"), seen
        # the kernel reads ints' low 32 bits: so does the filter
        assert seen["diag high bits"].startswith("failed: PermissionError"), seen
        if network == "egress":
            assert seen["unix high bits"].startswith("failed: PermissionError"), seen
        assert seen["route"] == "succeeded: None", seen  # getaddrinfo needs it
        assert seen["tcp"] == "succeeded: None", seen
    platform.healthy()
