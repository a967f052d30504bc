"""The CLI as school IT uses it: validate and explain, in Vietnamese and English."""

import datetime as dt
import textwrap

from policyfactory import SCHOOL, write_policy

from gateway.cli import main
from gateway.core.decide import decide, identify
from gateway.core.model import Action, Reason
from gateway.policy.compile import PolicyPaths, load_policy
from gateway.shipped import shipped


def test_validate_shipped_policy(capsys):
    assert main(["validate"]) == 0
    assert "Hợp lệ" in capsys.readouterr().out
    assert main(["validate", "--lang", "en"]) == 0
    assert "Valid:" in capsys.readouterr().out


def test_validate_reports_every_error_with_file_and_line(tmp_path, capsys):
    paths = write_policy(tmp_path)
    bad = SCHOOL.replace("  thpt: {band: thpt, clients: [10.4.0.0/16]}",
                         "  thpt: {band: dai_hoc, clients: [10.4.0.0/33]}")
    paths.school.write_text(textwrap.dedent(bad), encoding="utf-8")
    code = main(["validate", str(paths.school), "--department", str(paths.department), "--lang", "en"])
    out = capsys.readouterr().out
    assert code == 1
    line = bad.splitlines().index("  thpt: {band: dai_hoc, clients: [10.4.0.0/33]}") + 1
    assert f"school.yaml:{line}:" in out
    assert "10.4.0.0/33" in out
    assert "errors; the policy was not loaded" in out


def test_validate_list_file(tmp_path, capsys):
    lst = tmp_path / "mine.txt"
    lst.write_text("good.example\nhttp://bad.example/x\n", encoding="utf-8")
    assert main(["validate", str(lst)]) == 1
    assert "mine.txt:2:" in capsys.readouterr().out


def test_explain(capsys):
    code = main(["explain", "www.facebook.com", "--client", "127.0.0.1", "--at", "2026-12-01 10:00", "--lang",
                 "en"])
    out = capsys.readouterr().out
    assert code == 0
    assert "BLOCK" in out and "social" in out and "blocklists/social.txt:" in out and "«facebook.com»" in out
    main(["explain", "www.facebook.com", "--client", "127.0.0.1", "--at", "2026-12-01 20:00", "--lang", "en"])
    assert "ALLOW" in capsys.readouterr().out
    main(["explain", "example.org", "--client", "8.8.8.8", "--lang", "en"])
    assert "REFUSED" in capsys.readouterr().out


def test_shipped_default_policy_protects_each_band():
    snap = load_policy(PolicyPaths(shipped("policies/department"), shipped("policies/school.example.yaml")))
    at = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))

    def judge(client, name):
        return decide(snap, identify(snap, client), name, at)

    for client in ("10.10.1.1", "10.20.0.9", "127.0.0.1"):
        assert judge(client, "www.pornhub.com").reason is Reason.MANDATORY
    assert judge("10.10.1.1", "www.tiktok.com").action is Action.BLOCK  # social in school hours (thcs)
    assert judge("10.20.0.9", "www.tiktok.com").action is Action.ALLOW  # staff: mandatory only
    assert judge("10.10.1.1", "use-application-dns.net").action is Action.BLOCK
    assert judge("10.10.1.1", "connectivitycheck.gstatic.com").reason is Reason.NEVER_BLOCK
    assert judge("10.10.1.1", "www.google.com").rewrite_to == "forcesafesearch.google.com"
    assert judge("10.10.1.1", "mail.google.com").action is Action.ALLOW
    assert judge("10.10.50.7", "www.tiktok.com").group == "phong_may"
    assert not snap.warnings
