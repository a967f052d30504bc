"""The block page's content and form: language, reason, contact, hotline, self-containment; the PAC file."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from proxyrig import PLAIN, PRIMARY, STAFF, build_holder

from gateway.core.decide import decide, identify
from gateway.proxy.blockpage import choose_lang, pac_file, render_block
from gateway.proxy.judge import Judge

NOW = dt.datetime(2026, 11, 3, 3, 21, tzinfo=dt.UTC)
KEY = b"k" * 32


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    return Judge(build_holder(tmp_path_factory.mktemp("pagepolicy")), clock=lambda: NOW)


def page(judge, client, host, lang="vi") -> str:
    status, headers, body = render_block(judge.verdict(client, host), lang, KEY, "/a/b?c=d")
    assert status == 403
    assert dict(headers)["Content-Type"] == "text/html; charset=utf-8"
    return body.decode("utf-8")


def test_vietnamese_page_says_what_why_when_and_how_to_ask(judge):
    html = page(judge, PLAIN, "casino.example")
    assert '<html lang="vi">' in html
    assert "<h1>Trang web này đã bị chặn</h1>" in html
    assert "Nội dung bạn muốn truy cập không phù hợp với quy định sử dụng Internet của nhà trường." in html
    assert "Trang này thuộc danh mục «Cờ bạc»." in html and "Cá cược, sòng bạc trực tuyến." in html
    assert "casino.example" in html and "Trung học cơ sở (11–14 tuổi)" in html
    assert "10:21, 03/11/2026" in html  # school time zone
    assert re.search(r"<code>[0-9A-Z]{5}(-[0-9A-Z]{5}){3}</code>", html)
    assert "Nếu em cho rằng trang bị chặn nhầm, hãy gửi yêu cầu xem xét." in html
    assert "Thầy Nguyễn Văn A" in html and 'href="mailto:cntt@truong-thu.edu.vn?subject=' in html
    assert "Gửi yêu cầu mở chặn" in html
    assert "111" not in html  # gambling is not a hotline category


def test_hotline_for_hotline_categories(judge):
    html = page(judge, PRIMARY, "selfharm.example")
    assert "Tổng đài 111 (miễn phí)" in html and 'href="tel:111"' in html
    assert "Tiểu học (6–10 tuổi)" in html


def test_english_page(judge):
    html = page(judge, PRIMARY, "selfharm.example", "en")
    assert '<html lang="en">' in html and "<h1>This website is blocked</h1>" in html
    assert "Self-harm and suicide" in html and "111 child helpline" in html
    assert 'href="/a/b?lang=vi"' in html  # the switch back keeps the address, drops the query


def test_school_deny_and_staff_wording(judge):
    html = page(judge, PLAIN, "denied.test")
    assert "Nhà trường đã chặn riêng trang này." in html
    staff = page(judge, STAFF, "porn.example")
    assert "Nếu thầy cô cho rằng" in staff and "(" not in staff.split("Giáo viên")[1][:3]


def test_self_contained_and_accessible(judge):
    html = page(judge, PLAIN, "casino.example")
    assert "<script" not in html and "<img" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from elsewhere
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "<main>" in html and "<h2" in html and 'aria-labelledby="why"' in html
    # Body text #1b1b1b on white and the heading #8a1c1c are both far above WCAG AA's 4.5:1.
    assert "color:#1b1b1b" in html and "color:#8a1c1c" in html


def test_escapes_hostile_host(judge):
    from gateway.core.model import Action, Decision, Reason
    from gateway.proxy.judge import Verdict

    snap = judge.holder.current
    d = Decision(Action.BLOCK, Reason.SCHOOL_DENY, "hoc_sinh", "thcs")
    html = render_block(Verdict(d, "<script>x</script>", snap, True, False, NOW), "vi", KEY)[2].decode()
    assert "<script>x" not in html and "&lt;script&gt;" in html


def test_choose_lang():
    assert choose_lang(None) == "vi"
    assert choose_lang("en-US,en;q=0.9") == "en"
    assert choose_lang("vi-VN,vi;q=0.9,en;q=0.8") == "vi"
    assert choose_lang("fr-FR,en;q=0.5") == "en"
    assert choose_lang("fr-FR") == "vi"
    assert choose_lang("en;q=0.4,vi;q=0.6") == "vi"
    assert choose_lang("en", "vi") == "vi"


def test_pac_file():
    text = pac_file("10.10.0.1:3128", ("intranet.school.vn",)).decode()
    assert "function FindProxyForURL(url, host)" in text
    assert 'return "PROXY 10.10.0.1:3128";' in text
    assert 'dnsDomainIs(host, ".intranet.school.vn")' in text
    assert "; DIRECT" not in text
    assert "; DIRECT" in pac_file("10.10.0.1:3128", fallback_direct=True).decode()


def test_decision_matches_core(judge):
    snap = judge.holder.current
    v = judge.verdict(PLAIN, "WWW.Casino.Example.")
    assert v.host == "www.casino.example"
    assert v.decision == decide(snap, identify(snap, PLAIN), "www.casino.example", NOW)
