"""School network-safety gateway: age-banded DNS filtering, proxy, signed policy, anonymous metrics."""

__version__ = "0.1.0"
