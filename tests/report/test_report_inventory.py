"""schools.csv -> file_sd targets: valid rows, every bad row reported with its line, nothing written then."""

from __future__ import annotations

import json
import unicodedata

import pytest

from gateway.report.cli import main
from gateway.report.inventory import (
    InventoryError,
    load_inventory,
    load_targets,
    parse_levels,
    read_inventory,
    to_file_sd,
    write_file_sd,
)

GOOD = (
    "\ufeffid,name,ward,level,address\n"
    "01001001,Trường Mầm non Hoa Sen,Phường Ba Đình,mam_non,10.80.1.10:9153\n"
    '01002002,"Trường THCS và THPT Lê Quý Đôn, cơ sở 2",Phường Hoàn Kiếm,thpt;THCS,gw.truong.example:9153\n'
    "01003001,Trường THPT Sóc Sơn,Xã Sóc Sơn,thpt,agent\n"
    "01004001,Trường Tiểu học Ngọc Hà,Phường Ba Đình,Tiểu học,[2001:db8::5]:9153\n"
)


def _problems(text: str, lang: str = "en") -> list[str]:
    with pytest.raises(InventoryError) as exc:
        read_inventory(text, "schools.csv")
    return [p.render(lang) for p in exc.value.problems]


def test_good_inventory_becomes_one_target_group_per_school():
    groups = to_file_sd(read_inventory(GOOD))
    assert groups[0] == {"targets": ["10.80.1.10:9153"], "labels": {
        "school_id": "01001001", "school_name": "Trường Mầm non Hoa Sen", "ward": "Phường Ba Đình",
        "level": "mam_non"}}
    assert groups[1]["labels"]["level"] == "thcs;thpt"  # canonical order, lower case
    assert groups[1]["labels"]["school_name"] == "Trường THCS và THPT Lê Quý Đôn, cơ sở 2"
    assert groups[2] == {"targets": [], "labels": {"school_id": "01003001", "school_name": "Trường THPT Sóc Sơn",
                                                   "ward": "Xã Sóc Sơn", "level": "thpt"}}
    assert groups[3]["targets"] == ["[2001:db8::5]:9153"] and groups[3]["labels"]["level"] == "tieu_hoc"


def test_semicolon_csv_and_nfd_text_from_other_tools():
    # Excel in a Vietnamese locale writes ';'; macOS tools write decomposed (NFD) accents
    nfd = unicodedata.normalize("NFD", "Phường  Ba Đình ")
    school = read_inventory(f"id;name;ward;level;address\n1;Trường A;{nfd};thcs;h:1\n")[0]
    assert school.ward == "Phường Ba Đình"  # NFC, one space: one label value per ward


def test_every_bad_row_is_reported_with_its_line():
    text = ("id,name,ward,level,address\n"
            "A1,Trường A,Phường 1,thcs,10.0.0.1:9153\n"
            "A1,Trường A bis,Phường 1,thcs,10.0.0.2:9153\n"      # 3 duplicate id
            "B 2,Trường B,Phường 1,thcs,10.0.0.3:9153\n"         # 4 bad id
            "C3,Trường C,Phường 1,dai_hoc,10.0.0.4:9153\n"       # 5 bad level
            "D4,Trường D,Phường 1,thcs,10.0.0.5\n"               # 6 no port
            "E5,Trường E,,thcs,http://10.0.0.6:9153/metrics\n"   # 7 empty ward, URL
            "F6,Trường F,Phường 1,thcs,10.0.0.1:9153\n"          # 8 duplicate address
            "\n"
            "G7,Trường G\n"                                      # 10 short row
            "H8,Trường H,Phường 1,thpt,2001:db8::1:9153\n"       # 11 bare IPv6
            "I9,Trường I,Phường 1,thpt,\n")                      # 12 empty address
    problems = _problems(text)
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == [3, 4, 5, 6, 7, 7, 8, 10, 11, 12]
    assert "school id 'A1' appears twice (first at line 2)" in problems[0]
    assert "level 'dai_hoc' is not valid" in problems[2]
    assert "column 'ward' is empty" in problems[4] and "without http://" in problems[5]
    assert "already used at line 2" in problems[6]
    assert "needs brackets" in problems[8]
    assert all(p.startswith("schools.csv:") for p in problems)


def test_messages_are_vietnamese_by_default():
    problems = _problems("id,name,ward,level,address\nX,Trường X,Phường 1,cap3,1.2.3.4:9153\n", lang="vi")
    assert problems == ["schools.csv:2: cấp học 'cap3' không hợp lệ — dùng mam_non, tieu_hoc, thcs, thpt, "
                        "nhiều cấp cách nhau bằng ';'"]


def test_header_problems():
    assert "missing column(s) address" in _problems("id,name,ward,level\n1,a,b,thcs\n")[0]
    assert "empty" in _problems("\n\n")[0]
    assert "only a header" in _problems("id,name,ward,level,address\n")[0]


def test_multiline_quoted_field_reports_the_row_start():
    text = 'id,name,ward,level,address\n"A","Trường\nA",Phường 1,thcs,1.2.3.4:1\nB,Trường B,Phường 1,xx,1.2.3.5:1\n'
    assert _problems(text)[0].startswith("schools.csv:4:")


def test_levels():
    assert parse_levels("THCS; thpt") == ("thcs", "thpt")
    assert parse_levels("mầm non + tiểu học") == ("mam_non", "tieu_hoc")
    assert parse_levels("thcs;university") is None
    assert parse_levels("") is None


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "schools.csv"
    path.write_bytes("id,name,ward,level,address\n1,Tr\u01b0\u1eddng,P,thcs,h:1\n".encode("utf-8")
                     + b"2,\xe0\xe1,P,thcs,h:2\n")
    with pytest.raises(InventoryError) as exc:
        load_inventory(path)
    assert exc.value.problems[0].line == 3 and exc.value.problems[0].key == "inventory.not_utf8"


def test_write_and_read_back(tmp_path):
    schools = read_inventory(GOOD)
    path = tmp_path / "targets.json"
    write_file_sd(schools, path)
    assert json.loads(path.read_text(encoding="utf-8")) == to_file_sd(schools)
    back = load_targets(path)
    assert [(s.id, s.level, s.address) for s in back] == [(s.id, s.level, s.address) for s in schools]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_cli_targets_ok_and_failure(tmp_path, capsys):
    good, bad, out = tmp_path / "good.csv", tmp_path / "bad.csv", tmp_path / "targets.json"
    good.write_text(GOOD, encoding="utf-8")
    assert main(["department", "targets", str(good), "-o", str(out), "--lang", "en"]) == 0
    assert "Wrote 4 schools (1 sending by remote write)" in capsys.readouterr().err
    first = out.read_text(encoding="utf-8")
    bad.write_text("id,name,ward,level,address\nA,Trường A,P,thcs,nope\n", encoding="utf-8")
    assert main(["department", "targets", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: địa chỉ 'nope' thiếu cổng" in err and "không được ghi" in err
    assert out.read_text(encoding="utf-8") == first  # the last good file stays for Prometheus
    assert main(["department", "targets", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["labels"]["school_id"] == "01001001"


def test_shipped_sample_targets_match_the_sample_inventory():
    from report_promproc import DEPLOY

    schools = load_inventory(DEPLOY / "schools.example.csv")
    assert json.loads((DEPLOY / "targets.json").read_text(encoding="utf-8")) == to_file_sd(schools)
