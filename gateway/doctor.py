"""`school-gateway doctor`: the self-check school IT runs after install — a vi/en checklist, a fix per failure."""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.i18n import register, tr

if TYPE_CHECKING:
    from dnslib import DNSRecord

    from gateway.core.snapshot import Snapshot
    from gateway.errors import Problem
    from gateway.policy.compile import PolicyPaths
    from gateway.settings import Settings

DEFAULT_CONFIG = Path("/etc/school-gateway/gateway.yaml")
RULES_FILE = Path("/etc/school-gateway/nftables.nft")  # installed by deploy/ansible
NFT_TABLE = "school_gateway"
DEFAULT_PROBE_TARGETS = ("1.1.1.1",)  # a public resolver that also serves DoT, DoH and HTTP/3
DEFAULT_BLOCKED_NAME = "pornhub.com"  # in the shipped mandatory `adult` list, so blocked for every band
EXPIRY_WARN_DAYS = 3
# RFC 9000 §15 reserves versions 0x?a?a?a?a: a QUIC server answers them with a Version Negotiation
# packet (§6), so a reply proves UDP to that port gets through, without a TLS handshake.
QUIC_GREASE_VERSION = 0x1A2A3A4A
QUIC_MIN_DATAGRAM = 1200  # servers ignore smaller client Initials (§14.1)
BLOCK_EDE = (15, 16, 17)  # RFC 8914 Blocked, Censored, Filtered

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
ICONS = {PASS: "✓", FAIL: "✗", WARN: "!", SKIP: "–"}

