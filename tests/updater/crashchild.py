"""Child process for the SIGKILL test: one poll that parks at a named step until the parent kills it."""

import os
import sys
import threading
from pathlib import Path

from gateway.shipped import shipped
from gateway.updater import Updater, UpdaterSettings, make_validator


def main() -> None:
    state_dir, mirror, key, step, fd, now = sys.argv[1:7]
    fd = int(fd)

    def fault(name: str) -> None:
        if name == step:
            os.write(fd, f"at {name}\n".encode())
            threading.Event().wait()  # parked: the parent sends SIGKILL now

    settings = UpdaterSettings(mirrors=(mirror,), timeout=5.0, trusted_keys=(key,), state_dir=Path(state_dir))
    updater = Updater(settings, validate=make_validator(shipped("policies/school.example.yaml")), fault=fault,
                      clock=lambda: float(now), clock_synced=lambda: True, lang="en")
    outcome = updater.poll_once()
    os.write(fd, f"finished {outcome}\n".encode())


if __name__ == "__main__":
    main()
