"""Builds small, complete policies on disk for tests: a Department layer, lists and a school file."""

from __future__ import annotations

import textwrap
from pathlib import Path

from gateway.policy.compile import PolicyPaths, load_policy

BASELINE = """\
version: "test-1"
lists_dir: ../lists
never_block: [never.txt]
schedules:
  school_hours:
    - {days: [mon, tue, wed, thu, fri], from: "07:00", to: "17:00"}
  night:
    - {days: [mon, tue, wed, thu, fri, sat, sun], from: "22:00", to: "06:00"}
safe_search:
  google:
    strict: forcesafesearch.google.com
    hosts: [www.google.com, google.com.vn]
  youtube:
    strict: restrict.youtube.com
    moderate: restrictmoderate.youtube.com
    hosts: [www.youtube.com, m.youtube.com]
"""

CATEGORIES = """\
categories:
  adult: {name: {vi: Khiêu dâm, en: Adult}, lists: [adult.txt], mandatory: true}
  gambling: {name: {vi: Cờ bạc, en: Gambling}, lists: [gambling.txt]}
  social: {name: {vi: Mạng xã hội, en: Social}, lists: [social.txt]}
  games: {name: {vi: Trò chơi, en: Games}, lists: [games.txt]}
  bypass: {name: {vi: Vượt tường lửa, en: Bypass}, lists: [bypass.txt], block_response: nxdomain}
  education: {name: {vi: Học tập, en: Education}, lists: [education.txt], kind: allow}
"""

BANDS = """\
bands:
  mam_non:
    name: {vi: Mầm non, en: Preschool}
    walled_garden: {allow_categories: [education]}
    safe_search: strict
  tieu_hoc:
    name: {vi: Tiểu học, en: Primary}
    block: [gambling, social, bypass]
    restrict:
      - {categories: [games], during: school_hours}
    safe_search: strict
    block_response: "null"
  thcs:
    name: {vi: THCS, en: Lower secondary}
    block: [gambling, bypass]
    restrict:
      - {categories: [social, games], during: school_hours}
      - {categories: [social], during: night}
    safe_search: moderate
  thpt:
    name: {vi: THPT, en: Upper secondary}
    block: [gambling]
    safe_search: moderate
  staff:
    name: {vi: Giáo viên, en: Staff}
    safe_search: "off"
"""

LISTS = {
    "adult.txt": "porn.example\n",
    "gambling.txt": "casino.example\nbet.example\n",
    "social.txt": "facebook.com\ntiktok.com\n",
    "games.txt": "roblox.com\n",
    "bypass.txt": "use-application-dns.net\ndns.google\n",
    "education.txt": "olm.vn\nwikipedia.org\n",
    "never.txt": "captive.apple.com\nconnectivitycheck.gstatic.com\n",
}

SCHOOL = """\
school:
  id: HN-TEST-1
  name: Trường Thử
  ward: Phường Thử
  levels: [thcs]
  timezone: Asia/Ho_Chi_Minh
holidays:
  - 2026-12-25
  - {from: 2027-02-05, to: 2027-02-13, name: Tết}
groups:
  mau_giao: {band: mam_non, clients: [10.1.0.0/16]}
  tieu_hoc: {band: tieu_hoc, clients: [10.2.0.0/16]}
  thcs: {band: thcs, clients: [10.3.0.0/16, "fd00:3::/48"]}
  thcs_lab: {band: thcs, clients: [10.3.50.0/24], inspect_tls: true}
  thpt: {band: thpt, clients: [10.4.0.0/16]}
  staff: {band: staff, clients: [10.9.0.0/24, 10.9.1.7, "fd00:9::/64"]}
  khach: {band: thcs, clients: []}
unknown_group: khach
bands:
  thcs:
    allow: [facebook.com, youtube.com, casino.example, porn.example]
    deny: [bad.example, captive.apple.com]
  thpt:
    unblock: [gambling, adult]
"""


def write_policy(root: Path, *, baseline: str = BASELINE, categories: str = CATEGORIES, bands: str = BANDS,
                 school: str = SCHOOL, lists: dict | None = None) -> PolicyPaths:
    dept = root / "department"
    dept.mkdir(parents=True, exist_ok=True)
    (dept / "baseline.yaml").write_text(textwrap.dedent(baseline), encoding="utf-8")
    (dept / "categories.yaml").write_text(textwrap.dedent(categories), encoding="utf-8")
    (dept / "bands.yaml").write_text(textwrap.dedent(bands), encoding="utf-8")
    list_dir = root / "lists"
    list_dir.mkdir(exist_ok=True)
    for name, text in (LISTS if lists is None else lists).items():
        (list_dir / name).write_text(text, encoding="utf-8")
    school_file = root / "school.yaml"
    school_file.write_text(textwrap.dedent(school), encoding="utf-8")
    return PolicyPaths(dept, school_file, None, root)


def build(root: Path, **kw):
    return load_policy(write_policy(root, **kw))
