"""Every user-facing message, in Vietnamese (default) and English; `tr` picks one and fills it in."""

from __future__ import annotations

DEFAULT_LANG = "vi"

# key: (Vietnamese, English). Error messages say what is wrong, then (after " — ") how to fix it.
MESSAGES: dict[str, tuple[str, str]] = {
    "yaml.syntax": (
        "lỗi cú pháp YAML: {detail} — kiểm tra thụt lề (dùng dấu cách, không dùng tab) và dấu ngoặc",
        "YAML syntax error: {detail} — check the indentation (spaces, not tabs) and brackets",
    ),
    "yaml.duplicate_key": (
        "khoá '{key}' bị lặp (đã có ở dòng {first}) — xoá một trong hai",
        "key '{key}' appears twice (first at line {first}) — remove one of them",
    ),
    "yaml.key_not_scalar": ("khoá phải là chữ, không phải danh sách", "a key must be text, not a list or map"),
    "file.missing": ("không tìm thấy tệp — kiểm tra đường dẫn", "file not found — check the path"),
    "file.unreadable": ("không đọc được tệp: {detail}", "cannot read the file: {detail}"),
    "file.not_utf8": ("tệp không phải UTF-8 — lưu lại với mã hoá UTF-8", "file is not UTF-8 — save it as UTF-8"),
    "schema.unknown_key": (
        "khoá không hợp lệ '{key}' trong {where} — các khoá được phép: {allowed}",
        "unknown key '{key}' in {where} — allowed keys: {allowed}",
    ),
    "schema.missing_key": ("thiếu khoá bắt buộc '{key}' trong {where}", "missing required key '{key}' in {where}"),
    "schema.type": (
        "'{key}' phải là {expected}, nhưng đang là {got}",
        "'{key}' must be {expected}, but is {got}",
    ),
    "schema.choice": ("'{key}' phải là một trong: {allowed} (đang là '{got}')",
                      "'{key}' must be one of: {allowed} (got '{got}')"),
    "schema.empty_document": ("tệp trống — cần có nội dung {what}", "the file is empty — it must hold {what}"),
    "schema.bad_id": (
        "mã '{id}' không hợp lệ — chỉ dùng chữ thường không dấu, số và dấu gạch dưới",
        "id '{id}' is not valid — use lower-case ASCII letters, digits and underscores",
    ),
    "policy.unknown_category": (
        "danh mục '{category}' không tồn tại trong chính sách của Sở — bỏ qua; các danh mục: {known}",
        "category '{category}' does not exist in the Department policy — ignored; categories: {known}",
    ),
    "policy.unknown_band": (
        "nhóm tuổi '{band}' không tồn tại — dùng một trong: {known}",
        "age band '{band}' does not exist — use one of: {known}",
    ),
    "policy.unknown_band_stale": (
        "nhóm tuổi '{band}' không còn trong chính sách của Sở — bỏ qua mục này",
        "age band '{band}' is no longer in the Department policy — this entry is ignored",
    ),
    "policy.unknown_group": ("nhóm máy '{group}' không tồn tại — dùng một trong: {known}",
                             "client group '{group}' does not exist — use one of: {known}"),
    "policy.unknown_schedule": (
        "lịch '{schedule}' chưa được định nghĩa — thêm nó vào mục schedules",
        "schedule '{schedule}' is not defined — add it under 'schedules'",
    ),
    "policy.mandatory_relaxed": (
        "danh mục '{category}' là bắt buộc theo quy định của Sở, trường không thể bỏ chặn — mục này bị bỏ qua",
        "category '{category}' is mandatory under the Department policy; a school cannot unblock it — ignored",
    ),
    "policy.safe_search_relaxed": (
        "trường chỉ được đặt tìm kiếm an toàn chặt hơn mức của Sở ('{department}') — giữ mức của Sở",
        "a school may only make safe search stricter than the Department's ('{department}') — keeping it",
    ),
    "policy.band_required": ("nhóm máy '{group}' cần khoá 'band'", "client group '{group}' needs a 'band'"),
    "policy.bad_network": (
        "'{value}' không phải địa chỉ IP hay dải mạng CIDR (ví dụ 10.0.0.0/24, 2001:db8::/64)",
        "'{value}' is not an IP address or CIDR subnet (e.g. 10.0.0.0/24, 2001:db8::/64)",
    ),
    "policy.duplicate_network": (
        "dải mạng {network} đã thuộc nhóm '{other}' — mỗi dải chỉ thuộc một nhóm",
        "subnet {network} already belongs to group '{other}' — a subnet belongs to one group",
    ),
    "policy.bad_name": ("tên miền '{value}' không hợp lệ: {why}", "domain '{value}' is not valid: {why}"),
    "policy.bad_time": ("giờ '{value}' không hợp lệ — dùng HH:MM, ví dụ 07:30",
                        "time '{value}' is not valid — use HH:MM, e.g. 07:30"),
    "policy.bad_day": ("ngày '{value}' không hợp lệ — dùng mon, tue, wed, thu, fri, sat, sun",
                       "day '{value}' is not valid — use mon, tue, wed, thu, fri, sat, sun"),
    "policy.bad_date": ("ngày '{value}' không hợp lệ — dùng YYYY-MM-DD, ví dụ 2027-02-10",
                        "date '{value}' is not valid — use YYYY-MM-DD, e.g. 2027-02-10"),
    "policy.bad_timezone": ("múi giờ '{value}' không tồn tại — ví dụ Asia/Ho_Chi_Minh",
                            "time zone '{value}' does not exist — e.g. Asia/Ho_Chi_Minh"),
    "policy.empty_window": ("khung giờ từ {start} đến {end} rỗng — giờ bắt đầu và kết thúc phải khác nhau",
                            "window {start} to {end} is empty — start and end must differ"),
    "policy.list_missing": ("không tìm thấy danh sách '{path}' của danh mục '{category}'",
                            "list '{path}' of category '{category}' not found"),
    "policy.list_bad_lines": (
        "{count} dòng không hợp lệ bị bỏ qua trong danh sách; ví dụ: {first}",
        "{count} invalid lines were skipped in the list; e.g. {first}",
    ),
    "policy.never_block_mandatory": (
        "'{name}' nằm trong danh sách không bao giờ chặn nhưng bị danh mục bắt buộc '{category}' chặn ({source}) — "
        "thiết bị có thể báo mất Internet",
        "'{name}' is on the never-block list but the mandatory category '{category}' blocks it ({source}) — "
        "devices may report no internet",
    ),
    "policy.never_block_denied": (
        "'{name}' nằm trong danh sách không bao giờ chặn nên mục chặn này không có tác dụng",
        "'{name}' is on the never-block list, so this deny entry has no effect",
    ),
    "policy.unknown_group_default": (
        "unknown_group '{group}' không phải nhóm đã khai báo — khai báo nó trong 'groups'",
        "unknown_group '{group}' is not a declared group — declare it under 'groups'",
    ),
    "policy.garden_needs_allow": (
        "vườn tường (walled_garden) không có danh sách cho phép nào — mọi trang sẽ bị chặn",
        "walled garden has no allow list — every site would be blocked",
    ),
    "policy.no_school": ("không tìm thấy tệp chính sách của trường", "no school policy file was found"),
    "settings.bad_listen": ("địa chỉ lắng nghe '{value}' không hợp lệ — ví dụ 0.0.0.0:53 hoặc [::]:53",
                            "listen address '{value}' is not valid — e.g. 0.0.0.0:53 or [::]:53"),
    "log.none": ("chưa có nhật ký truy vấn ({path}) — bật log.query_log trong gateway.yaml",
                 "no query log yet ({path}) — enable log.query_log in gateway.yaml"),
    "audit.none": ("chưa ghi nhận thay đổi chính sách nào", "no policy change recorded yet"),
    # explain / validate output
    "validate.ok": ("Hợp lệ: {files} tệp, {categories} danh mục, {entries} tên miền, {groups} nhóm máy.",
                    "Valid: {files} files, {categories} categories, {entries} domains, {groups} client groups."),
    "validate.failed": ("Có {count} lỗi; chính sách không được nạp.", "{count} errors; the policy was not loaded."),
    "validate.warnings": ("{count} cảnh báo:", "{count} warnings:"),
    "explain.usage": ("cần tên miền và --client IP, hoặc --ref MÃ", "give a name and --client IP, or --ref CODE"),
    "explain.client": ("Máy khách", "Client"),
    "explain.group": ("Nhóm máy", "Group"),
    "explain.band": ("Nhóm tuổi", "Age band"),
    "explain.time": ("Thời điểm", "Time"),
    "explain.name": ("Tên miền", "Name"),
    "explain.decision": ("Quyết định", "Decision"),
    "explain.category": ("Danh mục", "Category"),
    "explain.rule": ("Quy tắc", "Rule"),
    "explain.source": ("Dòng danh sách", "List line"),
    "explain.rewrite": ("Chuyển hướng tới", "Rewritten to"),
    "explain.not_served": (
        "Địa chỉ {client} không thuộc mạng nào được phục vụ: máy chủ DNS sẽ trả REFUSED.",
        "Address {client} is in no served network: the DNS server answers REFUSED.",
    ),
    "explain.clock_untrusted": ("(đồng hồ chưa đồng bộ: áp dụng hạn chế theo giờ)",
                                "(clock not synchronised: time restrictions applied)"),
    "action.allow": ("CHO PHÉP", "ALLOW"),
    "action.block": ("CHẶN", "BLOCK"),
    "action.rewrite": ("TÌM KIẾM AN TOÀN", "SAFE SEARCH"),
    "reason.mandatory": ("danh mục bắt buộc của Sở", "Department mandatory category"),
    "reason.never_block": ("danh sách không bao giờ chặn", "never-block list"),
    "reason.school_deny": ("danh sách chặn của trường", "school deny list"),
    "reason.school_allow": ("danh sách cho phép của trường", "school allow list"),
    "reason.walled_garden": ("ngoài vườn tường (chỉ cho phép các trang trong danh sách)",
                             "outside the walled garden (only listed sites are allowed)"),
    "reason.garden_allow": ("trong vườn tường", "inside the walled garden"),
    "reason.category": ("danh mục bị chặn cho nhóm tuổi", "category blocked for the age band"),
    "reason.schedule": ("danh mục bị hạn chế trong khung giờ", "category restricted during this time window"),
    "reason.safe_search": ("bắt buộc tìm kiếm an toàn", "safe search enforced"),
    "reason.default": ("không có quy tắc chặn nào khớp", "no blocking rule matched"),
    "reason.error": ("lỗi khi quyết định — chặn để an toàn", "error while deciding — blocked to fail safe"),
}


def tr(key: str, lang: str = DEFAULT_LANG, /, **args) -> str:
    """Message `key` in `lang` ('vi' or 'en'), formatted with `args`; an unknown key is shown as-is."""
    pair = MESSAGES.get(key)
    if pair is None:
        return key if not args else f"{key} {args}"
    text = pair[1] if lang == "en" else pair[0]
    try:
        return text.format(**args)
    except (KeyError, IndexError):
        return text


def register(messages: dict[str, tuple[str, str]]) -> None:
    """Add a module's own messages (key: (vi, en)) to the catalogue; keys must be new."""
    for key, pair in messages.items():
        if key in MESSAGES and MESSAGES[key] != pair:
            raise ValueError(f"message key {key!r} is already defined")
        MESSAGES[key] = pair
