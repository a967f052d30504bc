"""Run in the "outside" namespace: a resolver that answers every name, open DoT/HTTPS ports, QUIC endpoints."""

# UDP and TCP 53 answer any A/AAAA query with netlab's OUTSIDE_ANSWER (so a reply that reaches a client
# unchanged proves DNS went around the gateway); TCP 853 and 443 accept connections; UDP 443 and 853
# answer any QUIC long-header packet with a Version Negotiation packet, as a real QUIC server does.

from __future__ import annotations

import signal
import socket
import struct
import threading

from dnslib import AAAA, QTYPE, RR, A, DNSRecord
from netlab import OUTSIDE_ANSWER4, OUTSIDE_ANSWER6  # beside this script, so on sys.path


def answer(data: bytes) -> bytes | None:
    try:
        query = DNSRecord.parse(data)
    except Exception:
        return None
    reply = query.reply()
    if query.q.qtype == QTYPE.A:
        reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(OUTSIDE_ANSWER4), ttl=60))
    elif query.q.qtype == QTYPE.AAAA:
        reply.add_answer(RR(query.q.qname, QTYPE.AAAA, rdata=AAAA(OUTSIDE_ANSWER6), ttl=60))
    return reply.pack()


def udp_dns(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(4096)
        out = answer(data)
        if out:
            sock.sendto(out, peer)


def tcp_serve(sock: socket.socket, dns: bool) -> None:
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=tcp_conn, args=(conn, dns), daemon=True).start()


def tcp_conn(conn: socket.socket, dns: bool) -> None:
    with conn:
        conn.settimeout(5)
        try:
            while dns:
                head = conn.recv(2)
                if len(head) < 2:
                    return
                data = b""
                while len(data) < struct.unpack("!H", head)[0]:
                    data += conn.recv(65535)
                out = answer(data) or b""
                conn.sendall(struct.pack("!H", len(out)) + out)
            conn.recv(1)
        except OSError:
            return


def quic(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(2048)
        if len(data) < 7 or not data[0] & 0x80:
            continue
        dcid_len = data[5]
        dcid = data[6:6 + dcid_len]
        scid_len = data[6 + dcid_len]
        scid = data[7 + dcid_len:7 + dcid_len + scid_len]
        # Version Negotiation (RFC 9000 §17.2.1): version 0, the client's IDs swapped, our versions.
        vn = bytes([0x80]) + b"\x00\x00\x00\x00" + bytes([len(scid)]) + scid + bytes([len(dcid)]) + dcid
        sock.sendto(vn + struct.pack("!I", 1), peer)


def bound(family: int, kind: int, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(64)
    return sock


def main() -> None:
    jobs = []
    for family in (socket.AF_INET, socket.AF_INET6):
        jobs += [(udp_dns, bound(family, socket.SOCK_DGRAM, 53)),
                 (lambda s: tcp_serve(s, True), bound(family, socket.SOCK_STREAM, 53)),
                 (lambda s: tcp_serve(s, False), bound(family, socket.SOCK_STREAM, 853)),
                 (lambda s: tcp_serve(s, False), bound(family, socket.SOCK_STREAM, 443)),
                 (quic, bound(family, socket.SOCK_DGRAM, 853)),
                 (quic, bound(family, socket.SOCK_DGRAM, 443))]
    for run, sock in jobs:
        threading.Thread(target=run, args=(sock,), daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("outside ready", flush=True)
    stop.wait()


if __name__ == "__main__":
    main()
