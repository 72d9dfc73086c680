"""The nftables rules that keep the instances' uids off this host and off private networks.

Installed once at start, as root, for the whole uid range (one table, replaced on every start);
DNS to the configured resolvers stays allowed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

PRIVATE_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
"""Special-purpose IPv4 (RFC 6890): this network, private, shared (CGNAT), loopback,
link-local, protocol assignments, benchmarking, multicast, reserved. (Not the documentation
ranges: never routed on the internet, but some sandboxes put their package mirrors there.)"""
PRIVATE_V6 = (
    "::/127",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)
"""Special-purpose IPv6: unspecified and loopback, IPv4-mapped, NAT64 (both prefixes embed
IPv4 addresses), discard, Teredo and 6to4 (which embed IPv4 too), documentation, unique
local, link-local, multicast."""


def _nameservers() -> list[str]:
    servers = []
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                servers.append(parts[1].split("%")[0])
    return servers


def firewall_rules(uid_first: int, uid_last: int) -> str:
    """nftables rules: the instances' uids reach no address of this host and no private,
    loopback or link-local network; DNS to the configured resolvers stays allowed."""
    table = f"ember_{uid_first}"
    uids = f"{uid_first}-{uid_last}"
    reject = "reject with icmpx admin-prohibited"
    dns = []
    for server in _nameservers():
        family = "ip6" if ":" in server else "ip"
        for proto in ("udp", "tcp"):
            dns.append(f"meta skuid {uids} {family} daddr {server} {proto} dport 53 accept")
    lines = [
        f"table inet {table} {{}}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  chain output {",
        "    type filter hook output priority 0; policy accept;",
        *(f"    {rule}" for rule in dns),
        f"    meta skuid {uids} fib daddr type {{ local, broadcast, multicast }} {reject}",
        f"    meta skuid {uids} ip daddr {{ {', '.join(PRIVATE_V4)} }} {reject}",
        f"    meta skuid {uids} ip6 daddr {{ {', '.join(PRIVATE_V6)} }} {reject}",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def install_firewall(uid_first: int, uid_last: int) -> str:
    """Install the rules (idempotent: the table is replaced). '' when done, else why not."""
    nft = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None
    )
    if nft is None:
        return "the nft command (package nftables) is not installed"
    try:
        result = subprocess.run(
            [nft, "-f", "-"],
            input=firewall_rules(uid_first, uid_last),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nft failed: {exc}"
    if result.returncode != 0:
        return f"nft refused the rules: {result.stderr.strip()[:300]}"
    return ""