register({
    "doctor.heading": ("Tự kiểm tra school-gateway — {config}", "school-gateway self-check — {config}"),
    "doctor.heading_client": ("Kiểm tra từ phía máy học sinh: có đi vòng được bộ lọc không?",
                              "Check from a client's side: can the filter be bypassed?"),
    "doctor.embedded": ("cấu hình mặc định có sẵn (không có --config)", "embedded default configuration (no --config)"),
    "doctor.fix": ("Cách sửa", "Fix"),
    "doctor.summary_ok": ("Tất cả {count} mục đều đạt.", "All {count} checks passed."),
    "doctor.summary_failed": ("{failed} trong {count} mục KHÔNG đạt — làm theo «Cách sửa» ở từng mục rồi chạy lại.",
                              "{failed} of {count} checks FAILED — follow the «Fix» under each, then run again."),
    "doctor.status.pass": ("ĐẠT", "PASS"),
    "doctor.status.fail": ("LỖI", "FAIL"),
    "doctor.status.warn": ("CHÚ Ý", "WARN"),
    "doctor.status.skip": ("BỎ QUA", "SKIP"),
    # configuration
    "doctor.config.title": ("Tệp cấu hình đọc được", "Configuration file reads"),
    "doctor.config.ok": ("{path} hợp lệ", "{path} is valid"),
    "doctor.config.failed": ("{path} có {count} lỗi:\n{problems}", "{path} has {count} error(s):\n{problems}"),
    "doctor.config.fix": ("sửa các dòng được nêu ở trên trong {path}, rồi chạy lại 'school-gateway doctor'",
                          "fix the lines named above in {path}, then run 'school-gateway doctor' again"),
    # policy
    "doctor.policy.title": ("Chính sách biên dịch được", "Policy compiles"),
    "doctor.policy.ok": ("phiên bản {version}, dấu vân tay {fingerprint}, {groups} nhóm máy, {entries} tên miền "
                         "trong danh sách, {warnings} cảnh báo",
                         "version {version}, fingerprint {fingerprint}, {groups} client groups, {entries} listed "
                         "names, {warnings} warning(s)"),
    "doctor.policy.failed": ("{count} lỗi:\n{problems}", "{count} error(s):\n{problems}"),
    "doctor.policy.fix": ("sửa tệp của trường rồi kiểm tra lại bằng 'school-gateway validate {school}'",
                          "fix the school file, then check it with 'school-gateway validate {school}'"),
    # listeners
    "doctor.listen.title": ("Gateway trả lời DNS ở {address}", "The gateway answers DNS on {address}"),
    "doctor.listen.ok": ("UDP và TCP đều trả lời (hỏi {target})", "UDP and TCP both answer (asked {target})"),
    "doctor.listen.failed": ("không trả lời qua {protocols} (hỏi {target})",
                             "no answer over {protocols} (asked {target})"),
    "doctor.listen.fix": (
        "xem 'systemctl status school-gateway' và 'journalctl -u school-gateway -n 50'; nếu cổng {port} bị chương "
        "trình khác giữ (systemd-resolved, dnsmasq) thì xem 'ss -lunp sport = :{port}'",
        "see 'systemctl status school-gateway' and 'journalctl -u school-gateway -n 50'; if another program holds "
        "port {port} (systemd-resolved, dnsmasq) see 'ss -lunp sport = :{port}'"),
    # upstreams
    "doctor.upstream.title": ("Máy chủ DNS cấp trên {upstream} trả lời", "Upstream resolver {upstream} answers"),
    "doctor.upstream.ok": ("trả lời sau {ms} ms ({rcode})", "answered in {ms} ms ({rcode})"),
    "doctor.upstream.failed": ("không dùng được: {why}", "not usable: {why}"),
    "doctor.upstream.fix": (
        "kiểm tra địa chỉ trong dns.upstreams của {config}; kiểm tra máy này ra được Internet và tường lửa của "
        "trường cho phép máy này (không phải học sinh) gửi DNS tới {host} cổng {port}",
        "check the address in dns.upstreams of {config}; check that this box reaches the Internet and that the "
        "school's firewall lets this box (not the pupils) send DNS to {host} port {port}"),
    "doctor.upstream.none": ("không có máy chủ nào: đặt dns.upstreams trong {config}",
                             "none configured: set dns.upstreams in {config}"),
    # metrics
    "doctor.metrics.title": ("Trang số liệu {url} trả lời", "The metrics page {url} answers"),
    "doctor.metrics.ok": ("{size} byte", "{size} bytes"),
    "doctor.metrics.failed": ("không đọc được: {why}", "cannot be read: {why}"),
    "doctor.metrics.fix": ("xem 'journalctl -u school-gateway -n 50' và metrics.listen trong {config}",
                           "see 'journalctl -u school-gateway -n 50' and metrics.listen in {config}"),
    "doctor.metrics.fix_forbidden": (
        "thêm 127.0.0.1/32 và ::1/128 vào metrics.allow trong {config} (bên cạnh địa chỉ máy thu thập của Sở)",
        "add 127.0.0.1/32 and ::1/128 to metrics.allow in {config} (beside the Department scraper's address)"),
    "doctor.metrics.disabled": ("metrics.enabled: no trong {config}", "metrics.enabled: no in {config}"),
    "doctor.metrics.mtls": ("cần chứng chỉ máy khách (TLS hai chiều): hãy kiểm tra từ máy thu thập của Sở",
                            "needs a client certificate (mutual TLS): check from the Department's scraper"),
    # running policy
    "doctor.current.title": ("Gateway đang chạy đúng chính sách hiện tại",
                             "The running gateway serves the current policy"),
    "doctor.current.ok": ("đang chạy {fingerprint} ({version})", "running {fingerprint} ({version})"),
    "doctor.current.failed": ("đang chạy {running}, nhưng các tệp hiện tại cho {expected}",
                              "running {running}, but the files on disk compile to {expected}"),
    "doctor.current.fix": (
        "nạp lại: 'systemctl reload school-gateway'; nếu vẫn vậy, chính sách mới có lỗi và gateway giữ chính sách cũ: "
        "xem 'journalctl -u school-gateway -n 50'",
        "reload it: 'systemctl reload school-gateway'; if that does not help, the new policy has an error and the "
        "gateway keeps the old one: see 'journalctl -u school-gateway -n 50'"),
    "doctor.current.unknown": ("cần /metrics để so sánh", "needs /metrics to compare"),
    "doctor.current.missing": ("/metrics không có schoolgw_policy_info: gateway chưa nạp chính sách",
                               "/metrics has no schoolgw_policy_info: the gateway has not loaded a policy"),
    # single source
    "doctor.source.title": ("Truy vấn đến thẳng từ các máy (không qua một bộ định tuyến chuyển tiếp)",
                            "Queries come from the devices themselves (not relayed by one router)"),
    "doctor.source.ok": ("truy vấn đến từ nhiều địa chỉ", "queries come from many addresses"),
    "doctor.source.relays": ("truy vấn qua bộ định tuyến đã khai báo trong dns.relays (cố ý)",
                             "queries come through the router listed in dns.relays (on purpose)"),
    "doctor.source.failed": (
        "gần như mọi truy vấn đến từ một địa chỉ: bộ định tuyến đang chuyển tiếp DNS nên gateway không phân biệt "
        "được nhóm tuổi", "almost every query comes from one address: a router relays DNS, so the gateway cannot "
        "tell age bands apart"),
    "doctor.source.fix": (
        "trong DHCP của bộ định tuyến, đặt máy chủ DNS là địa chỉ cố định của gateway thay cho địa chỉ bộ định "
        "tuyến (docs/install.vi.md, «Trỏ DHCP về gateway»)",
        "in the router's DHCP settings, hand out the gateway's fixed address as the DNS server instead of the "
        "router's own (docs/install.en.md, «Point DHCP at the gateway»)"),
    # clock
    "doctor.clock.title": ("Đồng hồ hệ thống đã đồng bộ (NTP)", "The system clock is synchronised (NTP)"),
    "doctor.clock.ok": ("đã đồng bộ", "synchronised"),
    "doctor.clock.failed": (
        "chưa đồng bộ: các hạn chế theo giờ học luôn được áp dụng (để an toàn) và hạn của gói chính sách không "
        "kiểm tra được", "not synchronised: time restrictions are always in force (the safe side) and bundle "
        "expiry cannot be checked"),
    "doctor.clock.fix": (
        "'timedatectl set-ntp true', rồi xem 'timedatectl timesync-status'; tường lửa phải cho máy này ra cổng "
        "UDP 123; Raspberry Pi không có pin đồng hồ nên cần mạng khi khởi động",
        "'timedatectl set-ntp true', then see 'timedatectl timesync-status'; the firewall must let this box out on "
        "UDP port 123; a Raspberry Pi has no clock battery, so it needs the network at boot"),
    # bundle
    "doctor.bundle.title": ("Gói chính sách của Sở: chữ ký và hạn dùng", "Department bundle: signature and expiry"),
    "doctor.bundle.ok": ("phiên bản {version}, khoá {key_id}, còn {days} ngày (hết hạn {expires})",
                         "version {version}, key {key_id}, {days} days left (expires {expires})"),
    "doctor.bundle.soon": ("sắp hết hạn: còn {days} ngày (hết hạn {expires})",
                           "expires soon: {days} days left (expires {expires})"),
    "doctor.bundle.expired": ("đã hết hạn {expires}: gateway vẫn dùng gói này (an toàn) nhưng báo «cũ» cho Sở",
                              "expired {expires}: the gateway keeps enforcing it (the safe side) but reports it stale"),
    "doctor.bundle.none": ("chưa có gói nào trong {dir}: đang dùng chính sách mặc định đi kèm",
                           "no bundle installed in {dir}: the shipped default policy is in force"),
    "doctor.bundle.bad_signature": ("chữ ký của {path} không khớp khoá tin cậy nào",
                                    "the signature of {path} matches no trusted key"),
    "doctor.bundle.damaged": ("gói {version} bị hỏng: {why}", "bundle {version} is damaged: {why}"),
    "doctor.bundle.unreadable": ("không đọc được {path}: {why}", "cannot read {path}: {why}"),
    "doctor.bundle.fix": (
        "chạy 'school-gateway update --once --config {config}' và đọc thông báo; kiểm tra updater.mirrors và "
        "updater.trusted_keys (khoá công khai Sở cấp) trong {config}",
        "run 'school-gateway update --once --config {config}' and read what it says; check updater.mirrors and "
        "updater.trusted_keys (the Department's public key) in {config}"),
    "doctor.bundle.off": ("không có mục updater: trong {config}", "no updater: section in {config}"),
    "doctor.bundle.unavailable": ("mô-đun cập nhật chưa được cài: {why}", "the updater module is not installed: {why}"),
    # firewall
    "doctor.firewall.title": ("Luật tường lửa nftables của gateway đã nạp", "The gateway's nftables rules are loaded"),
    "doctor.firewall.ok": ("bảng inet {table} đang hoạt động", "table inet {table} is active"),
    "doctor.firewall.failed": ("bảng inet {table} chưa được nạp: {why}", "table inet {table} is not loaded: {why}"),
    "doctor.firewall.fix": ("'systemctl restart school-gateway-firewall'; xem lỗi bằng 'nft -c -f {rules}'",
                            "'systemctl restart school-gateway-firewall'; see errors with 'nft -c -f {rules}'"),
    "doctor.firewall.no_rules": ("không có {rules} (không cài bằng Ansible)", "no {rules} (not installed by Ansible)"),
    "doctor.firewall.no_nft": ("cần quyền root và lệnh nft", "needs root and the nft command"),
    # client-side probes
    "doctor.probe.dns_udp.title": ("DNS (UDP 53) tới {target} không đi vòng được bộ lọc",
                                   "DNS (UDP 53) to {target} cannot bypass the filter"),
    "doctor.probe.dns_tcp.title": ("DNS (TCP 53) tới {target} không đi vòng được bộ lọc",
                                   "DNS (TCP 53) to {target} cannot bypass the filter"),
    "doctor.probe.dot.title": ("DNS-over-TLS (TCP 853) tới {target} bị chặn",
                               "DNS-over-TLS (TCP 853) to {target} is blocked"),
    "doctor.probe.doq.title": ("DNS-over-QUIC (UDP 853) tới {target} bị chặn",
                               "DNS-over-QUIC (UDP 853) to {target} is blocked"),
    "doctor.probe.quic.title": ("QUIC / HTTP/3 (UDP 443) tới {target} bị chặn",
                                "QUIC / HTTP/3 (UDP 443) to {target} is blocked"),
    "doctor.probe.redirected": ("bị chuyển về gateway: {name} được trả lời là bị chặn",
                                "redirected to the gateway: {name} came back blocked"),
    "doctor.probe.dropped": ("không có trả lời trong {seconds} giây (bị bỏ)", "no answer within {seconds} s (dropped)"),
    "doctor.probe.rejected": ("bị từ chối ({why})", "rejected ({why})"),
    "doctor.probe.answered": ("máy chủ bên ngoài trả lời {name} → {answer}: DNS đi vòng qua bộ lọc",
                              "the outside server answered {name} → {answer}: DNS goes around the filter"),
    "doctor.probe.open": ("{target} trả lời ({why}): cổng này ra ngoài được",
                          "{target} answered ({why}): this port is open"),
    "doctor.probe.fix_dns": (
        "chặn hoặc chuyển hướng DNS (UDP và TCP 53) từ mạng học sinh ra ngoài, chỉ cho gateway; mô hình (a): "
        "'systemctl restart school-gateway-firewall'; mô hình (b): thêm luật trên bộ định tuyến (docs/install.vi.md)",
        "drop or redirect DNS (UDP and TCP 53) from the pupils' networks to the outside, allowing only the gateway; "
        "topology (a): 'systemctl restart school-gateway-firewall'; topology (b): add the rule on the school router "
        "(docs/install.en.md)"),
    "doctor.probe.fix_853": ("chặn cổng 853 (TCP và UDP) đi ra từ mạng học sinh",
                             "drop port 853 (TCP and UDP) going out from the pupils' networks"),
    "doctor.probe.fix_quic": ("chặn UDP 443 đi ra từ mạng học sinh (trình duyệt tự chuyển sang HTTPS qua TCP)",
                              "drop UDP 443 going out from the pupils' networks (browsers fall back to TCP)"),
    "doctor.probe.unavailable": ("không chạy được phép thử: {why}", "cannot run the probes: {why}"),
    "doctor.probe.fix_unavailable": ("cài scapy ('/opt/school-gateway/bin/pip install scapy') và chạy bằng sudo",
                                     "install scapy ('/opt/school-gateway/bin/pip install scapy') and run with sudo"),
    # readiness
    "doctor.ready.ok": ("school-gateway trả lời DNS ở {addresses}", "school-gateway answers DNS on {addresses}"),
    "doctor.ready.timeout": ("school-gateway chưa trả lời DNS ở {addresses} sau {seconds} giây",
                             "school-gateway does not answer DNS on {addresses} after {seconds} s"),
    "doctor.config_only.ok": ("{path}: cấu hình và chính sách hợp lệ", "{path}: settings and policy are valid"),
})


