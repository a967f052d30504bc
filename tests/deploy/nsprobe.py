"""One network probe, run inside a test namespace (`ip netns exec NS python nsprobe.py KIND ...`); prints JSON."""

from __future__ import annotations

import argparse
import json
import socket
import urllib.error
import urllib.request

import dns.message
import dns.query
import dns.rdatatype


def probe_dns(server: str, name: str, tcp: bool, timeout: float) -> dict:
    q = dns.message.make_query(name, "A")
    try:
        r = (dns.query.tcp if tcp else dns.query.udp)(q, server, port=53, timeout=timeout)
    except dns.exception.Timeout:
        return {"result": "timeout"}
    except OSError as exc:
        return {"result": "error", "why": str(exc)}
    soa = [str(rr.mname).rstrip(".") for rrset in r.authority if rrset.rdtype == dns.rdatatype.SOA for rr in rrset]
    return {"result": "answer", "rcode": dns.rcode.to_text(r.rcode()), "soa": soa,
            "answers": [rr.to_text() for rrset in r.answer for rr in rrset]}


def probe_connect(host: str, port: int, timeout: float) -> dict:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return {"result": "open"}
    except ConnectionRefusedError:
        return {"result": "refused"}
    except TimeoutError:
        return {"result": "timeout"}
    except OSError as exc:
        return {"result": "error", "why": str(exc)}


def probe_quic(host: str, port: int, timeout: float) -> dict:
    from gateway.doctor import is_version_negotiation, quic_probe_payload

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(quic_probe_payload())
        try:
            data = s.recv(2048)
        except TimeoutError:
            return {"result": "timeout"}
        except ConnectionRefusedError:
            return {"result": "refused"}
    return {"result": "answer", "version_negotiation": bool(is_version_negotiation(data))}


def probe_http(url: str, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return {"result": "answer", "status": r.status, "body": r.read(200).decode("utf-8", "replace")}
    except urllib.error.HTTPError as exc:
        return {"result": "answer", "status": exc.code}
    except urllib.error.URLError as exc:
        reason = exc.reason
        kind = "refused" if isinstance(reason, ConnectionRefusedError) else \
            "timeout" if isinstance(reason, TimeoutError) else "error"
        return {"result": kind, "why": str(reason)}
    except TimeoutError:
        return {"result": "timeout"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("dns", "dns-tcp", "connect", "quic", "http"))
    p.add_argument("target")
    p.add_argument("arg", nargs="?")
    p.add_argument("--timeout", type=float, default=1.5)
    a = p.parse_args()
    if a.kind in ("dns", "dns-tcp"):
        out = probe_dns(a.target, a.arg, a.kind == "dns-tcp", a.timeout)
    elif a.kind == "connect":
        out = probe_connect(a.target, int(a.arg), a.timeout)
    elif a.kind == "quic":
        out = probe_quic(a.target, int(a.arg), a.timeout)
    else:
        out = probe_http(a.target, a.timeout)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
