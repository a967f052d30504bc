"""The proxy's own user-facing strings (block page, CA instructions, CLI), in Vietnamese and English."""

from __future__ import annotations

from gateway.i18n import register

BAND_AGES = {"mam_non": "3–5", "tieu_hoc": "6–10", "thcs": "11–14", "thpt": "15–17"}

MESSAGES: dict[str, tuple[str, str]] = {
    # block page
    "proxy.page.title": ("Trang web này đã bị chặn", "This website is blocked"),
    "proxy.page.lead": (
        "Nội dung bạn muốn truy cập không phù hợp với quy định sử dụng Internet của nhà trường.",
        "What you tried to open does not fit the school's rules for using the Internet.",
    ),
    "proxy.page.address": ("Địa chỉ", "Address"),
    "proxy.page.category": ("Danh mục", "Category"),
    "proxy.page.band": ("Nhóm", "Group"),
    "proxy.page.time": ("Thời điểm", "Time"),
    "proxy.page.ref": ("Mã tham chiếu", "Reference code"),
    "proxy.page.ages": ("{ages} tuổi", "ages {ages}"),
    "proxy.page.why": ("Vì sao trang bị chặn?", "Why is it blocked?"),
    "proxy.page.why.category": ("Trang này thuộc danh mục «{category}».",
                                "This site is in the “{category}” category."),
    "proxy.page.why.schedule": ("Trang này chỉ bị chặn trong giờ học.",
                                "This site is only blocked during school hours."),
    "proxy.page.why.school_deny": ("Nhà trường đã chặn riêng trang này.", "The school has blocked this site."),
    "proxy.page.why.walled_garden": (
        "Ở nhóm tuổi này, chỉ mở được các trang học tập mà nhà trường đã chọn.",
        "For this age group, only the learning sites the school has chosen can be opened.",
    ),
    "proxy.page.why.error": (
        "Bộ lọc gặp lỗi nên tạm chặn trang này để giữ an toàn.",
        "The filter had a problem, so it blocked this site to keep you safe.",
    ),
    "proxy.page.why.not_served": (
        "Thiết bị này không thuộc mạng mà bộ lọc của trường phục vụ.",
        "This device is not on a network the school filter serves.",
    ),
    "proxy.page.reason.school_deny": ("Danh sách chặn của trường", "School block list"),
    "proxy.page.reason.walled_garden": ("Ngoài danh sách trang được phép", "Not on the allowed list"),
    "proxy.page.reason.error": ("Lỗi bộ lọc", "Filter error"),
    "proxy.page.reason.not_served": ("Mạng không được phục vụ", "Network not served"),
    "proxy.page.ask": ("Cần mở trang này?", "Need this site?"),
    "proxy.page.ask.child": (
        "Nếu em cho rằng trang bị chặn nhầm, hãy gửi yêu cầu xem xét.",
        "If you think this site was blocked by mistake, ask for a review.",
    ),
    "proxy.page.ask.staff": (
        "Nếu thầy cô cho rằng trang bị chặn nhầm, hãy gửi yêu cầu xem xét.",
        "If you think this site was blocked by mistake, ask for a review.",
    ),
    "proxy.page.ask.quote": (
        "Hãy báo cho thầy cô hoặc bộ phận tin học của trường và đọc mã tham chiếu ở trên.",
        "Tell a teacher or the school IT team and give them the reference code above.",
    ),
    "proxy.page.contact.name": ("Người phụ trách", "Contact"),
    "proxy.page.contact.email": ("Email", "Email"),
    "proxy.page.contact.phone": ("Điện thoại", "Phone"),
    "proxy.page.contact.room": ("Phòng", "Room"),
    "proxy.page.button": ("Gửi yêu cầu mở chặn", "Ask to unblock"),
    "proxy.page.mail_subject": ("Yêu cầu mở chặn {host} (mã {ref})", "Unblock request for {host} (code {ref})"),
    "proxy.page.mail_body": ("Lý do cần truy cập: ", "Why I need this site: "),
    "proxy.page.help": ("Cần giúp đỡ?", "Need help?"),
    "proxy.page.hotline": (
        "Nếu em thấy buồn, lo lắng hoặc cần giúp đỡ, hãy nói với thầy cô hoặc gọi Tổng đài 111 (miễn phí).",
        "If you feel sad, worried or need help, talk to a teacher or call the 111 child helpline (free).",
    ),
    "proxy.page.call": ("Gọi 111", "Call 111"),
    "proxy.page.other_lang": ("English", "Tiếng Việt"),
    "proxy.page.footer": ("Bộ lọc Internet của nhà trường", "School Internet filter"),
    "proxy.page.open.title": ("Trang này hiện không bị chặn", "This site is not blocked now"),
    "proxy.page.open.text": (
        "Hãy đóng trang này và thử mở lại địa chỉ sau ít phút.",
        "Close this page and try the address again in a few minutes.",
    ),
    "proxy.page.index.title": ("Bộ lọc Internet của nhà trường", "School Internet filter"),
    "proxy.page.index.pac": ("Tệp cấu hình proxy (PAC)", "Proxy configuration file (PAC)"),
    "proxy.page.index.ca": ("Chứng chỉ của trường (cho thiết bị của trường)",
                            "The school certificate (for school devices)"),
    "proxy.blocked_connect": ("Trang web này đã bị chặn theo quy định của nhà trường.",
                              "This website is blocked by the school's rules."),
    "proxy.refused": ("Thiết bị này không thuộc mạng được phục vụ.", "This device is not on a served network."),
    "proxy.bad_port": ("Chỉ cho phép kết nối tới cổng {ports}.", "Only connections to port {ports} are allowed."),
    # reference codes
    "proxy.ref.code": ("Mã tham chiếu", "Reference code"),
    "proxy.ref.valid": ("Chữ ký mã", "Code signature"),
    "proxy.ref.valid_yes": ("hợp lệ (mã do máy này tạo)", "valid (made by this box)"),
    "proxy.ref.valid_no": ("KHÔNG hợp lệ — mã gõ sai hoặc của máy khác",
                           "NOT valid — mistyped, or made by another box"),
    "proxy.ref.valid_unknown": ("không kiểm tra được (không có khoá)", "cannot be checked (no key)"),
    "proxy.ref.policy_changed": (
        "chính sách đã thay đổi kể từ khi mã được tạo: tệp và dòng có thể đã khác",
        "the policy changed since the code was made: the file and line may differ now",
    ),
    "proxy.ref.bad": ("'{code}' không phải mã tham chiếu — mã có 20 chữ và số, ví dụ 0A1B2-C3D4E-F5G6H-J7K8M",
                      "'{code}' is not a reference code — it has 20 letters and digits, e.g. 0A1B2-C3D4E-F5G6H-J7K8M"),
    # CLI and service
    "proxy.cli.listening": ("Proxy đang chạy: {what}", "Proxy running: {what}"),
    "proxy.cli.no_mitmproxy": (
        "chưa cài mitmproxy — cài bằng: pip install 'school-gateway[proxy]'",
        "mitmproxy is not installed — install it with: pip install 'school-gateway[proxy]'",
    ),
    "proxy.ca_missing": (
        "có nhóm máy bật inspect_tls nhưng chưa có chứng chỉ CA trong {dir} — chạy 'school-gateway ca init'; "
        "tạm thời các nhóm này chỉ được lọc theo tên miền (không giải mã)",
        "a client group has inspect_tls but there is no CA in {dir} — run 'school-gateway ca init'; until then "
        "those groups are filtered by name only (no decryption)",
    ),
    "proxy.ca.exists": ("đã có CA trong {dir} — dùng --force để tạo lại (thiết bị sẽ phải cài lại chứng chỉ)",
                        "a CA already exists in {dir} — use --force to replace it (devices must install it again)"),
    "proxy.ca.passphrase_mismatch": ("hai lần nhập mật khẩu không khớp", "the two passphrases do not match"),
    "proxy.ca.created": ("Đã tạo CA của trường:", "Created the school CA:"),
    "proxy.ca.key": ("Khoá bí mật (chỉ chủ sở hữu đọc được, không bao giờ rời khỏi máy này)",
                     "Private key (owner-only, never leaves this box)"),
    "proxy.ca.cert": ("Chứng chỉ để cài lên thiết bị", "Certificate to install on devices"),
    "proxy.ca.fingerprint": ("Dấu vân tay SHA-256 (so khớp khi cài)", "SHA-256 fingerprint (check it when installing)"),
    "proxy.ca.download": ("Thiết bị trong trường có thể tải chứng chỉ tại: {url}",
                          "Devices in the school can download it from: {url}"),
    "proxy.ca.install": ("Cách cài chứng chỉ lên thiết bị của trường:", "How to install it on school devices:"),
    "proxy.ca.windows": (
        "Windows: nhấp đúp school-ca.cer → Cài chứng chỉ → Máy cục bộ → đặt vào «Trusted Root Certification "
        "Authorities»; hoặc chạy (quyền quản trị): certutil -addstore -f Root school-ca.cer; nhiều máy: dùng "
        "Group Policy (Computer Configuration → Windows Settings → Security Settings → Public Key Policies → "
        "Trusted Root Certification Authorities).",
        "Windows: double-click school-ca.cer → Install Certificate → Local Machine → place it in “Trusted Root "
        "Certification Authorities”; or run (as administrator): certutil -addstore -f Root school-ca.cer; many "
        "machines: Group Policy (Computer Configuration → Windows Settings → Security Settings → Public Key "
        "Policies → Trusted Root Certification Authorities).",
    ),
    "proxy.ca.macos": (
        "macOS: mở school-ca.pem bằng Keychain Access, đưa vào keychain «System», nhấp đúp chứng chỉ → Trust → "
        "«Always Trust»; hoặc: sudo security add-trusted-cert -d -r trustRoot -k "
        "/Library/Keychains/System.keychain school-ca.pem",
        "macOS: open school-ca.pem in Keychain Access, add it to the “System” keychain, double-click it → Trust "
        "→ “Always Trust”; or: sudo security add-trusted-cert -d -r trustRoot -k "
        "/Library/Keychains/System.keychain school-ca.pem",
    ),
    "proxy.ca.chromeos": (
        "ChromeOS: chrome://settings/certificates → Authorities → Import → chọn school-ca.pem → đánh dấu «Trust "
        "this certificate for identifying websites»; Chromebook được quản lý: Admin console → Devices → "
        "Networks → Certificates → tải lên và bật «Chromebook: use this certificate as an HTTPS certificate "
        "authority».",
        "ChromeOS: chrome://settings/certificates → Authorities → Import → pick school-ca.pem → tick “Trust this "
        "certificate for identifying websites”; managed Chromebooks: Admin console → Devices → Networks → "
        "Certificates → upload it and enable “Chromebook: use this certificate as an HTTPS certificate authority”.",
    ),
    "proxy.ca.android": (
        "Android: Cài đặt → Bảo mật → Mã hoá và thông tin xác thực → Cài đặt chứng chỉ → Chứng chỉ CA → chọn "
        "school-ca.cer. Lưu ý: từ Android 7 nhiều ứng dụng không tin chứng chỉ do người dùng cài, nên các ứng "
        "dụng đó nằm trong danh sách không giải mã (never_intercept).",
        "Android: Settings → Security → Encryption & credentials → Install a certificate → CA certificate → pick "
        "school-ca.cer. Note: since Android 7 most apps ignore user-installed certificates; such apps belong on "
        "the never_intercept list.",
    ),
    "proxy.ca.ios": (
        "iOS/iPadOS: mở địa chỉ tải chứng chỉ bằng Safari → Cài đặt → Đã tải về hồ sơ → Cài đặt; sau đó Cài đặt → "
        "Cài đặt chung → Giới thiệu → Cài đặt tin cậy chứng nhận → bật tin cậy hoàn toàn cho chứng chỉ của "
        "trường. Thiết bị được quản lý (MDM): đẩy chứng chỉ bằng hồ sơ cấu hình.",
        "iOS/iPadOS: open the download address in Safari → Settings → Profile Downloaded → Install; then Settings "
        "→ General → About → Certificate Trust Settings → turn on full trust for the school certificate. Managed "
        "devices (MDM): push it in a configuration profile.",
    ),
    "proxy.ca.warning": (
        "Chỉ cài chứng chỉ này lên thiết bị của trường, trong các nhóm máy có inspect_tls: true, và thông báo "
        "cho học sinh rằng việc kiểm tra đang bật. Không chia sẻ khoá bí mật; nếu lộ, chạy lại với --force.",
        "Install it only on school devices in client groups with inspect_tls: true, and tell pupils that "
        "inspection is on. Never share the private key; if it leaks, run this again with --force.",
    ),
}

register(MESSAGES)