@dataclass
class Check:
    """One line of the checklist: what was checked, how it went, and (when it did not pass) how to fix it."""

    id: str
    status: str
    title: str
    detail: str = ""
    fix: str = ""


class Doctor:
    """The checklist in one language; every check adds its own line, so one failure never hides the rest."""

    def __init__(self, lang: str, timeout: float = 2.0) -> None:
        self.lang = lang
        self.timeout = timeout
        self.checks: list[Check] = []

    def add(self, cid: str, status: str, title: str, detail_key: str | None = None, fix_key: str | None = None,
            **args: object) -> Check:
        lang = self.lang
        check = Check(cid, status, tr(title, lang, **args), tr(detail_key, lang, **args) if detail_key else "",
                      tr(fix_key, lang, **args) if fix_key and status in (FAIL, WARN) else "")
        self.checks.append(check)
        return check

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)


# ---- DNS on the wire (dnslib only: doctor runs on the box, where dnspython is not installed) ----

def _query(name: str, qtype: str = "A") -> tuple[int, bytes]:
    from dnslib import DNSRecord

    q = DNSRecord.question(name, qtype)
    q.header.id = secrets.randbelow(65536)
    return q.header.id, q.pack()


def ask(host: str, port: int, name: str, qtype: str = "A", *, tcp: bool = False,
        timeout: float = 2.0) -> DNSRecord:
    """Send one query; the parsed reply (dnslib DNSRecord), or raise OSError/TimeoutError/ValueError."""
    from dnslib import DNSRecord

    qid, packet = _query(name, qtype)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    if tcp:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(packet)) + packet)
            data = _recv_exact(s, 2, deadline)
            reply = _recv_exact(s, struct.unpack("!H", data)[0], deadline)
        return DNSRecord.parse(reply)
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host, port))  # a connected socket only sees replies from the address it asked
        s.send(packet)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            s.settimeout(left)
            data = s.recv(65535)
            if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == qid:
                return DNSRecord.parse(data)


