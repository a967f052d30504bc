"""The precedence table, schedules, holidays, time zones and walled gardens, as a table."""

import datetime as dt

import pytest
from policyfactory import build

from gateway.core.decide import decide, identify
from gateway.core.model import Action, BlockResponse, Reason

HCM = dt.timezone(dt.timedelta(hours=7))
SCHOOL_TIME = dt.datetime(2026, 12, 1, 10, 0, tzinfo=HCM)  # a Tuesday, in school hours
EVENING = dt.datetime(2026, 12, 1, 19, 0, tzinfo=HCM)
NIGHT = dt.datetime(2026, 12, 1, 23, 30, tzinfo=HCM)
AFTER_MIDNIGHT = dt.datetime(2026, 12, 2, 5, 59, tzinfo=HCM)
MORNING = dt.datetime(2026, 12, 2, 6, 0, tzinfo=HCM)
CHRISTMAS = dt.datetime(2026, 12, 25, 10, 0, tzinfo=HCM)  # a Friday, a school holiday
TET = dt.datetime(2027, 2, 8, 10, 0, tzinfo=HCM)


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    return build(tmp_path_factory.mktemp("policy"))


def judge(snap, client, name, at=SCHOOL_TIME, trusted=True):
    group = identify(snap, client)
    assert group is not None, client
    return decide(snap, group, name, at, clock_trusted=trusted)


# (client, name, time, action, reason, category)
TABLE = [
    # 1. Department mandatory beats everything, even a school allow entry and an unblock.
    ("10.3.0.5", "porn.example", SCHOOL_TIME, Action.BLOCK, Reason.MANDATORY, "adult"),
    ("10.3.0.5", "www.porn.example", SCHOOL_TIME, Action.BLOCK, Reason.MANDATORY, "adult"),
    ("10.4.0.5", "porn.example", SCHOOL_TIME, Action.BLOCK, Reason.MANDATORY, "adult"),
    ("10.9.0.5", "porn.example", SCHOOL_TIME, Action.BLOCK, Reason.MANDATORY, "adult"),
    ("10.1.0.5", "porn.example", SCHOOL_TIME, Action.BLOCK, Reason.MANDATORY, "adult"),
    # 2. never-block beats school deny and walled gardens.
    ("10.3.0.5", "captive.apple.com", SCHOOL_TIME, Action.ALLOW, Reason.NEVER_BLOCK, None),
    ("10.1.0.5", "connectivitycheck.gstatic.com", SCHOOL_TIME, Action.ALLOW, Reason.NEVER_BLOCK, None),
    # 3. school deny beats school allow and everything below.
    ("10.3.0.5", "bad.example", SCHOOL_TIME, Action.BLOCK, Reason.SCHOOL_DENY, None),
    ("10.3.0.5", "sub.bad.example", EVENING, Action.BLOCK, Reason.SCHOOL_DENY, None),
    # 4. school allow lifts a band's category block and a time restriction...
    ("10.3.0.5", "casino.example", SCHOOL_TIME, Action.ALLOW, Reason.SCHOOL_ALLOW, None),
    ("10.3.0.5", "facebook.com", SCHOOL_TIME, Action.ALLOW, Reason.SCHOOL_ALLOW, None),
    # ...but never safe search.
    ("10.3.0.5", "www.youtube.com", SCHOOL_TIME, Action.REWRITE, Reason.SAFE_SEARCH, None),
    # 5. walled garden: only garden names pass, and say so.
    ("10.1.0.5", "olm.vn", SCHOOL_TIME, Action.ALLOW, Reason.GARDEN_ALLOW, "education"),
    ("10.1.0.5", "vi.wikipedia.org", SCHOOL_TIME, Action.ALLOW, Reason.GARDEN_ALLOW, "education"),
    ("10.1.0.5", "example.org", SCHOOL_TIME, Action.BLOCK, Reason.WALLED_GARDEN, None),
    ("10.1.0.5", "www.google.com", SCHOOL_TIME, Action.BLOCK, Reason.WALLED_GARDEN, None),
    # 6. band's blocked categories.
    ("10.2.0.5", "casino.example", EVENING, Action.BLOCK, Reason.CATEGORY, "gambling"),
    ("10.2.0.5", "m.facebook.com", EVENING, Action.BLOCK, Reason.CATEGORY, "social"),
    ("10.2.0.5", "use-application-dns.net", EVENING, Action.BLOCK, Reason.CATEGORY, "bypass"),
    # a school may relax a non-mandatory category for a band (thpt unblocks gambling)
    ("10.4.0.5", "casino.example", SCHOOL_TIME, Action.ALLOW, Reason.DEFAULT, None),
    # 7. time-restricted categories, inside and outside their window.
    ("10.2.0.5", "roblox.com", SCHOOL_TIME, Action.BLOCK, Reason.SCHEDULE, "games"),
    ("10.2.0.5", "roblox.com", EVENING, Action.ALLOW, Reason.DEFAULT, None),
    ("10.3.7.7", "roblox.com", SCHOOL_TIME, Action.BLOCK, Reason.SCHEDULE, "games"),
    ("10.3.7.7", "tiktok.com", SCHOOL_TIME, Action.BLOCK, Reason.SCHEDULE, "social"),
    ("10.3.7.7", "tiktok.com", EVENING, Action.ALLOW, Reason.DEFAULT, None),
    # a window across midnight (22:00-06:00)
    ("10.3.7.7", "tiktok.com", NIGHT, Action.BLOCK, Reason.SCHEDULE, "social"),
    ("10.3.7.7", "tiktok.com", AFTER_MIDNIGHT, Action.BLOCK, Reason.SCHEDULE, "social"),
    ("10.3.7.7", "tiktok.com", MORNING, Action.ALLOW, Reason.DEFAULT, None),
    # holidays lift school hours
    ("10.2.0.5", "roblox.com", CHRISTMAS, Action.ALLOW, Reason.DEFAULT, None),
    ("10.2.0.5", "roblox.com", TET, Action.ALLOW, Reason.DEFAULT, None),
    # 8. safe search by band mode; exact hosts only.
    ("10.2.0.5", "www.google.com", EVENING, Action.REWRITE, Reason.SAFE_SEARCH, None),
    ("10.2.0.5", "google.com.vn", EVENING, Action.REWRITE, Reason.SAFE_SEARCH, None),
    ("10.2.0.5", "mail.google.com", EVENING, Action.ALLOW, Reason.DEFAULT, None),
    ("10.2.0.5", "classroom.google.com", EVENING, Action.ALLOW, Reason.DEFAULT, None),
    ("10.9.0.5", "www.google.com", SCHOOL_TIME, Action.ALLOW, Reason.DEFAULT, None),  # staff: off
    # 9. allow.
    ("10.2.0.5", "example.org", SCHOOL_TIME, Action.ALLOW, Reason.DEFAULT, None),
    ("10.9.0.5", "casino.example", SCHOOL_TIME, Action.ALLOW, Reason.DEFAULT, None),  # staff: mandatory only
]


