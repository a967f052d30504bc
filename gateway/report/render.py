"""The compliance report as HTML (reading and printing), CSV (Excel, UTF-8 with BOM) and JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

import yaml

from gateway import __version__
from gateway.report.charts import PALETTE, bar_chart
from gateway.report.compute import GroupRow, Report, SchoolStatus
from gateway.report.messages import MESSAGES, tr
from gateway.shipped import shipped

FORMATS = ("html", "csv", "json")


class Names:
    """Display names of categories, bands, levels and bypass kinds in one language."""

    def __init__(self, lang: str, categories_file: Path | None = None):
        self.lang = lang
        self.categories: dict[str, str] = {}
        path = categories_file or shipped("policies/department/categories.yaml")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            for cid, spec in (data.get("categories") or {}).items():
                name = (spec or {}).get("name") or {}
                self.categories[cid] = name.get(lang) or name.get("vi") or cid
        except (OSError, yaml.YAMLError, AttributeError):
            pass  # ids are shown instead; a report must not fail over display names

    def _pick(self, prefix: str, key: str) -> str:
        if f"{prefix}.{key}" in MESSAGES:
            return tr(f"{prefix}.{key}", self.lang)
        return key or tr("r.unknown", self.lang)

    def category(self, key: str) -> str:
        return self.categories.get(key) or self._pick("category", key)

    def band(self, key: str) -> str:
        return self._pick("band", key)

    def level(self, key: str) -> str:
        return self._pick("band", key) if key else tr("r.unknown", self.lang)

    def levels(self, keys: Sequence[str]) -> str:
        return ", ".join(self.level(k) for k in keys) if keys else tr("r.unknown", self.lang)

    def kind(self, key: str) -> str:
        return self._pick("kind", key)

    def ward(self, key: str) -> str:
        return key or tr("r.unknown", self.lang)


class Fmt:
    """Numbers, shares and dates the way a reader in `lang` writes them."""

    def __init__(self, lang: str, tz: dt.tzinfo):
        self.lang, self.tz = lang, tz

    def int(self, value: float | None) -> str:
        if value is None:
            return "—"
        text = f"{round(value):,}"
        return text.replace(",", ".") if self.lang == "vi" else text

    def pct(self, value: float | None) -> str:
        if value is None:
            return "—"
        text = f"{value * 100:.1f}%"
        return text.replace(".", ",") if self.lang == "vi" else text

    def pct0(self, value: float) -> str:
        return f"{value * 100:.0f}%"

    def date(self, day: dt.date | None) -> str:
        if day is None:
            return "—"
        return day.strftime("%d/%m/%Y") if self.lang == "vi" else day.isoformat()

    def time(self, when: dt.datetime | float | None) -> str:
        if when is None:
            return "—"
        if not isinstance(when, dt.datetime):
            when = dt.datetime.fromtimestamp(when, self.tz)
        when = when.astimezone(self.tz)
        return when.strftime("%d/%m/%Y %H:%M") if self.lang == "vi" else when.strftime("%Y-%m-%d %H:%M")

    def version(self, value: float | None) -> str:
        if value is None:
            return "—"
        return f"{value:g}" if value != int(value) else str(int(value))

    def count_share(self, count: int, row: GroupRow) -> str:
        return f"{self.int(count)} ({self.pct(row.share(count))})"


def _period_text(report: Report, fmt: Fmt) -> str:
    p = report.period
    return f"{fmt.date(p.first_day)} – {fmt.date(p.last_day)} ({tr('r.days', fmt.lang, days=p.days)})"


def _target_cell(ok: bool | None, lang: str) -> tuple[str, str]:
    if ok is None:
        return "—", "na"
    return (tr("r.pass", lang), "pass") if ok else (tr("r.fail", lang), "fail")


def _group_columns(report: Report, lang: str, first: str) -> list[str]:
    cols = [first, tr("r.registered", lang), tr("r.reporting", lang), tr("r.protected", lang),
            tr("r.current", lang), tr("r.compliant", lang), tr("r.day_coverage", lang)]
    fmt = Fmt(lang, report.period.tz)
    return cols + [tr("r.target_col", lang, year=year, share=fmt.pct0(goal)) for year, goal in report.targets]


def _table(head: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], *, table_id: str = "",
           foot: Sequence[Sequence[tuple[str, str]]] = ()) -> str:
    """rows of (text, css class) cells; text is escaped here."""
    def cells(row, tag):
        return "".join(f'<{tag} class="{cls}">{escape(text)}</{tag}>' if cls else f"<{tag}>{escape(text)}</{tag}>"
                       for text, cls in row)
    out = [f'<table id="{table_id}">' if table_id else "<table>", "<thead><tr>",
           "".join(f"<th>{escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    out += [f"<tr>{cells(row, 'td')}</tr>" for row in rows]
    out.append("</tbody>")
    if foot:
        out.append("<tfoot>" + "".join(f"<tr>{cells(row, 'td')}</tr>" for row in foot) + "</tfoot>")
    out.append("</table>")
    return "".join(out)


def _group_row(row: GroupRow, label: str, fmt: Fmt) -> list[tuple[str, str]]:
    cells = [(label, "name"), (fmt.int(row.registered), "num"), (fmt.count_share(row.reporting, row), "num"),
             (fmt.count_share(row.protected, row), "num"), (fmt.count_share(row.current, row), "num"),
             (fmt.count_share(row.compliant, row), "num"), (fmt.pct(row.day_coverage), "num")]
    return cells + [_target_cell(ok, fmt.lang) for ok in row.targets]


CSS = """
:root { --ink: #1b1b1b; --muted: #5d6d7e; --line: #c8ced3; --head: #eaf0f6; --accent: #1f5f99; }
* { box-sizing: border-box; }
body { font-family: "Noto Sans", "DejaVu Sans", "Segoe UI", Arial, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1100px; padding: 24px; font-size: 14px; line-height: 1.45; }
h1 { font-size: 28px; margin: 8px 0; color: var(--accent); }
h2 { font-size: 19px; border-bottom: 2px solid var(--accent); padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; margin-top: 20px; }
.org { text-transform: uppercase; letter-spacing: .04em; font-weight: bold; margin: 0; }
.subtitle { color: var(--muted); margin-top: 0; }
.cover { border: 1px solid var(--line); padding: 28px; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; margin: 10px 0 6px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 7px; text-align: left; vertical-align: top; }
thead th { background: var(--head); }
tfoot td { font-weight: bold; background: #f6f8fa; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.pass { color: #1e7b34; font-weight: bold; }
td.fail { color: #b03a2e; font-weight: bold; }
td.na { color: var(--muted); }
table.meta { width: auto; }
table.meta th { background: none; text-align: left; padding-right: 18px; }
.kpis { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin: 18px 0; }
.kpi { border: 1px solid var(--line); border-radius: 6px; padding: 12px; }
.kpi .value { font-size: 26px; font-weight: bold; color: var(--accent); }
.kpi .label { color: var(--muted); }
.note { color: var(--muted); font-size: 12.5px; }
.anon { border-left: 4px solid var(--accent); background: #f4f8fb; padding: 10px 14px; }
svg.chart { display: block; margin: 10px 0 16px; max-width: 100%; height: auto; font-family: inherit; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
@page { size: A4; margin: 16mm 14mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  .cover { border: none; page-break-after: always; break-after: page; }
  h2 { break-after: avoid; }
  tr, svg.chart, .kpi { break-inside: avoid; }
  thead { display: table-header-group; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def render_html(report: Report, lang: str = "vi") -> str:
    """The whole report as one self-contained HTML page."""
    t = lambda key, **kw: tr(key, lang, **kw)  # noqa: E731 - a local shorthand keeps the markup readable
    fmt, names = Fmt(lang, report.period.tz), Names(lang)
    total = report.total
    parts: list[str] = []
    add = parts.append
    add(f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(t('r.title'))} — {escape(_period_text(report, fmt))}</title>"
        f"<style>{CSS}</style></head><body>")
    # cover
    add('<section class="cover" id="cover">')
    add(f'<p class="org">{escape(t("r.org"))}</p><h1>{escape(t("r.title"))}</h1>'
        f'<p class="subtitle">{escape(t("r.subtitle"))}</p>')
    meta = [(t("r.period"), _period_text(report, fmt)),
            (t("r.generated"), f"{fmt.time(report.generated_at)} ({t('r.timezone')})"),
            (t("r.source"), report.source or "—"),
            (t("r.inventory"), t("r.schools_count", count=fmt.int(total.registered)) if report.inventory_used
             else t("r.inventory_none"))]
    add('<table class="meta">' + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in meta)
        + "</table>")
    add(f'<h3>{escape(t("r.key_figures"))}</h3><div class="kpis" id="kpis">')
    for key, count in (("r.reporting", total.reporting), ("r.protected", total.protected),
                       ("r.current", total.current), ("r.compliant", total.compliant)):
        add(f'<div class="kpi"><div class="value">{escape(fmt.pct(total.share(count)))}</div>'
            f'<div class="label">{escape(t(key))}: {escape(fmt.int(count))} / {escape(fmt.int(total.registered))}'
            f"</div></div>")
    add("</div>")
    add(f'<p class="anon">{escape(t("r.anonymity_law"))}</p></section>')

    # 1. by ward
    add(f'<section id="by-ward"><h2>1. {escape(t("r.by_ward"))}</h2>')
    add(_table(_group_columns(report, lang, t("r.ward")),
               [_group_row(w, names.ward(w.key), fmt) for w in report.wards], table_id="ward-table",
               foot=[_group_row(total, t("r.all"), fmt)]))
    add(f'<p class="note">{escape(t("r.compliant_long"))}.</p>')
    lines = [(goal, f"{year}: {fmt.pct0(goal)}") for year, goal in report.targets]
    if report.wards:
        add(bar_chart(t("r.chart_ward"), [(names.ward(w.key), w.compliant_share or 0.0) for w in report.wards],
                      fmt=fmt.pct, maximum=1.0, lines=lines, chart_id="chart-ward"))
    add("</section>")

    # 2. by level
    add(f'<section id="by-level"><h2>2. {escape(t("r.by_level"))}</h2>')
    add(_table(_group_columns(report, lang, t("r.level")),
               [_group_row(lv, names.level(lv.key), fmt) for lv in report.levels], table_id="level-table"))
    add(f'<p class="note">{escape(t("r.level_note"))}</p>')
    if report.levels:
        add(bar_chart(t("r.chart_level"), [(names.level(lv.key), lv.compliant_share or 0.0)
                                           for lv in report.levels],
                      fmt=fmt.pct, maximum=1.0, lines=lines, chart_id="chart-level", color=PALETTE[2]))
    add("</section>")

    # 3. plan targets
    add(f'<section id="plan"><h2>3. {escape(t("r.plan"))}</h2><p>{escape(t("r.plan_intro"))}</p>')
    plan_rows = []
    for i, (year, goal) in enumerate(report.targets):
        met = sum(1 for w in report.wards if w.targets[i])
        plan_rows.append([(t("r.target_row", year=year, share=fmt.pct0(goal)), "name"),
                          (fmt.pct(total.compliant_share), "num"), _target_cell(total.targets[i], lang),
                          (f"{fmt.int(met)} / {fmt.int(len(report.wards))}", "num")])
    add(_table([t("r.plan"), t("r.actual"), t("r.all"), t("r.wards_meeting")], plan_rows, table_id="plan-table"))
    policy_notes = []
    if report.fleet_newest_bundle is not None:
        policy_notes.append(t("r.fleet_newest", version=fmt.version(report.fleet_newest_bundle)))
    if report.min_bundle_version is not None:
        policy_notes.append(t("r.min_version", version=fmt.version(report.min_bundle_version)))
    if policy_notes:
        add(f'<p class="note">{escape(" · ".join(policy_notes))}</p>')
    add("</section>")

    # 4. blocks
    add(f'<section id="blocks"><h2>4. {escape(t("r.blocks"))}</h2>')
    blocks_total = report.blocks.total
    rate = blocks_total / report.queries_total if report.queries_total else None
    add(f"<p>{escape(t('r.queries_total'))}: <b>{escape(fmt.int(report.queries_total))}</b> · "
        f"{escape(t('r.blocks_total'))}: <b>{escape(fmt.int(blocks_total))}</b> · "
        f"{escape(t('r.block_rate'))}: <b>{escape(fmt.pct(rate))}</b></p>")
    if report.blocks.cells:
        bands = report.blocks.columns()
        rows = [[(names.category(c), "name")] + [(fmt.int(report.blocks.get(c, b)), "num") for b in bands]
                + [(fmt.int(report.blocks.row_totals()[c]), "num")] for c in report.blocks.rows()]
        col_totals = report.blocks.column_totals()
        add(_table([t("r.category")] + [names.band(b) for b in bands] + [t("r.total")], rows,
                   table_id="blocks-table",
                   foot=[[(t("r.total"), "name")] + [(fmt.int(col_totals[b]), "num") for b in bands]
                         + [(fmt.int(blocks_total), "num")]]))
        add(bar_chart(t("r.chart_blocks"), [(names.category(c), report.blocks.row_totals()[c])
                                            for c in report.blocks.rows()],
                      fmt=fmt.int, chart_id="chart-blocks", color=PALETTE[1]))
        add(f'<h3>{escape(t("r.blocks_by_band"))}</h3>')
        band_rows = []
        for b in bands:
            queries = report.queries_by_band.get(b, 0)
            band_rows.append([(names.band(b), "name"), (fmt.int(queries), "num"), (fmt.int(col_totals[b]), "num"),
                              (fmt.pct(col_totals[b] / queries if queries else None), "num")])
        add(_table([t("r.band"), t("r.queries_total"), t("r.blocks_total"), t("r.block_rate")], band_rows,
                   table_id="band-table"))
    else:
        add(f'<p class="note">{escape(t("r.no_data"))}</p>')
    wards = sorted(set(report.queries_by_ward) | set(report.blocks_by_ward))
    if wards:
        add(f'<h3>{escape(t("r.traffic_by_ward"))}</h3>')
        ward_rows = []
        for w in wards:
            q, b = report.queries_by_ward.get(w, 0), report.blocks_by_ward.get(w, 0)
            ward_rows.append([(names.ward(w), "name"), (fmt.int(q), "num"), (fmt.int(b), "num"),
                              (fmt.pct(b / q if q else None), "num"),
                              (fmt.int(report.bypass_by_ward.get(w, 0)), "num")])
        add(_table([t("r.ward"), t("r.queries_total"), t("r.blocks_total"), t("r.block_rate"), t("r.bypass")],
                   ward_rows, table_id="ward-traffic-table"))
    add("</section>")

    # 5. bypass
    add(f'<section id="bypass"><h2>5. {escape(t("r.bypass"))}</h2><p>{escape(t("r.bypass_intro"))}</p>')
    if report.bypass.cells:
        bands = report.bypass.columns()
        totals = report.bypass.row_totals()
        col_totals = report.bypass.column_totals()
        rows = [[(names.kind(k), "name")] + [(fmt.int(report.bypass.get(k, b)), "num") for b in bands]
                + [(fmt.int(totals[k]), "num")] for k in report.bypass.rows()]
        add(_table([t("r.kind")] + [names.band(b) for b in bands] + [t("r.total")], rows, table_id="bypass-table",
                   foot=[[(t("r.total"), "name")] + [(fmt.int(col_totals[b]), "num") for b in bands]
                         + [(fmt.int(report.bypass.total), "num")]]))
        add(bar_chart(t("r.chart_bypass"), [(names.kind(k), totals[k]) for k in report.bypass.rows()],
                      fmt=fmt.int, chart_id="chart-bypass", color=PALETTE[3]))
    else:
        add(f'<p class="note">{escape(t("r.no_data"))}</p>')
    add("</section>")

    # 6. schools
    add(f'<section id="schools"><h2>6. {escape(t("r.schools"))}</h2>')
    add(_table(_school_columns(lang), [_school_row(s, fmt, names) for s in report.schools], table_id="school-table"))
    if report.unregistered:
        add(f'<h3>{escape(t("r.unregistered"))}</h3><p class="note">{escape(t("r.unregistered_note"))}</p>')
        add(_table(_school_columns(lang), [_school_row(s, fmt, names) for s in report.unregistered],
                   table_id="unregistered-table"))
    add("</section>")

    # 7. anonymity and method
    add(f'<section id="anonymity"><h2>7. {escape(t("r.anonymity"))}</h2>')
    add(f'<p class="anon"><b>{escape(t("r.anonymity_law"))}</b></p><p>{escape(t("r.anonymity_text"))}</p>')
    add(f'<h3>{escape(t("r.method"))}</h3><ul>')
    for key in ("r.method_reporting", "r.method_protected", "r.method_current", "r.method_counts"):
        add(f"<li>{escape(t(key, recent=report.recent_days))}</li>")
    add("</ul></section>")
    add(f"<footer>{escape(t('r.footer', version=__version__))}</footer></body></html>")
    return "".join(parts)


def _school_columns(lang: str) -> list[str]:
    return [tr(k, lang) for k in ("r.school", "r.ward", "r.level", "r.days_reporting", "r.last_seen",
                                  "r.protected", "r.policy_version", "r.bundle_version", "r.current",
                                  "r.policy_loaded", "r.bundle_expiry")]


def _yes_no(value: bool | None, lang: str, on_off: bool = False) -> str:
    if value is None:
        return "—"
    if on_off:
        return tr("r.on" if value else "r.off", lang)
    return tr("r.yes" if value else "r.no", lang)


def _school_row(s: SchoolStatus, fmt: Fmt, names: Names) -> list[tuple[str, str]]:
    protection = None if s.protection_last is None else s.protection_last >= 1
    return [(f"{s.name} / {s.id}", "name"), (names.ward(s.ward), ""), (names.levels(s.levels), ""),
            (fmt.int(s.days_reporting), "num"), (fmt.date(s.last_day), "num"),
            (_yes_no(protection, fmt.lang, on_off=True), "" if protection else "fail"),
            (s.policy_version or "—", ""), (fmt.version(s.bundle_version), "num"),
            (_yes_no(s.current, fmt.lang), "" if s.current else "fail"),
            (fmt.time(s.policy_loaded), "num"), (fmt.time(s.bundle_expiry), "num")]


# -- CSV -------------------------------------------------------------------------------------------

def render_csv(report: Report, lang: str = "vi") -> str:
    """Sectioned CSV (a title row, a header row, data rows, a blank row); starts with a UTF-8 BOM for Excel."""
    t = lambda key, **kw: tr(key, lang, **kw)  # noqa: E731
    fmt, names = Fmt(lang, report.period.tz), Names(lang)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")

    def pct(value: float | None) -> str:
        # plain numbers (dot decimal) so a spreadsheet can compute with them
        return "" if value is None else f"{value * 100:.1f}"

    def iso(value: float | None) -> str:
        return "" if value is None else dt.datetime.fromtimestamp(value, report.period.tz).isoformat(timespec="minutes")

    w.writerow([t("r.title")])
    w.writerow([t("r.period"), report.period.first_day.isoformat(), report.period.last_day.isoformat()])
    w.writerow([t("r.generated"), report.generated_at.astimezone(report.period.tz).isoformat(timespec="minutes")])
    w.writerow([t("r.source"), report.source])
    w.writerow([t("r.anonymity_law")])
    w.writerow([])

    def group_section(title: str, first: str, rows: Sequence[tuple[str, GroupRow]]) -> None:
        w.writerow([title])
        head = [first, t("r.registered"), t("r.reporting"), t("r.protected"), t("r.current"), t("r.compliant"),
                f"{t('r.reporting')} %", f"{t('r.protected')} %", f"{t('r.current')} %", f"{t('r.compliant')} %",
                f"{t('r.day_coverage')} %"]
        head += [t("r.target_col", year=y, share=fmt.pct0(g)) for y, g in report.targets]
        w.writerow(head)
        for label, row in rows:
            w.writerow([label, row.registered, row.reporting, row.protected, row.current, row.compliant,
                        pct(row.share(row.reporting)), pct(row.share(row.protected)), pct(row.share(row.current)),
                        pct(row.compliant_share), pct(row.day_coverage)]
                       + [_target_cell(ok, lang)[0] for ok in row.targets])
        w.writerow([])

    group_section(t("r.by_ward"), t("r.ward"),
                  [(names.ward(r.key), r) for r in report.wards] + [(t("r.all"), report.total)])
    group_section(t("r.by_level"), t("r.level"), [(names.level(r.key), r) for r in report.levels])

    def count_section(title: str, first: str, table, label: Callable[[str], str]) -> None:
        w.writerow([title])
        bands = table.columns()
        w.writerow([first, "id"] + [names.band(b) for b in bands] + [t("r.total")])
        totals = table.row_totals()
        for row in table.rows():
            w.writerow([label(row), row] + [table.get(row, b) for b in bands] + [totals[row]])
        col = table.column_totals()
        w.writerow([t("r.total"), ""] + [col[b] for b in bands] + [table.total])
        w.writerow([])

    w.writerow([t("r.queries_total"), report.queries_total])
    w.writerow([])
    count_section(t("r.blocks"), t("r.category"), report.blocks, names.category)
    count_section(t("r.bypass"), t("r.kind"), report.bypass, names.kind)

    w.writerow([t("r.traffic_by_ward")])
    w.writerow([t("r.ward"), t("r.queries_total"), t("r.blocks_total"), t("r.bypass")])
    for ward in sorted(set(report.queries_by_ward) | set(report.blocks_by_ward)):
        w.writerow([names.ward(ward), report.queries_by_ward.get(ward, 0), report.blocks_by_ward.get(ward, 0),
                    report.bypass_by_ward.get(ward, 0)])
    w.writerow([])

    def school_section(title: str, schools: Sequence[SchoolStatus]) -> None:
        w.writerow([title])
        w.writerow([t("r.school"), "school_id", t("r.ward"), t("r.level"), t("r.days_reporting"), t("r.last_seen"),
                    t("r.reporting"), t("r.protected"), t("r.policy_version"), t("r.bundle_version"),
                    t("r.current"), t("r.policy_loaded"), t("r.bundle_expiry")])
        for s in schools:
            w.writerow([s.name, s.id, s.ward, ";".join(s.levels), s.days_reporting,
                        s.last_day.isoformat() if s.last_day else "", _yes_no(s.reporting, lang),
                        _yes_no(s.protected, lang), s.policy_version or "", fmt.version(s.bundle_version)
                        if s.bundle_version is not None else "", _yes_no(s.current, lang),
                        iso(s.policy_loaded), iso(s.bundle_expiry)])
        w.writerow([])

    school_section(t("r.schools"), report.schools)
    if report.unregistered:
        school_section(t("r.unregistered"), report.unregistered)
    w.writerow([t("r.anonymity_text")])
    return "\ufeff" + buf.getvalue()


# -- JSON ------------------------------------------------------------------------------------------

def _group_json(row: GroupRow, targets: Sequence[tuple[int, float]]) -> dict:
    return {"key": row.key, "registered": row.registered, "reporting": row.reporting, "protected": row.protected,
            "current_policy": row.current, "compliant": row.compliant,
            "shares": {"reporting": row.share(row.reporting), "protected": row.share(row.protected),
                       "current_policy": row.share(row.current), "compliant": row.compliant_share},
            "day_coverage": row.day_coverage,
            "targets": [{"year": y, "share": g, "met": ok} for (y, g), ok in zip(targets, row.targets, strict=True)]}


def _school_json(s: SchoolStatus) -> dict:
    return {"school_id": s.id, "name": s.name, "ward": s.ward, "levels": list(s.levels), "registered": s.registered,
            "days_reporting": s.days_reporting, "days_protected": s.days_protected,
            "last_day": s.last_day.isoformat() if s.last_day else None, "reporting": s.reporting,
            "protected": s.protected, "current_policy": s.current, "compliant": s.compliant,
            "protection_enabled_last": s.protection_last, "bundle_version": s.bundle_version,
            "policy_version": s.policy_version, "policy_loaded_timestamp": s.policy_loaded,
            "bundle_expiry_timestamp": s.bundle_expiry}


def _table_json(table, row_name: str) -> list[dict]:
    totals = table.row_totals()
    return [{row_name: row, "total": totals[row],
             "by_band": {b: table.get(row, b) for b in table.columns() if table.get(row, b)}} for row in table.rows()]


def report_json(report: Report, lang: str = "vi") -> dict:
    """The report as plain data (English keys, ids as values, `names` for display)."""
    names = Names(lang)
    p = report.period
    return {
        "title": tr("r.title", lang),
        "period": {"from": p.first_day.isoformat(), "to": p.last_day.isoformat(), "days": p.days,
                   "timezone": str(p.tz), "start": p.start.isoformat(), "end": p.end.isoformat()},
        "generated_at": report.generated_at.astimezone(p.tz).isoformat(timespec="seconds"),
        "source": report.source,
        "inventory_used": report.inventory_used,
        "anonymity": tr("r.anonymity_law", lang),
        "definitions": {"recent_days": report.recent_days, "fleet_newest_bundle": report.fleet_newest_bundle,
                        "min_bundle_version": report.min_bundle_version},
        "targets": [{"year": y, "share": g} for y, g in report.targets],
        "total": _group_json(report.total, report.targets),
        "wards": [_group_json(r, report.targets) for r in report.wards],
        "levels": [_group_json(r, report.targets) for r in report.levels],
        "queries_total": report.queries_total,
        "queries_by_band": report.queries_by_band,
        "blocks_total": report.blocks.total,
        "blocks_by_category": _table_json(report.blocks, "category"),
        "blocks_by_ward": report.blocks_by_ward,
        "queries_by_ward": report.queries_by_ward,
        "bypass_total": report.bypass.total,
        "bypass_by_kind": _table_json(report.bypass, "kind"),
        "bypass_by_ward": report.bypass_by_ward,
        "schools": [_school_json(s) for s in report.schools],
        "unregistered": [_school_json(s) for s in report.unregistered],
        "names": {"categories": {c: names.category(c) for c in report.blocks.rows()},
                  "bands": {b: names.band(b) for b in set(report.blocks.columns()) | set(report.bypass.columns())},
                  "kinds": {k: names.kind(k) for k in report.bypass.rows()}},
    }


def render_json(report: Report, lang: str = "vi") -> str:
    return json.dumps(report_json(report, lang), ensure_ascii=False, indent=2) + "\n"


def render(report: Report, fmt: str, lang: str = "vi") -> str:
    """Render in `fmt` ('html', 'csv' or 'json')."""
    return {"html": render_html, "csv": render_csv, "json": render_json}[fmt](report, lang)