def _recv_exact(s: socket.socket, size: int, deadline: float) -> bytes:
    out = b""
    while len(out) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        s.settimeout(left)
        chunk = s.recv(size - len(out))
        if not chunk:
            raise ConnectionError("connection closed")
        out += chunk
    return out


def local_target(host: str) -> str:
    """Where to reach a listener from this box: a wildcard listener is asked on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _probe_name() -> str:
    from gateway.dns.stages.local import PROBE_ZONE

    # Answered by the gateway itself (never forwarded), so a listener check does not depend on upstreams.
    return f"doctor-{secrets.token_hex(4)}.{PROBE_ZONE}"


def listener_answers(host: str, port: int, tcp: bool, timeout: float) -> bool:
    try:
        ask(local_target(host), port, _probe_name(), tcp=tcp, timeout=timeout)
        return True
    except Exception:  # any reply at all means the listener is up; anything else means it is not
        return False


def blocked_answer(reply, blockpage: tuple[str, ...] = ()) -> bool:
    """Does this reply carry the gateway's block marks: its synthetic SOA, EDE Blocked, a null or block-page address?"""
    from dnslib import QTYPE

    from gateway.dns.answers import SOA_MNAME

    for rr in reply.auth:
        if rr.rtype == QTYPE.SOA and str(rr.rdata.mname).rstrip(".").lower() == SOA_MNAME:
            return True
    for rr in reply.rr:
        if rr.rtype in (QTYPE.A, QTYPE.AAAA) and (str(rr.rdata) in ("0.0.0.0", "::") or str(rr.rdata) in blockpage):
            return True
    for rr in reply.ar:
        if rr.rtype == QTYPE.OPT:
            for option in rr.rdata or ():
                data = getattr(option, "data", b"") or b""
                if getattr(option, "code", None) == 15 and len(data) >= 2 and \
                        struct.unpack("!H", data[:2])[0] in BLOCK_EDE:
                    return True
    return False


def _answer_text(reply) -> str:
    from dnslib import RCODE

    values = [str(rr.rdata) for rr in reply.rr]
    return ", ".join(values) if values else RCODE.get(reply.header.rcode)


# ---- the box's own checks ----

def load(config: Path | None) -> tuple[Settings | None, list[Problem]]:
    """(Settings, problems): problems is a list of rendered lines when the file does not load."""
    from gateway.errors import ConfigError
    from gateway.settings import defaults, load_settings

    if config is None:
        return defaults(), []
    try:
        return load_settings(config), []
    except ConfigError as exc:
        return None, exc.problems


def policy_paths(settings: Settings) -> PolicyPaths:
    """The policy the running gateway compiles: an installed Department bundle if there is one, else the
    configured files. No cache directory: the doctor must not write where the service does."""
    from gateway.app import policy_paths as app_paths
    from gateway.policy.compile import PolicyPaths

    paths = app_paths(settings)
    updater = getattr(settings, "updater", None)
    if updater is not None:
        try:
            from gateway.updater.layer import policy_paths as bundle_paths
            from gateway.updater.store import BundleStore
        except ImportError:
            pass
        else:
            folder = BundleStore(updater.state_dir).current_dir()
            if folder is not None and (folder / "policies" / "department").is_dir():
                return bundle_paths(folder / "policies" / "department", settings.policy.school, None)
    return PolicyPaths(paths.department, paths.school, None, paths.display_root)


def check_config(doc: Doctor, config: Path | None) -> Settings | None:
    settings, problems = load(config)
    path = str(config) if config else tr("doctor.embedded", doc.lang)
    if settings is None:
        doc.add("config", FAIL, "doctor.config.title", "doctor.config.failed", "doctor.config.fix", path=path,
                count=len(problems), problems="\n".join("  " + p.render(doc.lang) for p in problems))
        return None
    from gateway.app import upstream_specs
    from gateway.errors import GatewayError

    try:
        upstream_specs(settings)  # the same refusal `run` makes: an upstream that is this gateway itself
    except (GatewayError, ValueError) as exc:
        doc.add("config", FAIL, "doctor.config.title", "doctor.config.failed", "doctor.config.fix", path=path,
                count=1, problems=f"  {exc}")
        return None
    doc.add("config", PASS, "doctor.config.title", "doctor.config.ok", path=path)
    return settings