@pytest.mark.parametrize(("client", "name", "at", "action", "reason", "category"), TABLE)
def test_precedence(snap, client, name, at, action, reason, category):
    d = judge(snap, client, name, at)
    assert (d.action, d.reason, d.category) == (action, reason, category)


def test_decision_names_rule_and_list_line(snap):
    d = judge(snap, "10.2.0.5", "www.bet.example", EVENING)
    assert d.source.endswith("lists/gambling.txt:2")
    assert d.matched == "bet.example"
    assert "bands.tieu_hoc.block: gambling" in d.rule
    assert "bands.yaml:" in d.rule


def test_safe_search_targets_follow_band_mode(snap):
    assert judge(snap, "10.2.0.5", "www.youtube.com").rewrite_to == "restrict.youtube.com"
    assert judge(snap, "10.3.0.5", "m.youtube.com").rewrite_to == "restrictmoderate.youtube.com"
    assert judge(snap, "10.3.0.5", "www.google.com").rewrite_to == "forcesafesearch.google.com"
    assert judge(snap, "10.3.0.5", "www.google.com").engine == "google"


def test_block_response_per_band_and_category(snap):
    assert judge(snap, "10.2.0.5", "casino.example", EVENING).response is BlockResponse.NULL
    # the DoH canary must be NXDOMAIN whatever the band's answer style
    assert judge(snap, "10.2.0.5", "use-application-dns.net", EVENING).response is BlockResponse.NXDOMAIN
    assert judge(snap, "10.3.0.5", "dns.google").response is BlockResponse.NXDOMAIN


def test_untrusted_clock_applies_restrictions(snap):
    assert judge(snap, "10.2.0.5", "roblox.com", EVENING, trusted=False).reason is Reason.SCHEDULE
    assert judge(snap, "10.2.0.5", "roblox.com", CHRISTMAS, trusted=False).reason is Reason.SCHEDULE


def test_time_zone_is_the_schools(snap):
    # 03:00 UTC is 10:00 in Hanoi: school hours there, although it is night in UTC.
    utc = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)
    assert judge(snap, "10.2.0.5", "roblox.com", utc).reason is Reason.SCHEDULE
    utc_evening = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)  # 19:00 in Hanoi
    assert judge(snap, "10.2.0.5", "roblox.com", utc_evening).action is Action.ALLOW


def test_walled_garden_flag(snap):
    assert judge(snap, "10.1.0.5", "olm.vn").garden is True
    assert judge(snap, "10.2.0.5", "olm.vn").garden is False


def test_overlapping_groups_most_specific_wins(snap):
    assert identify(snap, "10.3.50.9").id == "thcs_lab"
    assert identify(snap, "10.3.51.9").id == "thcs"
    assert identify(snap, "10.9.1.7").id == "staff"
    assert identify(snap, "10.9.1.8").id == "khach"  # served private space, no group: unknown group


def test_ipv6_and_unknown_clients(snap):
    assert identify(snap, "fd00:3::1234").id == "thcs"
    assert identify(snap, "fd00:9::1").id == "staff"
    assert identify(snap, "::ffff:10.2.3.4").id == "tieu_hoc"
    assert identify(snap, "fd00:4::1").id == "khach"
    assert identify(snap, "8.8.8.8") is None  # a public address is never served
    assert identify(snap, "2001:4860::1") is None
    assert identify(snap, "not-an-ip") is None


def test_mandatory_unblock_and_stale_entries_are_warnings(snap):
    keys = [w.key for w in snap.warnings]
    assert "policy.mandatory_relaxed" in keys  # thpt tried to unblock adult
    assert "policy.never_block_denied" in keys  # thcs denies captive.apple.com


def test_error_in_decision_blocks(snap):
    class Broken:
        def hits(self, name):
            raise RuntimeError("boom")

    import dataclasses

    broken = dataclasses.replace(snap, index=Broken())
    d = decide(broken, identify(snap, "10.9.0.5"), "example.org", SCHOOL_TIME)
    assert d.action is Action.BLOCK and d.reason is Reason.ERROR
