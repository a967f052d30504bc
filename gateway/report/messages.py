"""Every Department-side message and report label, in Vietnamese (default) and English."""

from __future__ import annotations

from gateway.i18n import DEFAULT_LANG
from gateway.i18n import tr as gateway_tr

# key: (Vietnamese, English). Errors say what is wrong, then (after " — ") how to fix it.
MESSAGES: dict[str, tuple[str, str]] = {
    # inventory (schools.csv)
    "inventory.empty": ("tệp trống — cần dòng tiêu đề id,name,ward,level,address và một dòng cho mỗi trường",
                        "the file is empty — it needs the header id,name,ward,level,address and one row per school"),
    "inventory.no_rows": ("chỉ có dòng tiêu đề, không có trường nào", "only a header, no school rows"),
    "inventory.missing_columns": ("thiếu cột {missing} — dòng tiêu đề cần có: {expected}",
                                  "missing column(s) {missing} — the header must have: {expected}"),
    "inventory.short_row": ("dòng có {got} cột nhưng tiêu đề có {want} — kiểm tra dấu phẩy và dấu ngoặc kép",
                            "the row has {got} columns but the header has {want} — check commas and quotes"),
    "inventory.empty_cell": ("cột '{column}' trống", "column '{column}' is empty"),
    "inventory.bad_id": ("mã trường '{value}' không hợp lệ — chỉ dùng chữ không dấu, số, '.', '_' và '-'",
                         "school id '{value}' is not valid — use ASCII letters, digits, '.', '_' and '-'"),
    "inventory.duplicate_id": ("mã trường '{value}' bị lặp (đã có ở dòng {first})",
                               "school id '{value}' appears twice (first at line {first})"),
    "inventory.bad_level": ("cấp học '{value}' không hợp lệ — dùng {allowed}, nhiều cấp cách nhau bằng ';'",
                            "level '{value}' is not valid — use {allowed}, several separated by ';'"),
    "inventory.address_url": ("địa chỉ '{value}' phải là host:cổng, không kèm http:// hay đường dẫn",
                              "address '{value}' must be host:port, without http:// or a path"),
    "inventory.address_port": ("địa chỉ '{value}' thiếu cổng hoặc cổng sai — ví dụ 10.1.2.3:9153; "
                               "ghi 'agent' nếu thiết bị gửi số liệu qua remote write",
                               "address '{value}' has no valid port — e.g. 10.1.2.3:9153; "
                               "write 'agent' if the box sends by remote write"),
    "inventory.address_host": ("tên máy hoặc địa chỉ IP trong '{value}' không hợp lệ",
                               "the host name or IP address in '{value}' is not valid"),
    "inventory.address_ipv6": ("địa chỉ IPv6 phải đặt trong ngoặc vuông, ví dụ [2001:db8::1]:9153 (đang là '{value}')",
                               "an IPv6 address needs brackets, e.g. [2001:db8::1]:9153 (got '{value}')"),
    "inventory.duplicate_address": ("địa chỉ '{value}' đã dùng cho trường ở dòng {first} — mỗi thiết bị một trường",
                                    "address '{value}' is already used at line {first} — one box per school"),
    "inventory.unreadable": ("không đọc được tệp: {detail}", "cannot read the file: {detail}"),
    "inventory.not_utf8": ("tệp không phải UTF-8 — trong Excel chọn Lưu thành “CSV UTF-8”",
                           "the file is not UTF-8 — in Excel, save as “CSV UTF-8”"),
    "targets.written": ("Đã ghi {count} trường ({agents} gửi qua remote write) vào {path}.",
                        "Wrote {count} schools ({agents} sending by remote write) to {path}."),
    "targets.failed": ("{count} lỗi; tệp targets không được ghi (Prometheus giữ danh sách cũ).",
                       "{count} errors; the targets file was not written (Prometheus keeps the old list)."),
    "targets.bad_file": ("tệp targets '{path}' không đọc được: {detail}",
                         "cannot read targets file '{path}': {detail}"),
    # report command
    "cli.bad_date": ("ngày '{value}' không hợp lệ — dùng YYYY-MM-DD, ví dụ 2026-12-31",
                     "date '{value}' is not valid — use YYYY-MM-DD, e.g. 2026-12-31"),
    "cli.bad_period": ("kỳ báo cáo sai: ngày bắt đầu {start} sau ngày kết thúc {end}",
                       "bad period: the start {start} is after the end {end}"),
    "cli.long_period": ("kỳ báo cáo dài {days} ngày — tối đa {limit} ngày",
                        "the period is {days} days long — at most {limit} days"),
    "cli.prometheus_failed": ("không truy vấn được Prometheus tại {url}: {detail}",
                              "querying Prometheus at {url} failed: {detail}"),
    "cli.written": ("Đã ghi báo cáo vào {path}.", "Report written to {path}."),
    # report text
    "r.title": ("Báo cáo tuân thủ lọc nội dung", "Content-filtering compliance report"),
    "r.org": ("Sở Giáo dục và Đào tạo Hà Nội", "Hanoi Department of Education and Training"),
    "r.subtitle": ("Hệ thống cổng an toàn mạng trường học", "School network-safety gateways"),
    "r.period": ("Kỳ báo cáo", "Reporting period"),
    "r.generated": ("Thời điểm lập báo cáo", "Generated"),
    "r.source": ("Nguồn số liệu", "Data source"),
    "r.inventory": ("Danh sách trường đăng ký", "School inventory"),
    "r.inventory_none": ("không có — lấy từ các thiết bị đã gửi số liệu", "none — taken from the boxes that reported"),
    "r.timezone": ("Giờ Việt Nam (UTC+7)", "Vietnam time (UTC+7)"),
    "r.days": ("{days} ngày", "{days} days"),
    "r.key_figures": ("Các chỉ số chính", "Key figures"),
    "r.summary": ("Tổng hợp", "Summary"),
    "r.registered": ("Trường đăng ký", "Schools registered"),
    "r.reporting": ("Đang gửi số liệu", "Reporting"),
    "r.protected": ("Bảo vệ đang bật", "Protection active"),
    "r.current": ("Chính sách hiện hành", "Current policy"),
    "r.compliant": ("Đạt yêu cầu", "Compliant"),
    "r.compliant_long": ("Đạt yêu cầu (đang gửi số liệu, bảo vệ bật, chính sách hiện hành)",
                         "Compliant (reporting, protection on, current policy)"),
    "r.day_coverage": ("Tỷ lệ ngày có số liệu", "Days with data"),
    "r.by_ward": ("Theo phường, xã", "By ward"),
    "r.ward": ("Phường/xã", "Ward"),
    "r.by_level": ("Theo cấp học", "By school level"),
    "r.level": ("Cấp học", "Level"),
    "r.level_note": ("Trường liên cấp được tính ở mỗi cấp trường dạy, nên tổng theo cấp có thể lớn hơn tổng số trường.",
                     "A multi-level school counts under each level it teaches, so the levels may add up to more "
                     "than the total."),
    "r.plan": ("Mục tiêu kế hoạch", "Plan targets"),
    "r.plan_intro": ("Chỉ tiêu so sánh: tỷ lệ trường đạt yêu cầu trên tổng số trường đăng ký.",
                     "Measured: the share of registered schools that are compliant."),
    "r.target_col": ("Mục tiêu {year} (≥{share})", "Target {year} (≥{share})"),
    "r.target_row": ("Đến năm {year}: ≥{share} số trường", "By {year}: ≥{share} of schools"),
    "r.wards_meeting": ("Số phường/xã đạt", "Wards meeting it"),
    "r.actual": ("Hiện đạt", "Achieved"),
    "r.pass": ("Đạt", "Met"),
    "r.fail": ("Chưa đạt", "Not met"),
    "r.all": ("Toàn Thành phố", "Whole city"),
    "r.blocks": ("Số lượt chặn theo danh mục", "Blocks by category"),
    "r.blocks_by_band": ("Số lượt chặn theo nhóm tuổi", "Blocks by age band"),
    "r.traffic_by_ward": ("Truy vấn và lượt chặn theo phường, xã", "Queries and blocks by ward"),
    "r.category": ("Danh mục", "Category"),
    "r.band": ("Nhóm tuổi", "Age band"),
    "r.total": ("Tổng", "Total"),
    "r.queries_total": ("Tổng số truy vấn", "Total queries"),
    "r.blocks_total": ("Tổng số lượt chặn", "Total blocks"),
    "r.block_rate": ("Tỷ lệ chặn", "Block rate"),
    "r.bypass": ("Lượt cố gắng vượt bộ lọc", "Bypass attempts"),
    "r.bypass_intro": ("Số lần thiết bị trong trường thử dùng DNS mã hoá, máy chủ DNS khác hoặc dịch vụ vượt tường "
                       "lửa (không kèm danh tính).",
                       "Times devices at school tried encrypted DNS, another resolver or a circumvention service "
                       "(no identities)."),
    "r.kind": ("Hình thức", "Kind"),
    "r.schools": ("Danh sách trường", "Schools"),
    "r.school": ("Trường / Mã trường", "School / School ID"),
    "r.days_reporting": ("Số ngày có số liệu", "Days reporting"),
    "r.last_seen": ("Ngày gửi gần nhất", "Last reported"),
    "r.policy_version": ("Phiên bản chính sách", "Policy version"),
    "r.bundle_version": ("Gói chính sách", "Policy bundle"),
    "r.bundle_expiry": ("Gói hết hạn", "Bundle expires"),
    "r.policy_loaded": ("Cập nhật danh sách gần nhất", "Last list update"),
    "r.fleet_newest": ("Gói chính sách mới nhất trong hệ thống: {version}", "Newest bundle in the fleet: {version}"),
    "r.min_version": ("Gói tối thiểu được coi là hiện hành: {version}",
                      "Oldest bundle still counted as current: {version}"),
    "r.unregistered": ("Thiết bị gửi số liệu nhưng chưa có trong danh sách đăng ký",
                       "Boxes reporting that are not in the inventory"),
    "r.unregistered_note": ("Các trường này không được tính trong các tỷ lệ ở trên — bổ sung vào schools.csv.",
                            "These are not counted in the shares above — add them to schools.csv."),
    "r.no_data": ("Không có số liệu trong kỳ báo cáo.", "No data in the reporting period."),
    "r.yes": ("Có", "Yes"),
    "r.no": ("Không", "No"),
    "r.on": ("Bật", "On"),
    "r.off": ("Tắt", "Off"),
    "r.unknown": ("Không rõ", "Unknown"),
    "r.schools_count": ("{count} trường", "{count} schools"),
    "r.chart_ward": ("Tỷ lệ trường đạt yêu cầu theo phường, xã", "Share of compliant schools by ward"),
    "r.chart_level": ("Tỷ lệ trường đạt yêu cầu theo cấp học", "Share of compliant schools by level"),
    "r.chart_blocks": ("Số lượt chặn theo danh mục", "Blocks by category"),
    "r.chart_bypass": ("Lượt cố gắng vượt bộ lọc theo hình thức", "Bypass attempts by kind"),
    "r.anonymity": ("Về tính ẩn danh của số liệu", "About anonymity"),
    "r.anonymity_law": ("Số liệu đã ẩn danh hoá theo Luật Bảo vệ dữ liệu cá nhân 2025; ô nhỏ hơn 5 được ẩn.",
                        "Figures are anonymised under the 2025 Personal Data Protection Law; cells below 5 are "
                        "suppressed."),
    "r.anonymity_text": (
        "Mọi số liệu trong báo cáo là số đếm tổng hợp theo trường, nhóm tuổi và danh mục. Không có địa chỉ IP, "
        "thiết bị, tài khoản hay tên miền truy cập nào rời khỏi trường. Nhóm có dưới 5 lượt được gộp vào nhóm "
        "“nhóm nhỏ (đã ẩn)” ngay trên thiết bị của trường trước khi gửi về Sở.",
        "Every figure is an aggregate count by school, age band and category. No IP address, device, account or "
        "visited domain leaves a school. Groups of fewer than 5 are merged into “small groups (suppressed)” on "
        "the school's own box before anything is sent to the Department."),
    "r.method": ("Cách tính", "How the figures are computed"),
    "r.method_reporting": (
        "Đang gửi số liệu: Sở nhận được số liệu của thiết bị ít nhất một lần trong {recent} ngày cuối kỳ.",
        "Reporting: the Department received the box's metrics at least once in the last {recent} days of the "
        "period."),
    "r.method_protected": ("Bảo vệ đang bật: giá trị cuối cùng thiết bị báo trong kỳ là đang lọc DNS với chính "
                           "sách đã nạp.",
                           "Protection active: the last value the box reported in the period says DNS filtering "
                           "was serving with a loaded policy."),
    "r.method_current": ("Chính sách hiện hành: gói chính sách của Sở trên thiết bị bằng gói mới nhất đang chạy "
                         "trong hệ thống, hoặc không cũ hơn gói tối thiểu được quy định.",
                         "Current policy: the box's Department bundle equals the newest one running in the fleet, "
                         "or is no older than the configured minimum."),
    "r.method_counts": ("Số lượt chặn và truy vấn: tổng mức tăng của bộ đếm theo từng ngày (giờ Việt Nam); "
                        "Prometheus ước lượng mức tăng từ các lần thu thập nên số liệu là gần đúng.",
                        "Blocks and queries: the sum of each counter's daily increase (Vietnam days); Prometheus "
                        "estimates increases from its scrapes, so counts are approximate."),
    "r.footer": ("Báo cáo được tạo tự động bởi school-gateway {version}.",
                 "Generated automatically by school-gateway {version}."),
    # band, level and special category names
    "band.mam_non": ("Mầm non", "Preschool"),
    "band.tieu_hoc": ("Tiểu học", "Primary"),
    "band.thcs": ("Trung học cơ sở", "Lower secondary"),
    "band.thpt": ("Trung học phổ thông", "Upper secondary"),
    "band.staff": ("Cán bộ – giáo viên", "Staff"),
    "band.suppressed": ("Nhóm nhỏ (đã ẩn)", "Small groups (suppressed)"),
    "band.none": ("Không xác định", "Unassigned"),
    "category.school_deny": ("Danh sách chặn của trường", "School deny list"),
    "category.walled_garden": ("Ngoài vườn tường", "Outside the walled garden"),
    "category.error": ("Lỗi (chặn để an toàn)", "Errors (blocked to fail safe)"),
    "kind.doh_canary": ("DNS mã hoá (DoH)", "Encrypted DNS (DoH)"),
    "kind.private_relay": ("iCloud Private Relay", "iCloud Private Relay"),
    "kind.resolver_discovery": ("Tìm máy chủ DNS khác", "Other resolver discovery"),
    "kind.bypass_names": ("Dịch vụ vượt tường lửa", "Circumvention services"),
    # receiver guard
    "guard.listening": ("Đang nhận remote write tại {address}, chuyển tiếp tới {upstream} ({schools} trường).",
                        "Accepting remote write on {address}, forwarding to {upstream} ({schools} schools)."),
    "guard.bad_credentials_file": ("{file}:{line}: dòng không hợp lệ — dạng mã_trường:pbkdf2_sha256$...",
                                   "{file}:{line}: invalid line — expected school_id:pbkdf2_sha256$..."),
    "credential.created": ("Mật khẩu remote write cho trường {school} (chỉ hiện một lần, ghi vào "
                           "password_file trên thiết bị):",
                           "Remote-write password for school {school} (shown once; put it in the box's "
                           "password_file):"),
}


def tr(key: str, lang: str = DEFAULT_LANG, /, **args) -> str:
    """Message `key` in `lang`; keys not defined here fall back to the gateway's catalogue."""
    pair = MESSAGES.get(key)
    if pair is None:
        return gateway_tr(key, lang, **args)
    text = pair[1] if lang == "en" else pair[0]
    try:
        return text.format(**args)
    except (KeyError, IndexError):
        return text
