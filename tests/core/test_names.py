import unicodedata

import pytest

from gateway.core.names import NameError_, SuffixMap, normalize, suffixes


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("  www.example.com ", "www.example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("học.vn", "xn--hc-68s.vn"),
        (unicodedata.normalize("NFD", "học.vn"), "xn--hc-68s.vn"),
        ("_dns.resolver.arpa", "_dns.resolver.arpa"),
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw", ["", ".", "a..b", "a b.com", "x" * 64 + ".com", ("a" * 60 + ".") * 5 + "com",
                                 "http://a.com/"])
def test_normalize_rejects(raw):
    with pytest.raises(NameError_):
        normalize(raw)


def test_suffixes():
    assert list(suffixes("a.b.c")) == ["a.b.c", "b.c", "c"]
    assert list(suffixes("c")) == ["c"]


def test_suffix_map_most_specific():
    m = SuffixMap({"example.com": "one", "a.example.com": "two"})
    assert m.get("x.a.example.com") == ("a.example.com", "two")
    assert m.get("b.example.com") == ("example.com", "one")
    assert m.get("example.org") is None
    assert "example.com" in m and "com" not in m
