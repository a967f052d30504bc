"""The updater's and `bundle` commands' messages in Vietnamese and English, added to gateway.i18n."""

from __future__ import annotations

from gateway.i18n import register

# key: (Vietnamese, English). As in gateway.i18n: what is wrong, then (after " — ") what to do.
MESSAGES: dict[str, tuple[str, str]] = {
    # failures of one poll (the reason word is in brackets so logs can be grepped in either language)
    "updater.network": ("[network] không tải được {url}: {detail} — kiểm tra kết nối Internet và địa chỉ máy chủ",
                        "[network] cannot download {url}: {detail} — check the internet link and the mirror URL"),
    "updater.http_status": ("[http_status] {url} trả về HTTP {status} — kiểm tra địa chỉ máy chủ gói",
                            "[http_status] {url} answered HTTP {status} — check the mirror URL"),
    "updater.pointer_signature": (
        "[signature] chữ ký của {url} không khớp khoá tin cậy nào — bỏ qua; máy chủ bị sửa hoặc khoá của Sở đã đổi",
        "[signature] the signature of {url} matches no trusted key — ignored; the mirror was tampered with or "
        "the Department's key changed",
    ),
    "updater.manifest_signature": (
        "[signature] manifest.sig không khớp khoá tin cậy nào — gói bị sửa hoặc ký bằng khoá lạ",
        "[signature] manifest.sig matches no trusted key — the bundle was altered or signed with an unknown key",
    ),
    "updater.bundle_hash": ("[hash] SHA-256 của gói {file} khác với latest.json — tệp bị hỏng hoặc bị sửa",
                            "[hash] the SHA-256 of bundle {file} differs from latest.json — corrupted or altered"),
    "updater.file_hash": ("[hash] tệp {path} trong gói khác với manifest — gói bị hỏng hoặc bị sửa",
                          "[hash] file {path} in the bundle differs from its manifest — corrupted or altered"),
    "updater.too_large": ("[size] gói lớn hơn giới hạn {limit} byte (updater.max_bytes)",
                          "[size] the bundle is larger than the {limit}-byte limit (updater.max_bytes)"),
    "updater.size_mismatch": ("[size] gói dài {got} byte nhưng latest.json ghi {expected} byte",
                              "[size] the bundle is {got} bytes long but latest.json says {expected}"),
    "updater.expired": ("[expired] gói {version} đã hết hạn lúc {expires} — Sở cần phát hành gói mới",
                        "[expired] bundle {version} expired at {expires} — the Department must publish a new one"),
    "updater.rollback": (
        "[rollback] phiên bản {version} không mới hơn phiên bản đang cài ({installed}) — không hạ cấp",
        "[rollback] version {version} is not newer than the installed one ({installed}) — no downgrade",
    ),
    "updater.gateway_too_old": (
        "[gateway_too_old] gói {version} cần school-gateway ≥ {need}, máy này chạy {have} — hãy nâng cấp",
        "[gateway_too_old] bundle {version} needs school-gateway ≥ {need}, this box runs {have} — upgrade it",
    ),
    "updater.compile": (
        "[compile] chính sách trong gói {version} không biên dịch được với tệp của trường ({count} lỗi), "
        "vẫn dùng chính sách cũ; lỗi đầu: {first}",
        "[compile] the policy in bundle {version} does not compile with this school's file ({count} errors); "
        "the old policy stays; first: {first}",
    ),
    "updater.disk_full": ("[disk_full] không đủ chỗ trống trong {path} — giải phóng dung lượng thẻ nhớ/ổ đĩa",
                          "[disk_full] not enough free space in {path} — free some space on the card/disk"),
    "updater.malformed": ("[malformed] gói hoặc latest.json sai định dạng: {detail}",
                          "[malformed] the bundle or latest.json is malformed: {detail}"),
    "updater.internal": ("[internal] lỗi không mong đợi khi cập nhật: {detail}",
                         "[internal] unexpected error while updating: {detail}"),
    "updater.known_bad": ("[{reason}] gói {version} đã bị từ chối trước đó; chưa tải lại",
                          "[{reason}] bundle {version} was rejected before; not downloading it again yet"),
    "updater.mirror_failed": ("máy chủ {url} không dùng được; thử máy chủ tiếp theo",
                              "mirror {url} did not work; trying the next one"),
    # outcomes and state
    "updater.applied": ("Đã cài gói chính sách {version} của Sở (tạo lúc {created}, hết hạn {expires})",
                        "Installed Department policy bundle {version} (created {created}, expires {expires})"),
    "updater.unchanged": ("Gói chính sách {version} vẫn là mới nhất", "Policy bundle {version} is still the newest"),
    "updater.none_installed": ("chưa cài gói nào của Sở — đang dùng chính sách mặc định kèm theo",
                               "no Department bundle installed — using the shipped baseline"),
    "updater.noticed": ("Một tiến trình khác đã cài gói {version}; nạp lại chính sách",
                        "Another process installed bundle {version}; reloading the policy"),
    "updater.busy": ("một lần cập nhật khác đang chạy trên {path}; bỏ qua lần này",
                     "another update is running on {path}; skipping this one"),
    "updater.stale_entries": (
        "{count} mục của trường không còn khớp chính sách mới của Sở và bị bỏ qua — sửa tệp của trường:",
        "{count} school entries no longer match the new Department policy and are ignored — fix the school file:",
    ),
    "updater.installed_expired": (
        "[expired] gói đang dùng ({version}) đã hết hạn lúc {expires}; vẫn tiếp tục lọc với nó cho tới khi có gói "
        "mới — kiểm tra máy chủ gói",
        "[expired] the installed bundle ({version}) expired at {expires}; filtering goes on with it until a newer "
        "one arrives — check the mirrors",
    ),
    "updater.clock_unsynced": (
        "đồng hồ chưa đồng bộ: không xét hạn dùng của gói; coi thời điểm sớm nhất có thể là {now}",
        "clock not synchronised: bundle expiry is not judged; taking {now} as the earliest possible time",
    ),
    "updater.clock_behind": (
        "đồng hồ ({clock}) sớm hơn lúc tạo gói đang cài ({created}) — không tin đồng hồ, dùng {created}",
        "the clock ({clock}) is earlier than the installed bundle's creation ({created}) — not trusted, "
        "using {created}",
    ),
    "updater.removed_partial": ("đã xoá phần cài dở {name}", "removed the half-written {name}"),
    "updater.pruned": ("đã xoá gói cũ {name} (chỉ giữ ba gói gần nhất)",
                       "removed old bundle {name} (only the last three are kept)"),
    "updater.fell_back": ("gói hiện tại {bad} không còn nguyên vẹn; quay về gói {version}",
                          "the current bundle {bad} is not whole; fell back to bundle {version}"),
    "updater.no_whole_bundle": ("không còn gói nguyên vẹn nào; dùng chính sách mặc định kèm theo",
                                "no whole bundle is left; using the shipped baseline"),
    "updater.damaged": ("gói {name} bị hỏng: {detail}", "bundle {name} is damaged: {detail}"),
    # gateway.yaml `updater:` section
    "updater.bad_mirror": (
        "'{value}' không phải địa chỉ máy chủ gói — dùng https://..., http://... hoặc file:///...",
        "'{value}' is not a mirror URL — use https://..., http://... or file:///...",
    ),
    "updater.bad_key": (
        "khoá công khai '{value}' không dùng được: {why} — dùng base64 của khoá Ed25519 (44 ký tự) hoặc đường dẫn "
        "tệp .pub do `school-gateway bundle keygen` tạo",
        "public key '{value}' is not usable: {why} — use the base64 Ed25519 key (44 characters) or the path of "
        "the .pub file `school-gateway bundle keygen` wrote",
    ),
    "updater.positive": ("'{key}' phải là số lớn hơn 0", "'{key}' must be a number above 0"),
    "updater.not_configured": ("gateway.yaml chưa có mục 'updater' (hoặc đã tắt) — không có gì để cập nhật",
                               "gateway.yaml has no 'updater' section (or it is disabled) — nothing to update"),
    # bundle commands (Department side)
    "bundle.keygen_done": (
        "Đã tạo khoá riêng {private} (quyền 0600 — giữ bí mật, đừng chép lên máy chủ web) và khoá công khai {public}."
        "\nKhoá công khai (đưa vào updater.trusted_keys của mọi máy): {b64}\nMã khoá: {key_id}",
        "Wrote private key {private} (mode 0600 — keep it secret, never copy it to the web server) and public key "
        "{public}.\nPublic key (put it in every box's updater.trusted_keys): {b64}\nKey id: {key_id}",
    ),
    "bundle.exists": ("{path} đã tồn tại — không ghi đè khoá; chọn tên khác",
                      "{path} already exists — keys are never overwritten; choose another name"),
    "bundle.refused": ("Lớp chính sách của Sở không biên dịch được ({count} lỗi) — không tạo gói:",
                       "The Department layer does not compile ({count} errors) — no bundle was built:"),
    "bundle.built": ("Đã tạo gói {path}: phiên bản {version}, {files} tệp, {size} byte, hết hạn {expires}",
                     "Built {path}: version {version}, {files} files, {size} bytes, expires {expires}"),
    "bundle.verify_ok": (
        "Gói hợp lệ, ký bởi khoá {key_id}.\n  Phiên bản: {version}\n  Tạo lúc: {created}\n  Hết hạn: {expires}\n"
        "  Cần school-gateway ≥ {min_gateway}\n  Phiên bản chính sách của Sở: {policy}\n  {files} tệp, {size} byte:",
        "The bundle is valid, signed by key {key_id}.\n  Version: {version}\n  Created: {created}\n"
        "  Expires: {expires}\n  Needs school-gateway ≥ {min_gateway}\n  Department policy version: {policy}\n"
        "  {files} files, {size} bytes:",
    ),
    "bundle.verify_failed": ("Gói KHÔNG hợp lệ: {why}", "The bundle is NOT valid: {why}"),
    "bundle.published": ("Đã phát hành phiên bản {version}: {bundle} và {pointer} — chép cả thư mục {dir} lên "
                         "máy chủ web tĩnh",
                         "Published version {version}: {bundle} and {pointer} — copy the whole folder {dir} to any "
                         "static web server"),
    "bundle.not_newer": ("{pointer} đã trỏ tới phiên bản {current} — phiên bản mới phải lớn hơn",
                         "{pointer} already points at version {current} — a new version must be higher"),
    "bundle.bad_file": ("{path}: tên tệp này không đưa vào gói được — chỉ dùng chữ ASCII, số và . _ - +",
                        "{path}: this file name cannot go in a bundle — use ASCII letters, digits and . _ - +"),
    "bundle.bad_key_file": ("không đọc được khoá {path}: {why}", "cannot read key {path}: {why}"),
    "bundle.bad_expiry": ("thời hạn '{value}' không hợp lệ — ví dụ 2027-01-31T00:00:00Z, và phải sau lúc tạo",
                          "expiry '{value}' is not valid — e.g. 2027-01-31T00:00:00Z, and it must be after creation"),
    "update.outcome": ("Kết quả cập nhật: {outcome}", "Update outcome: {outcome}"),
}

register(MESSAGES)
