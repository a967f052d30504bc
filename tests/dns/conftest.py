import sys
from pathlib import Path

# fakeupstream and gatewayproc are shared by the DNS tests (no package: it would shadow dnspython's `dns`).
sys.path.insert(0, str(Path(__file__).resolve().parent))
