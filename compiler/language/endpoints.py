"""Endpoint addresses as the language writes them (`host:port`; E0307): IPv4, bracketed IPv6 or an
RFC 1123 DNS name, and a port of 1-65535."""

from __future__ import annotations

import re

# At most 253 characters: a first label, then the others after dots (and maybe a final dot).
_DNS_NAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")
_IPV4ISH = re.compile(r"[0-9.]+\Z")
# A dotted IPv4 address as `ipaddress` accepts it (no leading zeros): decided without importing
# and calling it, which is most of the time of checking a fleet's endpoints (compiled on first use).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_TEXT = rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z"


def parse_endpoint(text: str) -> tuple[str, int] | None:
    """`host:port` with an IPv4 address, `[IPv6]` or a DNS name; None when malformed."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not is_ip(host) or ":" not in host:
            return None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host or ":" in host:
            return None  # an IPv6 address needs brackets
        if _IPV4ISH.match(host):
            if not is_ip(host):
                return None  # 256.1.1.1 is neither an address nor a name
        elif not _DNS_NAME.match(host):
            return None
    if not (port.isascii() and port.isdigit()) or len(port) > 5 or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def is_ip(host: str) -> bool:
    """An IP address (IPv6 without brackets), as opposed to a DNS name."""
    if re.match(_IPV4_TEXT, host):   # (re caches the compiled pattern)
        return True
    import ipaddress  # only endpoints pay for it

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def discovery(hosts) -> str:
    """How a proxy finds a set of endpoints: `static` when every host is an IP address, else
    `dns` (resolved, and re-resolved, by the proxy)."""
    return "static" if all(is_ip(h) for h in hosts) else "dns"


OTLP_PATH = "/v1/traces"   # the OTLP/HTTP traces path, when an `otlp` URL names none


def parse_otlp_url(text: str) -> tuple[str, int, str] | None:
    """`http://HOST:PORT[/PATH]` (the `otlp` of `tracing`): host, port and path (OTLP_PATH when
    none is written); None when it is not a plain http URL with a host and a port."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme != "http":
        return None
    slash = rest.find("/")
    authority, path = (rest, OTLP_PATH) if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority or any(c in path for c in "?# \t") or "//" in path:
        return None
    endpoint = parse_endpoint(authority)
    if endpoint is None:
        return None
    return endpoint[0], endpoint[1], path if path != "/" else OTLP_PATH
