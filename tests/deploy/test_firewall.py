"""The role's nftables rules, loaded in namespaces: client DNS answered by the gateway, DoT/DoQ/QUIC dropped."""

from __future__ import annotations

import pytest
from conftest import render_rules
from netlab import GW_LAN4, GW_LAN6, GW_WAN4, OUTSIDE4, OUTSIDE6, OUTSIDE_ANSWER4

BLOCKED = "pornhub.com"  # in the shipped, mandatory adult list
ALLOWED = "vnexpress.net"
GATEWAY_SOA = "ns.school-gateway.invalid"


def test_without_rules_the_outside_resolver_answers(unenforced):
    # The baseline that makes the other tests mean something: this is how a bypass looks.
    for kind in ("dns", "dns-tcp"):
        got = unenforced.probe(unenforced.client, kind, OUTSIDE4, BLOCKED)
        assert got["answers"] == [OUTSIDE_ANSWER4], got
    assert unenforced.probe(unenforced.client, "connect", OUTSIDE4, "853")["result"] == "open"


@pytest.mark.parametrize("kind", ["dns", "dns-tcp"])
@pytest.mark.parametrize("server", [OUTSIDE4, OUTSIDE6])
def test_client_dns_to_an_outside_resolver_is_answered_by_the_gateway(enforced, kind, server):
    got = enforced.probe(enforced.client, kind, server, BLOCKED)
    assert (got["rcode"], got["soa"]) == ("NXDOMAIN", [GATEWAY_SOA]), got
    # A name the policy allows still resolves: the gateway forwards it to its own upstream.
    got = enforced.probe(enforced.client, kind, server, ALLOWED)
    assert (got["rcode"], got["answers"]) == ("NOERROR", [OUTSIDE_ANSWER4]), got


@pytest.mark.parametrize("server", [OUTSIDE4, OUTSIDE6])
def test_dot_doq_and_quic_do_not_leave(enforced, server):
    assert enforced.probe(enforced.client, "connect", server, "853")["result"] in ("refused", "timeout")
    assert enforced.probe(enforced.client, "quic", server, "853")["result"] == "timeout"
    assert enforced.probe(enforced.client, "quic", server, "443")["result"] == "timeout"


def test_https_to_a_known_doh_resolver_is_refused(enforced):
    assert enforced.probe(enforced.client, "connect", OUTSIDE4, "443")["result"] == "refused"
    assert enforced.probe(enforced.client, "connect", OUTSIDE6, "443")["result"] == "refused"


def test_metrics_port_refuses_everyone_but_the_department(enforced):
    for host in (GW_LAN4, f"[{GW_LAN6}]"):
        got = enforced.probe(enforced.client, "http", f"http://{host}:9153/metrics")
        assert got["result"] == "refused", got
    got = enforced.probe(enforced.outside, "http", f"http://{GW_WAN4}:9153/metrics")
    assert got["status"] == 200 and "schoolgw_" in got["body"], got


def test_without_rules_the_gateway_itself_still_refuses_metrics(unenforced):
    # Defence in depth: the gateway's own allowlist answers 403 to a pupil's device.
    got = unenforced.probe(unenforced.client, "http", f"http://{GW_LAN4}:9153/metrics")
    assert got["status"] == 403, got


def test_the_gateway_is_no_resolver_for_the_internet_side(enforced):
    assert enforced.probe(enforced.outside, "dns", GW_WAN4, ALLOWED, "--timeout", "1")["result"] == "timeout"


def test_every_variant_renders_and_passes_nft_check(lab, tmp_path):
    """Topology b, the proxy, NAT: each variant renders and `nft -c` accepts it (the template task's validate)."""
    b = render_rules(lab, tmp_path / "b.nft", school_gateway_topology="b", school_gateway_wan_interface="")
    text = b.read_text()
    assert "redirect" not in text and "chain forward" not in text and "reject with tcp reset" in text
    proxy = render_rules(lab, tmp_path / "proxy.nft", school_gateway_proxy=True, school_gateway_drop_quic=False,
                         school_gateway_masquerade=True, school_gateway_lan_interface=["lan0", "lan0.20"])
    text = proxy.read_text()
    assert 'iifname { "lan0", "lan0.20" } meta nfproto ipv4 fib daddr type != local tcp dport { 80, 443 } ' \
           "redirect to :3129" in text
    assert f"ip daddr {GW_LAN4} tcp dport 80 redirect to :8080" in text
    assert "udp dport 443 drop" in text  # QUIC is dropped whenever the proxy is on
    assert 'oifname "wan0" masquerade' in text
    none = render_rules(lab, tmp_path / "none.nft", school_gateway_metrics_scrapers=[], school_gateway_doh_block=False)
    assert "elements" not in none.read_text()
