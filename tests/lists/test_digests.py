"""Digests: a file's digest is reused while its stamp holds, recomputed once it changes, and the store
is only a cache (corrupt or unwritable never fails a load)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from gateway.lists.digests import STORE_NAME, Digests
from gateway.policy.compile import load_policy
from tests.policyfactory import write_policy


def test_digest_is_the_contents_sha256_and_is_reused_from_the_store_while_the_stamp_holds(tmp_path: Path) -> None:
    f = tmp_path / "list.txt"
    f.write_bytes(b"a.example\n" * 300_000)  # several read chunks
    store = tmp_path / STORE_NAME
    first = Digests(store)
    assert first.of(f) == hashlib.sha256(f.read_bytes()).digest()
    first.save()
    # Plant a different digest for the same stamp: a second process trusts it, so it did not re-read.
    known = json.loads(store.read_text())
    known[str(f)][5] = "ab" * 32
    store.write_text(json.dumps(known))
    assert Digests(store).of(f) == bytes.fromhex("ab" * 32)


def test_a_changed_file_is_hashed_again(tmp_path: Path) -> None:
    f = tmp_path / "list.txt"
    f.write_bytes(b"a.example\n")
    store = tmp_path / STORE_NAME
    d = Digests(store)
    d.of(f)
    d.save()
    with open(f, "r+b") as out:  # same size, in place: mtime and ctime move
        out.write(b"b")
    assert Digests(store).of(f) == hashlib.sha256(b"b.example\n").digest()


def test_a_corrupt_store_is_an_empty_one_and_an_unwritable_one_is_not_an_error(tmp_path: Path) -> None:
    f = tmp_path / "list.txt"
    f.write_bytes(b"x.example\n")
    store = tmp_path / STORE_NAME
    for junk in (b"", b"{not json", b"[1, 2]", json.dumps({str(f): [1, 2]}).encode()):
        store.write_bytes(junk)
        assert Digests(store).of(f) == hashlib.sha256(b"x.example\n").digest()
    missing_dir = Digests(tmp_path / "no" / "such" / STORE_NAME)
    missing_dir.of(f)
    missing_dir.save()  # nothing raised, nothing written
    assert not (tmp_path / "no").exists()


def test_the_store_keeps_only_the_files_asked_about(tmp_path: Path) -> None:
    old, new = tmp_path / "old.txt", tmp_path / "new.txt"
    old.write_bytes(b"1")
    new.write_bytes(b"2")
    store = tmp_path / STORE_NAME
    d = Digests(store)
    d.of(old)
    d.of(new)
    d.save()
    d = Digests(store)
    d.of(new)
    d.save()
    assert list(json.loads(store.read_text())) == [str(new)]


def test_the_policy_fingerprint_reuses_the_digests_the_compiler_left(tmp_path: Path) -> None:
    paths = dataclasses.replace(write_policy(tmp_path), cache_dir=tmp_path / "cache")
    paths.cache_dir.mkdir()
    real = load_policy(paths).fingerprint
    store = paths.cache_dir / STORE_NAME
    known = json.loads(store.read_text())
    adult = str(tmp_path / "lists" / "adult.txt")
    assert adult in known
    known[adult][5] = "00" * 32
    store.write_text(json.dumps(known))
    assert load_policy(paths).fingerprint != real  # the planted digest was used: the file was not read
    (tmp_path / "lists" / "adult.txt").write_text("porn.example\n", encoding="utf-8")  # rewritten, same text
    assert load_policy(paths).fingerprint == real
