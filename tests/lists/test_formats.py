"""List readers: every accepted format, and every rejected line named as file:line: why."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from gateway.core.names import normalize
from gateway.lists.formats import ListEntry, parse_lines, read_columns, read_list


def names(parsed) -> list[str]:
    return [e.name for e in parsed.entries]


def errors(parsed) -> list[str]:
    return [str(e) for e in parsed.first_errors]


def test_plain_domains_with_comments_and_blank_lines() -> None:
    parsed = parse_lines(["# header", "", "example.com", "  Ads.Example.NET.  ", "; note", "! abp"], "l.txt")
    assert names(parsed) == ["example.com", "ads.example.net"]
    assert [e.line for e in parsed.entries] == [3, 4]
    assert parsed.lines == 6
    assert parsed.bad_lines == 0


def test_hosts_lines_several_names_and_conventional_names_skipped() -> None:
    parsed = parse_lines(
        [
            "127.0.0.1 localhost localhost.localdomain",
            "::1 localhost ip6-localhost ip6-loopback",
            "255.255.255.255 broadcasthost",
            "0.0.0.0 0.0.0.0",
            "0.0.0.0 ads.example.com tracker.example.com   # inline comment",
            "127.0.0.1\tbad.example.org",
            "fe80::1%lo0 local",
        ],
        "hosts",
    )
    assert names(parsed) == ["ads.example.com", "tracker.example.com", "bad.example.org"]
    assert [e.line for e in parsed.entries] == [5, 5, 6]
    assert parsed.bad_lines == 0


def test_hosts_line_keeps_good_names_beside_a_bad_one() -> None:
    parsed = parse_lines(["0.0.0.0 good.example.com b@d.example.com also.example.com"], "hosts")
    assert names(parsed) == ["good.example.com", "also.example.com"]
    assert parsed.bad_lines == 1
    assert errors(parsed) == ["hosts:1: 'b@d.example.com': character '@' is not allowed in a host name"]


def test_adblock_rules_and_exceptions() -> None:
    parsed = parse_lines(
        ["[Adblock Plus 2.0]", "! Title: x", "||ads.example.com^", "@@||ok.ads.example.com^", "||t.ex^|"],
        "abp.txt",
    )
    assert parsed.entries == [
        ListEntry("ads.example.com", 3),
        ListEntry("ok.ads.example.com", 4, exception=True),
        ListEntry("t.ex", 5),
    ]
    assert parsed.bad_lines == 0


def test_wildcards_are_subdomains_only() -> None:
    parsed = parse_lines(["*.example.com", "||*.cdn.example.org^"], "w.txt")
    assert parsed.entries == [
        ListEntry("example.com", 1, subdomains_only=True),
        ListEntry("cdn.example.org", 2, subdomains_only=True),
    ]


def test_mixed_file_in_one_read(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_text(
        "# mixed\n"
        "plain.example\n"
        "0.0.0.0 hosts.example other.example\n"
        "||abp.example^\n"
        "@@||ok.abp.example^\n"
        "*.wild.example\n"
        "bücher.de\n"
        "http://url.example/path\n",
        encoding="utf-8",
    )
    parsed = read_list(path, "lists/mixed.txt")
    assert names(parsed) == [
        "plain.example",
        "hosts.example",
        "other.example",
        "abp.example",
        "ok.abp.example",
        "wild.example",
        "xn--bcher-kva.de",
    ]
    assert [(e.exception, e.subdomains_only) for e in parsed.entries][3:6] == [
        (False, False),
        (True, False),
        (False, True),
    ]
    assert parsed.lines == 8
    assert errors(parsed) == ["lists/mixed.txt:8: a URL, not a domain: write just the host name"]


def test_bom_crlf_and_lone_cr(tmp_path: Path) -> None:
    path = tmp_path / "win.txt"
    path.write_bytes(b"\xef\xbb\xbfa.example\r\nb.example\r\n\r\nc.example")
    parsed = read_list(path)
    assert names(parsed) == ["a.example", "b.example", "c.example"]
    assert [e.line for e in parsed.entries] == [1, 2, 4]
    assert parsed.path == str(path)

    old_mac = tmp_path / "mac.txt"
    old_mac.write_bytes(b"a.example\rb.example\r")
    assert names(read_list(old_mac)) == ["a.example", "b.example"]


def test_bom_in_parse_lines() -> None:
    assert names(parse_lines(["\ufeffa.example"], "x")) == ["a.example"]


def test_utf16_file_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "notepad.txt"
    path.write_bytes("a.example\r\nhọc.vn\r\n".encode("utf-16"))
    assert names(read_list(path)) == ["a.example", normalize("học.vn")]


def test_idn_names_become_punycode_and_nfd_equals_nfc() -> None:
    nfc = unicodedata.normalize("NFC", "học.vn")
    nfd = unicodedata.normalize("NFD", "học.vn")
    assert nfc != nfd
    parsed = parse_lines(["bücher.de", nfc, nfd, "BÜCHER.DE."], "idn.txt")
    assert names(parsed) == ["xn--bcher-kva.de", "xn--hc-68s.vn", "xn--hc-68s.vn", "xn--bcher-kva.de"]


def test_idn_in_file_goes_through_normalize(tmp_path: Path) -> None:
    path = tmp_path / "idn.txt"
    path.write_text("||bücher.de^\n0.0.0.0 học.vn\n", encoding="utf-8")
    assert names(read_list(path)) == ["xn--bcher-kva.de", "xn--hc-68s.vn"]


NOT_DNS = "which DNS filtering cannot apply"
URL = "a URL, not a domain: write just the host name"
IP = "an IP address, not a domain name; lists hold host names"
PATH = f"an AdBlock rule with a path or port, {NOT_DNS}; keep only '||name^'"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("http://a.example/x", URL),
        ("a.example/path", URL),
        ("192.168.1.1", IP),
        ("2001:db8::1", IP),
        ("1.2.3", "the last label is all digits, so this is not a host name (an IP address?)"),
        ("/ads[0-9]+\\.example/", f"a regular expression, {NOT_DNS}; list the host names instead"),
        ("/^ads\\./", f"a regular expression, {NOT_DNS}; list the host names instead"),
        (
            "||ads.example^$third-party",
            f"an AdBlock rule with options ($third-party), {NOT_DNS}; " + "remove the options or the line",
        ),
        (
            "@@||ads.example^$important",
            f"an AdBlock rule with options ($important), {NOT_DNS}; " + "remove the options or the line",
        ),
        ("||ads.example/banner.gif", PATH),
        ("||ads.example:8080^", PATH),
        ("|https://ads.example", "an address-anchored AdBlock rule ('|...'); DNS filtering needs '||name^'"),
        ("ads.example^", "an AdBlock pattern without '||'; DNS filtering needs '||name^'"),
        ("example.com##.banner", f"an AdBlock element-hiding rule, {NOT_DNS}; remove it"),
        ("ad*.example", "a wildcard is only allowed as a leading '*.' (as in '*.example.com')"),
        ("bad_chars!.example", "character '!' is not allowed in a host name"),
        ("a..example", "empty label (two dots in a row, or a leading dot)"),
        ("x" * 64 + ".example", "label 'xxxxxxxxxxxxxxxxxxxx'... is 64 characters, the limit is 63"),
        (
            "two words",
            "several words on one line; write one domain per line, or a hosts line that starts with an IP address",
        ),
        (
            "address=/ads.example/0.0.0.0",
            "dnsmasq syntax is not supported; use the domains, hosts or AdBlock version of this list",
        ),
    ],
)
def test_malformed_lines_are_counted_with_file_line_why(line: str, why: str) -> None:
    parsed = parse_lines(["good.example", line], "lists/bad.txt")
    assert names(parsed) == ["good.example"]
    assert parsed.bad_lines == 1
    assert errors(parsed) == [f"lists/bad.txt:2: {why}"]


def test_too_long_name() -> None:
    name = ".".join(["a" * 60] * 5)
    parsed = parse_lines([name], "x")
    assert parsed.bad_lines == 1
    assert "limit is 253" in parsed.first_errors[0].why


def test_fast_path_agrees_with_normalize_on_edge_cases(tmp_path: Path) -> None:
    # Names near the fast path's limits, read from a file (fast path) and via parse_lines.
    longest = "a" * 63 + ".example"
    lines = [longest, "a" * 64 + ".example", "x-.example", "_dmarc.example", "a.example.", "9.example"]
    path = tmp_path / "edge.txt"
    path.write_text("\n".join(lines) + "\n")
    from_file = read_list(path, "edge.txt")
    from_text = parse_lines(lines, "edge.txt")
    assert from_file.entries == from_text.entries
    assert errors(from_file) == errors(from_text)
    assert names(from_file) == [longest, "x-.example", "_dmarc.example", "a.example", "9.example"]


def test_first_errors_capped_at_five_but_all_counted() -> None:
    parsed = parse_lines([f"http://bad{i}.example/" for i in range(12)] + ["ok.example"], "x.txt")
    assert parsed.bad_lines == 12
    assert len(parsed.first_errors) == 5
    assert [e.line for e in parsed.first_errors] == [1, 2, 3, 4, 5]
    assert names(parsed) == ["ok.example"]


def test_undecodable_bytes_reject_only_that_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"good.example\nb\xfccher.de\nalso.example\n")
    parsed = read_list(path, "latin1.txt")
    assert names(parsed) == ["good.example", "also.example"]
    assert parsed.bad_lines == 1
    assert errors(parsed) == ["latin1.txt:2: not valid UTF-8 (byte 2); save the file as UTF-8"]


def test_ut1_category_folder_reads_domains_only(tmp_path: Path) -> None:
    folder = tmp_path / "adult"
    folder.mkdir()
    (folder / "domains").write_text("porn.example\nhttp://x/\n")
    (folder / "urls").write_text("site.example/path\n")
    (folder / "expressions").write_text("(sex|porn)\n")
    parsed = read_list(folder, "blocklists/adult")
    assert names(parsed) == ["porn.example"]
    assert parsed.path == "blocklists/adult/domains"
    assert errors(parsed) == ["blocklists/adult/domains:2: a URL, not a domain: write just the host name"]


def test_missing_file_raises_file_not_found_with_display_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"lists/nope\.txt"):
        read_list(tmp_path / "nope.txt", "lists/nope.txt")
    empty_folder = tmp_path / "ut1cat"
    empty_folder.mkdir()
    with pytest.raises(FileNotFoundError, match="ut1cat/domains"):
        read_list(empty_folder, "ut1cat")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    parsed = read_list(path)
    assert (parsed.entries, parsed.lines, parsed.bad_lines) == ([], 0, 0)


def test_columns_match_entries(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text("a.example\n@@||b.example^\n*.c.example\n")
    cols = read_columns(path)
    assert cols.names == [b"a.example", b"b.example", b"c.example"]
    assert list(cols.flags) == [0, 1, 2] and list(cols.line_numbers) == [1, 2, 3]
    assert cols.entries() == read_list(path).entries


def test_large_plain_file_parses(tmp_path: Path) -> None:
    # Not a timing test: a smoke test that the fast path yields every line of a big file.
    path = tmp_path / "big.txt"
    path.write_text("".join(f"host{i}.example.com\n" for i in range(50_000)))
    cols = read_columns(path)
    assert len(cols.names) == 50_000
    assert cols.line_numbers[-1] == 50_000
