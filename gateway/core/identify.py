"""Client address -> client group: the most specific configured subnet wins."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Served by default when the school names no `serve` list: private, loopback and link-local space,
# so the gateway answers its own LAN but is never an open resolver on a public address.
DEFAULT_SERVE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
              "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10")
)


class _PrefixTable:
    """Per-family longest-prefix match: one dict per prefix length, longest first."""

    __slots__ = ("_levels",)

    def __init__(self, pairs: Iterable[tuple[Network, str]]):
        by_len: dict[int, dict[int, str]] = {}
        for net, value in pairs:
            by_len.setdefault(net.prefixlen, {})[int(net.network_address)] = value
        self._levels = tuple(sorted(((plen, table) for plen, table in by_len.items()), reverse=True))

    def lookup(self, value: int, bits: int) -> str | None:
        for plen, table in self._levels:
            mask = ((1 << plen) - 1) << (bits - plen) if plen else 0
            found = table.get(value & mask)
            if found is not None:
                return found
        return None


class Classifier:
    """Maps a client address to its group id, the unknown-client group, or None (not served)."""

    def __init__(self, groups: Iterable[tuple[Network, str]], serve: Iterable[Network] = (),
                 unknown_group: str | None = None):
        groups = list(groups)
        self._v4 = _PrefixTable((n, g) for n, g in groups if n.version == 4)
        self._v6 = _PrefixTable((n, g) for n, g in groups if n.version == 6)
        serve = list(serve) or list(DEFAULT_SERVE)
        marker = "\0served"
        self._serve4 = _PrefixTable((n, marker) for n in serve if n.version == 4)
        self._serve6 = _PrefixTable((n, marker) for n in serve if n.version == 6)
        self.unknown_group = unknown_group

    def classify(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        try:
            ip = address if not isinstance(address, str) else ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        value = int(ip)
        if ip.version == 4:
            found = self._v4.lookup(value, 32)
            served = found is not None or self._serve4.lookup(value, 32) is not None
        else:
            found = self._v6.lookup(value, 128)
            served = found is not None or self._serve6.lookup(value, 128) is not None
        if found is not None:
            return found
        return self.unknown_group if served else None
