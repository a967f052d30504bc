import sys
from pathlib import Path

# Shared test helpers: policyfactory (tests/), fakeupstream and gatewayproc (tests/dns/), report_promproc
# (tests/report/). No packages
# here on purpose: a tests/dns package would shadow dnspython's `dns`.
_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE / "dns"), str(_HERE / "report")]