def check_policy(doc: Doctor, settings: Settings) -> Snapshot | None:
    from gateway.errors import ConfigError
    from gateway.policy.compile import load_policy

    paths = policy_paths(settings)
    try:
        snap = load_policy(paths)
    except ConfigError as exc:
        doc.add("policy", FAIL, "doctor.policy.title", "doctor.policy.failed", "doctor.policy.fix",
                count=len(exc.problems), school=settings.policy.school,
                problems="\n".join("  " + p.render(doc.lang) for p in exc.problems))
        return None
    doc.add("policy", PASS, "doctor.policy.title", "doctor.policy.ok", version=snap.version,
            fingerprint=snap.fingerprint[:16], groups=len(snap.groups), entries=len(snap.index),
            warnings=len(snap.warnings))
    return snap


def check_listeners(doc: Doctor, settings: Settings) -> None:
    for listen in settings.dns.listen:
        target = local_target(listen.host)
        shown = f"[{target}]:{listen.port}" if ":" in target else f"{target}:{listen.port}"
        missing = [proto for proto, tcp in (("UDP", False), ("TCP", True))
                   if not listener_answers(listen.host, listen.port, tcp, doc.timeout)]
        if missing:
            doc.add(f"listen:{listen}", FAIL, "doctor.listen.title", "doctor.listen.failed", "doctor.listen.fix",
                    address=str(listen), target=shown, protocols=" + ".join(missing), port=listen.port)
        else:
            doc.add(f"listen:{listen}", PASS, "doctor.listen.title", "doctor.listen.ok", address=str(listen),
                    target=shown, port=listen.port)


async def _ask_upstream(spec, timeout: float) -> tuple[bytes, float]:
    from gateway.dns.stages.policy import lookup_packet
    from gateway.dns.upstream import Upstreams
    from gateway.dns.wire import name_to_wire

    # The gateway's own transport code (UDP with TCP fallback, DoT with certificate checks), so this
    # check sees exactly what the gateway would.
    upstreams = Upstreams([spec], timeout=timeout, attempts=1)
    started = time.monotonic()
    try:
        return await upstreams.query(lookup_packet(name_to_wire("."), 2, False)), time.monotonic() - started
    finally:
        await upstreams.close()


def check_upstreams(doc: Doctor, settings: Settings, config: str) -> None:
    from dnslib import RCODE, DNSRecord

    from gateway.dns.upstream import UpstreamSpec
    from gateway.settings import system_resolvers

    texts = list(settings.dns.upstreams) or system_resolvers()
    if not texts:
        doc.add("upstream", FAIL, "doctor.upstream.title", "doctor.upstream.none", "doctor.upstream.none",
                upstream="-", config=config)
        return
    for text in texts:
        args = {"upstream": text, "config": config, "host": text, "port": 53}
        try:
            spec = UpstreamSpec.parse(text)
            args.update(upstream=str(spec), host=spec.host, port=spec.port)
            packet, took = asyncio.run(_ask_upstream(spec, max(doc.timeout, 0.5)))
            rcode = DNSRecord.parse(packet).header.rcode
        except Exception as exc:  # every way an upstream can fail is a failed check, never a crash
            doc.add(f"upstream:{text}", FAIL, "doctor.upstream.title", "doctor.upstream.failed", "doctor.upstream.fix",
                    why=str(exc) or type(exc).__name__, **args)
            continue
        if rcode in (RCODE.NOERROR, RCODE.NXDOMAIN):
            doc.add(f"upstream:{text}", PASS, "doctor.upstream.title", "doctor.upstream.ok", ms=round(took * 1000),
                    rcode=RCODE.get(rcode), **args)
        else:
            doc.add(f"upstream:{text}", FAIL, "doctor.upstream.title", "doctor.upstream.failed",
                    "doctor.upstream.fix", why=RCODE.get(rcode), **args)


