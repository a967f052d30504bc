"""Optional local query log for school staff (off by default): SQLite on the box only, privacy levels,
retention with automatic deletion. It never feeds /metrics."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

LEVELS = ("full", "hide_names", "hide_clients", "counts")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
  ts INTEGER NOT NULL, client TEXT, name TEXT, qtype INTEGER, band TEXT, action TEXT, reason TEXT,
  category TEXT);
CREATE INDEX IF NOT EXISTS queries_ts ON queries(ts);
CREATE TABLE IF NOT EXISTS counts (
  hour INTEGER NOT NULL, band TEXT, action TEXT, category TEXT, n INTEGER NOT NULL,
  PRIMARY KEY (hour, band, action, category));
"""


class QueryLog:
    """Buffers rows in memory and writes them in batches (an SD card must not see a write per query)."""

    def __init__(self, path: Path, level: str = "full", retention_days: int = 7,
                 clock: Callable[[], float] = time.time, max_buffer: int = 50000):
        if level not in LEVELS:
            raise ValueError(f"query log level must be one of {', '.join(LEVELS)}")
        self.path, self.level, self.retention_days, self.clock = path, level, retention_days, clock
        self.max_buffer = max_buffer
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def add(self, client: str | None, name: str, qtype: int, band: str, action: str, reason: str | None,
            category: str | None) -> None:
        if len(self._rows) >= self.max_buffer:
            return  # the disk is behind: drop rather than grow without bound
        level = self.level
        if level == "hide_names":
            name = None
        elif level == "hide_clients":
            client = None
        elif level == "counts":
            client = name = None
        self._rows.append((int(self.clock()), client, name, qtype, band, action, reason, category))

    def observe(self, req, seconds: float) -> None:
        """Observe-stage listener."""
        d = req.decision
        group = req.group
        band = d.band if d is not None else (group.band.id if group is not None else "none")
        action = d.action.value if d is not None else ("refused" if group is None else "local")
        self.add(req.client, req.query.qname, req.query.qtype, band, action,
                 d.reason.value if d is not None else None, d.category if d is not None else None)

    def flush(self) -> int:
        with self._lock:
            rows, self._rows = self._rows, []
            if not rows and not self.retention_days:
                return 0
            with self._connect() as db:
                if self.level == "counts":
                    for ts, _c, _n, _t, band, action, _r, category in rows:
                        db.execute("INSERT INTO counts VALUES (?, ?, ?, ?, 1) ON CONFLICT(hour, band, action, "
                                   "category) DO UPDATE SET n = n + 1", (ts // 3600 * 3600, band, action,
                                                                         category or ""))
                else:
                    db.executemany("INSERT INTO queries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                cutoff = int(self.clock()) - self.retention_days * 86400
                db.execute("DELETE FROM queries WHERE ts < ?", (cutoff,))
                db.execute("DELETE FROM counts WHERE hour < ?", (cutoff,))
            return len(rows)

    def search(self, *, client: str | None = None, name: str | None = None, action: str | None = None,
               since: float | None = None, limit: int = 100) -> list[tuple]:
        query = "SELECT ts, client, name, qtype, band, action, reason, category FROM queries WHERE 1=1"
        args: list = []
        if client:
            query += " AND client = ?"
            args.append(client)
        if name:
            query += " AND name LIKE ?"
            args.append(f"%{name}%")
        if action:
            query += " AND action = ?"
            args.append(action)
        if since:
            query += " AND ts >= ?"
            args.append(int(since))
        query += " ORDER BY ts DESC LIMIT ?"
        args.append(limit)
        with self._connect() as db:
            return db.execute(query, args).fetchall()

    def counts(self) -> list[tuple]:
        with self._connect() as db:
            return db.execute("SELECT hour, band, action, category, n FROM counts ORDER BY hour").fetchall()
