"""File digests remembered by each file's stat stamp, so a reload never re-hashes an unchanged big list.

The policy's fingerprint covers every file it was built from, the 20 MB text of a 1M-name list too:
~20 ms of SHA-256 on a PC and well over 100 ms on a Raspberry Pi 4 (it has no SHA instructions), done
again by every worker at every reload, while it answers queries. The list compiler child (app.py, at
idle priority) computes them first and leaves them here; the serving processes then find each file's
stamp unchanged and only stat it. This is the trust the compiled list form already puts in a stamp
(lists/index.py), made stronger: device, inode, size, and both mtime and ctime in nanoseconds (ctime
cannot be set back from user space). The store is a cache: unreadable means empty, and failing to
write it only costs the next process the hashing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

STORE_NAME = "digests.json"
_CHUNK = 1 << 20


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class Digests:
    """SHA-256 of files' contents; `store` (a JSON file) carries them between processes, None = no memory."""

    def __init__(self, store: Path | None = None):
        self.store = store
        self._known: dict[str, list] = {}
        self._used: set[str] = set()
        self._changed = False
        if store is not None:
            try:
                known = json.loads(store.read_bytes())
            except (OSError, ValueError):
                known = {}
            if isinstance(known, dict):
                self._known = {k: v for k, v in known.items()
                               if isinstance(v, list) and len(v) == 6 and isinstance(v[5], str)}

    def of(self, path: Path) -> bytes:
        """The digest of `path`'s contents; raises OSError if it cannot be read."""
        with open(path, "rb") as f:
            before = os.fstat(f.fileno())
            stamp = _stamp(before)
            key = str(path)
            self._used.add(key)
            entry = self._known.get(key)
            if entry is not None and entry[:5] == stamp:
                return bytes.fromhex(entry[5])
            digest = hashlib.sha256()
            while chunk := f.read(_CHUNK):  # hashlib and read release the GIL for chunks this size
                digest.update(chunk)
            # Written to while it was read: the digest may mix two versions, so it is not remembered.
            if _stamp(os.fstat(f.fileno())) == stamp:
                self._known[key] = [*stamp, digest.hexdigest()]
                self._changed = True
            return digest.digest()

    def save(self) -> None:
        """Write the store if anything new was learnt (atomically; never fsynced: it is only a cache).
        Only the files asked about are kept, so files a policy no longer uses (an old bundle's) drop out."""
        if self.store is None or not (self._changed or self._used != self._known.keys()):
            return
        kept = {key: self._known[key] for key in self._used if key in self._known}
        tmp = self.store.with_name(f".{self.store.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(kept, sort_keys=True))
            os.replace(tmp, self.store)
            self._known, self._changed = kept, False
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