def fetch_metrics(settings: Settings, timeout: float) -> tuple[str | None, str, str]:
    """(exposition text or None, URL, why it failed / which fix applies)."""
    m = settings.metrics
    host = local_target(m.host)
    scheme = "https" if m.tls else "http"
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{m.port}/metrics"
    request = urllib.request.Request(url)
    if m.basic_auth:
        token = base64.b64encode(f"{m.basic_auth[0]}:{m.basic_auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = None
    if m.tls:
        # This box asking itself on loopback: its certificate names the box, not 127.0.0.1, so it is
        # not verified here. The Department's scraper verifies it.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.read().decode("utf-8", "replace"), url, ""
    except urllib.error.HTTPError as exc:
        return None, url, f"HTTP {exc.code}" + (" forbidden" if exc.code == 403 else "")
    except (OSError, ValueError) as exc:
        return None, url, str(getattr(exc, "reason", exc))


def samples(text: str, name: str) -> list[tuple[dict, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


def check_metrics(doc: Doctor, settings: Settings, snap: Snapshot | None, config: str) -> None:
    m = settings.metrics
    if not m.enabled:
        doc.add("metrics", SKIP, "doctor.metrics.title", "doctor.metrics.disabled", url="/metrics", config=config)
        for cid, title in (("policy_current", "doctor.current.title"), ("single_source", "doctor.source.title")):
            doc.add(cid, SKIP, title, "doctor.current.unknown")
        return
    if m.tls and m.tls.get("client_ca"):
        doc.add("metrics", SKIP, "doctor.metrics.title", "doctor.metrics.mtls", url=f"https://{m.host}:{m.port}")
        return
    text, url, why = fetch_metrics(settings, max(doc.timeout, 2.0))
    if text is None:
        fix = "doctor.metrics.fix_forbidden" if "403" in why else "doctor.metrics.fix"
        doc.add("metrics", FAIL, "doctor.metrics.title", "doctor.metrics.failed", fix, url=url, why=why,
                config=config)
        doc.add("policy_current", SKIP, "doctor.current.title", "doctor.current.unknown")
        doc.add("single_source", SKIP, "doctor.source.title", "doctor.current.unknown")
        return
    doc.add("metrics", PASS, "doctor.metrics.title", "doctor.metrics.ok", url=url, size=len(text.encode()))
    running = [labels for labels, value in samples(text, "schoolgw_policy_info") if value >= 1]
    if snap is None:
        doc.add("policy_current", SKIP, "doctor.current.title", "doctor.current.unknown")
    elif not running:
        doc.add("policy_current", FAIL, "doctor.current.title", "doctor.current.missing", "doctor.current.fix")
    else:
        expected = snap.fingerprint[:16]
        now = running[-1]
        if any(labels.get("fingerprint") == expected for labels in running):
            doc.add("policy_current", PASS, "doctor.current.title", "doctor.current.ok", fingerprint=expected,
                    version=now.get("version", "?"))
        else:
            doc.add("policy_current", FAIL, "doctor.current.title", "doctor.current.failed", "doctor.current.fix",
                    running=f"{now.get('fingerprint')} ({now.get('version')})", expected=f"{expected} ({snap.version})")
    single = [value for _, value in samples(text, "schoolgw_dns_single_source")]
    if single and single[0] >= 1:
        if settings.dns.relays:
            doc.add("single_source", PASS, "doctor.source.title", "doctor.source.relays")
        else:
            doc.add("single_source", FAIL, "doctor.source.title", "doctor.source.failed", "doctor.source.fix")
    else:
        doc.add("single_source", PASS, "doctor.source.title", "doctor.source.ok")


def check_clock(doc: Doctor) -> None:
    from gateway.clock import clock_synchronised

    if clock_synchronised():
        doc.add("clock", PASS, "doctor.clock.title", "doctor.clock.ok")
    else:
        doc.add("clock", FAIL, "doctor.clock.title", "doctor.clock.failed", "doctor.clock.fix")


def check_bundle(doc: Doctor, settings: Settings, config: str, now: float | None = None) -> None:
    updater = getattr(settings, "updater", None)
    title, fix = "doctor.bundle.title", "doctor.bundle.fix"
    if updater is None:
        doc.add("bundle", SKIP, title, "doctor.bundle.off", config=config)
        return
    try:
        from gateway.updater.bundle import verify_tree
        from gateway.updater.keys import key_id, load_trusted_keys, verify_any
        from gateway.updater.manifest import MANIFEST, SIGNATURE, decode_signature, parse_time
        from gateway.updater.reasons import UpdateFailure
        from gateway.updater.store import BundleStore
    except ImportError as exc:
        doc.add("bundle", SKIP, title, "doctor.bundle.unavailable", why=exc)
        return
    store = BundleStore(updater.state_dir)
    folder = store.current_dir()
    if folder is None:
        doc.add("bundle", FAIL, title, "doctor.bundle.none", fix, dir=store.bundles, config=config)
        return
    path = folder / MANIFEST
    try:
        data = path.read_bytes()
        signature = decode_signature((folder / SIGNATURE).read_bytes())
        keys = load_trusted_keys(updater.trusted_keys)
        manifest = json.loads(data)
        expires_text = str(manifest.get("expires"))
        expires = parse_time(manifest.get("expires"))
    except (OSError, ValueError, UpdateFailure) as exc:
        doc.add("bundle", FAIL, title, "doctor.bundle.unreadable", fix, path=path, why=exc, config=config)
        return
    key = verify_any(keys, signature, data)
    if key is None:
        doc.add("bundle", FAIL, title, "doctor.bundle.bad_signature", fix, path=path, config=config)
        return
    why = verify_tree(folder)
    if why is not None:
        doc.add("bundle", FAIL, title, "doctor.bundle.damaged", fix, version=folder.name, why=why, config=config)
        return
    left = (expires - (time.time() if now is None else now)) / 86400
    args = {"version": manifest.get("version"), "key_id": key_id(key), "days": max(0, int(left)),
            "expires": expires_text, "config": config}
    if left <= 0:
        doc.add("bundle", FAIL, title, "doctor.bundle.expired", fix, **args)
    elif left < EXPIRY_WARN_DAYS:
        doc.add("bundle", WARN, title, "doctor.bundle.soon", fix, **args)
    else:
        doc.add("bundle", PASS, title, "doctor.bundle.ok", **args)


def check_firewall(doc: Doctor, rules: Path = RULES_FILE) -> None:
    title = "doctor.firewall.title"
    if not rules.exists():
        doc.add("firewall", SKIP, title, "doctor.firewall.no_rules", rules=rules)
        return
    nft = shutil.which("nft")
    if nft is None or os.geteuid() != 0:
        doc.add("firewall", SKIP, title, "doctor.firewall.no_nft")
        return
    done = subprocess.run([nft, "list", "table", "inet", NFT_TABLE], capture_output=True, text=True, timeout=10)
    if done.returncode == 0:
        doc.add("firewall", PASS, title, "doctor.firewall.ok", table=NFT_TABLE)
    else:
        doc.add("firewall", FAIL, title, "doctor.firewall.failed", "doctor.firewall.fix", table=NFT_TABLE,
                why=(done.stderr.strip().splitlines() or ["?"])[-1], rules=rules)


def box_checks(doc: Doctor, config: Path | None) -> None:
    shown = str(config) if config else str(DEFAULT_CONFIG)
    settings = check_config(doc, config)
    if settings is None:
        return
    snap = check_policy(doc, settings)
    check_listeners(doc, settings)
    check_upstreams(doc, settings, shown)
    check_metrics(doc, settings, snap, shown)
    check_clock(doc)
    check_bundle(doc, settings, shown)
    check_firewall(doc)


# ---- the client's side: can DNS, DoT, DoQ or QUIC go around the filter? ----

def quic_probe_payload() -> bytes:
    """A QUIC long-header Initial with a reserved version, padded to the size servers answer."""
    dcid, scid = secrets.token_bytes(8), secrets.token_bytes(8)
    head = bytes([0xC0 | secrets.randbelow(16)]) + struct.pack("!I", QUIC_GREASE_VERSION)
    head += bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    return head + b"\x00" * (QUIC_MIN_DATAGRAM - len(head))


def is_version_negotiation(payload: bytes) -> bool:
    return len(payload) >= 7 and payload[0] & 0x80 and payload[1:5] == b"\x00\x00\x00\x00"


class Prober:
    """The bypass probes, crafted with scapy (raw sockets: needs root) except TCP 53, which needs a real
    TCP stream to see whether the answer was redirected, so it uses the kernel's."""

    def __init__(self, name: str, timeout: float, blockpage: tuple[str, ...] = ()) -> None:
        from scapy import all as scapy

        scapy.conf.verb = 0
        self.s = scapy
        self.name = name
        self.timeout = timeout
        self.blockpage = blockpage

    def _ip(self, target: str) -> object:
        return self.s.IPv6(dst=target) if ":" in target else self.s.IP(dst=target)

    def _sport(self) -> int:
        return 20000 + secrets.randbelow(40000)

    def _rejected(self, reply) -> str | None:
        if reply is None:
            return None
        for layer in ("ICMP", "ICMPv6DestUnreach"):
            if reply.haslayer(getattr(self.s, layer)):
                return "ICMP"
        if reply.haslayer(self.s.TCP) and reply[self.s.TCP].flags & 0x04:
            return "TCP RST"
        return None

    def dns_udp(self, target: str) -> tuple[str, str, dict]:
        from dnslib import DNSRecord

        s = self.s
        packet = self._ip(target) / s.UDP(sport=self._sport(), dport=53) / s.DNS(
            id=secrets.randbelow(65536), rd=1, qd=s.DNSQR(qname=self.name, qtype="A"))
        reply = s.sr1(packet, timeout=self.timeout)
        if reply is None:
            return PASS, "doctor.probe.dropped", {}
        rejected = self._rejected(reply)
        if rejected:
            return PASS, "doctor.probe.rejected", {"why": rejected}
        return self._judge(DNSRecord.parse(bytes(reply[s.UDP].payload)))

    def dns_tcp(self, target: str) -> tuple[str, str, dict]:
        try:
            reply = ask(target, 53, self.name, tcp=True, timeout=self.timeout)
        except TimeoutError:
            return PASS, "doctor.probe.dropped", {}
        except ConnectionRefusedError:
            return PASS, "doctor.probe.rejected", {"why": "TCP RST"}
        except OSError as exc:
            return PASS, "doctor.probe.rejected", {"why": exc.strerror or str(exc)}
        return self._judge(reply)

    def _judge(self, reply) -> tuple[str, str, dict]:
        if blocked_answer(reply, self.blockpage):
            return PASS, "doctor.probe.redirected", {}
        return FAIL, "doctor.probe.answered", {"answer": _answer_text(reply)}

    def tcp_open(self, target: str, port: int) -> tuple[str, str, dict]:
        s = self.s
        syn = self._ip(target) / s.TCP(sport=self._sport(), dport=port, flags="S", seq=secrets.randbelow(1 << 32))
        reply = s.sr1(syn, timeout=self.timeout)
        if reply is None:
            return PASS, "doctor.probe.dropped", {}
        if reply.haslayer(s.TCP) and (int(reply[s.TCP].flags) & 0x12) == 0x12:
            # The kernel answers the SYN-ACK with a reset (no socket of ours): no connection is left open.
            return FAIL, "doctor.probe.open", {"why": "TCP SYN-ACK"}
        return PASS, "doctor.probe.rejected", {"why": self._rejected(reply) or reply.summary()}

    def quic_open(self, target: str, port: int) -> tuple[str, str, dict]:
        s = self.s
        probe = self._ip(target) / s.UDP(sport=self._sport(), dport=port) / s.Raw(quic_probe_payload())
        reply = s.sr1(probe, timeout=self.timeout)
        if reply is None:
            return PASS, "doctor.probe.dropped", {}
        rejected = self._rejected(reply)
        if rejected:
            return PASS, "doctor.probe.rejected", {"why": rejected}
        payload = bytes(reply[s.UDP].payload) if reply.haslayer(s.UDP) else b""
        why = "QUIC version negotiation" if is_version_negotiation(payload) else f"UDP {len(payload)} bytes"
        return FAIL, "doctor.probe.open", {"why": why}


def client_checks(doc: Doctor, targets: list[str], name: str, blockpage: tuple[str, ...] = ()) -> None:
    try:
        if os.geteuid() != 0:
            raise PermissionError("raw sockets need root")
        prober = Prober(name, doc.timeout, blockpage)
    except (ImportError, PermissionError, OSError) as exc:
        doc.add("probe", FAIL, "doctor.probe.dns_udp.title", "doctor.probe.unavailable",
                "doctor.probe.fix_unavailable", target=", ".join(targets), why=exc)
        return
    for target in targets:
        probes = (
            ("dns_udp", lambda t=target: prober.dns_udp(t), "doctor.probe.fix_dns"),
            ("dns_tcp", lambda t=target: prober.dns_tcp(t), "doctor.probe.fix_dns"),
            ("dot", lambda t=target: prober.tcp_open(t, 853), "doctor.probe.fix_853"),
            ("doq", lambda t=target: prober.quic_open(t, 853), "doctor.probe.fix_853"),
            ("quic", lambda t=target: prober.quic_open(t, 443), "doctor.probe.fix_quic"),
        )
        for kind, run, fix in probes:
            try:
                status, detail, args = run()
            except Exception as exc:  # a probe that cannot even be sent says nothing about the filter
                status, detail, args = FAIL, "doctor.probe.unavailable", {"why": exc}
                fix = "doctor.probe.fix_unavailable"
            doc.add(f"probe:{kind}:{target}", status, f"doctor.probe.{kind}.title", detail, fix, target=target,
                    name=name, seconds=doc.timeout, **args)


# ---- readiness (systemd ExecStartPost) and config-only validation (Ansible's validate:) ----

def wait_ready(settings: Settings, seconds: float, interval: float = 0.25) -> bool:
    """Poll every listener (UDP and TCP) until each answers, or `seconds` pass."""
    pending = [(listen.host, listen.port, tcp) for listen in settings.dns.listen for tcp in (False, True)]
    deadline = time.monotonic() + seconds
    while True:
        pending = [p for p in pending if not listener_answers(*p, timeout=min(1.0, seconds))]
        if not pending or time.monotonic() >= deadline:
            return not pending
        time.sleep(interval)  # polling a socket that is not there yet: nothing to wait on instead


def config_only(config: Path | None, lang: str) -> int:
    doc = Doctor(lang)
    settings = check_config(doc, config)
    if settings is not None:
        check_policy(doc, settings)
    if doc.failed:
        print_text(doc, sys.stderr)
        return 1
    print(tr("doctor.config_only.ok", lang, path=config or tr("doctor.embedded", lang)))
    return 0


# ---- output ----

def print_text(doc: Doctor, out=None) -> None:
    out = out or sys.stdout
    lang = doc.lang
    for c in doc.checks:
        print(f"{ICONS[c.status]} [{tr('doctor.status.' + c.status, lang)}] {c.title}", file=out)
        if c.detail:
            for line in c.detail.splitlines():
                print(f"    {line}", file=out)
        if c.fix:
            print(f"    → {tr('doctor.fix', lang)}: {c.fix}", file=out)


def summary(doc: Doctor) -> str:
    failed = sum(c.status == FAIL for c in doc.checks)
    if failed:
        return tr("doctor.summary_failed", doc.lang, failed=failed, count=len(doc.checks))
    return tr("doctor.summary_ok", doc.lang, count=len(doc.checks))


def report(doc: Doctor, as_json: bool, heading: str) -> int:
    if as_json:
        print(json.dumps({"ok": not doc.failed, "lang": doc.lang,
                          "at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
                          "checks": [asdict(c) for c in doc.checks]}, ensure_ascii=False, indent=1))
    else:
        print(heading)
        print_text(doc)
        print(summary(doc))
    return 1 if doc.failed else 0


def _config_path(raw: str | None) -> Path | None:
    if raw:
        return Path(raw)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def _address(text: str) -> str:
    return str(ipaddress.ip_address(text))


def cmd_doctor(args: argparse.Namespace) -> int:
    lang = args.lang
    config = _config_path(args.config)
    if args.config_only:
        return config_only(config, lang)
    if args.wait_ready is not None:
        settings, problems = load(config)
        if settings is None:
            for p in problems:
                print("  ✗ " + p.render(lang), file=sys.stderr)
            return 1
        where = ", ".join(str(listen) for listen in settings.dns.listen)
        if wait_ready(settings, args.wait_ready):
            print(tr("doctor.ready.ok", lang, addresses=where))
            return 0
        print(tr("doctor.ready.timeout", lang, addresses=where, seconds=args.wait_ready), file=sys.stderr)
        return 1
    doc = Doctor(lang, args.timeout)
    if args.client:
        blockpage: tuple[str, ...] = tuple(args.blockpage_address or ())
        if config is not None:
            settings, _ = load(config)
            if settings is not None:
                blockpage += tuple(a for a in (settings.dns.blockpage_v4, settings.dns.blockpage_v6) if a)
        client_checks(doc, args.probe_target or list(DEFAULT_PROBE_TARGETS), args.blocked_name, blockpage)
        return report(doc, args.json, tr("doctor.heading_client", lang))
    box_checks(doc, config)
    return report(doc, args.json, tr("doctor.heading", lang, config=config or tr("doctor.embedded", lang)))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `doctor` on the top-level `school-gateway` subparsers (sets args.func)."""
    p = subparsers.add_parser("doctor", help="self-check after install: listeners, upstreams, policy, bundle, "
                                             "metrics, clock; --client: can the filter be bypassed?")
    p.add_argument("--config", help=f"gateway.yaml (default {DEFAULT_CONFIG} if it exists)")
    p.add_argument("--lang", choices=("vi", "en"), default="vi", help="message language (default vi)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each answer (default 2)")
    p.add_argument("--client", action="store_true",
                   help="run the bypass probes from this machine (a pupil's device or a client-side namespace; "
                        "needs root and scapy)")
    p.add_argument("--probe-target", action="append", type=_address,
                   help=f"outside resolver to probe (repeatable; default {', '.join(DEFAULT_PROBE_TARGETS)})")
    p.add_argument("--blocked-name", default=DEFAULT_BLOCKED_NAME,
                   help=f"a name the policy blocks for every band (default {DEFAULT_BLOCKED_NAME})")
    p.add_argument("--blockpage-address", action="append", type=_address,
                   help="an address the gateway answers blocked names with (dns.blockpage), repeatable")
    p.add_argument("--config-only", action="store_true",
                   help="only check that gateway.yaml and the policy it names load; no network (exit 1 if not)")
    p.add_argument("--wait-ready", type=float, metavar="SECONDS", nargs="?", const=90.0,
                   help="wait until every DNS listener answers (systemd ExecStartPost); exit 1 on timeout")
    p.set_defaults(func=cmd_doctor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="school-gateway", description="school-gateway self-check")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
