"""Benchmark DomainSet against a plain Python set of the same names: memory, build, lookup, reload."""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.core.names import suffixes
from gateway.lists.domainset import DomainSet
from gateway.lists.formats import read_columns
from gateway.lists.index import ListIndex, ListSource

TLDS = ("com", "net", "org", "vn", "edu.vn", "com.vn", "info", "io")
LOOKUPS = 20_000


def synthetic_names(n: int, rng: random.Random) -> list[str]:
    """n distinct names of 2-4 labels, labels 3-15 letters/digits, over a few TLDs."""
    alphabet = string.ascii_lowercase + string.digits

    def label() -> str:
        # Labels start with a letter, as most real ones do.
        return rng.choice(string.ascii_lowercase) + "".join(rng.choices(alphabet, k=rng.randint(2, 14)))

    seen: dict[str, None] = {}
    while len(seen) < n:
        tld = rng.choice(TLDS)
        extra = rng.randint(2, 4) - tld.count(".") - 1
        name = ".".join([label() for _ in range(max(1, extra))] + [tld])
        seen[name] = None
    return list(seen)


def lookup_names(names: list[str], rng: random.Random, count: int, hit_share: float = 0.5) -> list[str]:
    """Four-label names: `hit_share` subdomains of listed names, the rest random (almost all misses)."""
    out = []
    shallow = [name for name in names if name.count(".") < 3]

    def label() -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 12)))

    for i in range(count):
        if i < count * hit_share:
            base = rng.choice(shallow)
            out.append(".".join([label() for _ in range(3 - base.count("."))] + [base]))
        else:
            out.append(".".join([label() for _ in range(3)] + ["com"]))
    rng.shuffle(out)
    return out


def set_nbytes(names: set[str]) -> int:
    return sys.getsizeof(names) + sum(map(sys.getsizeof, names))


def time_each(fn: Callable[[str], object], queries: list[str]) -> list[int]:
    clock = time.perf_counter_ns
    times = []
    for query in queries:
        start = clock()
        fn(query)
        times.append(clock() - start)
    return times


def median_p99(times: list[int]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) / 1000, ordered[int(len(ordered) * 0.99)] / 1000


def best_of(runs: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="number of synthetic domains")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hit-share", type=float, default=0.5, help="share of lookups that hit (0-1)")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    print(f"python {platform.python_version()} on {platform.machine()} ({platform.system()}), n={args.n:,}")
    names = synthetic_names(args.n, rng)
    queries = lookup_names(names, rng, LOOKUPS, args.hit_share)

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "domains.txt"
        text.write_text("\n".join(names) + "\n", encoding="ascii")
        compiled = Path(tmp) / "domains.sgwset"
        del names
        gc.collect()

        # Build: parse the text list and build, against reading the same file into a set.
        def build_domainset() -> DomainSet:
            cols = read_columns(text)
            return DomainSet.from_columns(cols.names, [0] * len(cols.names), cols.line_numbers, cols.flags)

        def build_set() -> set[str]:
            return set(text.read_text(encoding="ascii").split())

        gc.collect()
        start = time.perf_counter()
        built = build_domainset()
        build_seconds = time.perf_counter() - start
        gc.collect()
        start = time.perf_counter()
        plain = build_set()
        set_seconds = time.perf_counter() - start
        parse_seconds = best_of(3, lambda: read_columns(text))

        built.save(compiled, {"bench": True})
        del built
        gc.collect()
        load_seconds = best_of(5, lambda: DomainSet.load(compiled))
        dset, _ = DomainSet.load(compiled)

        # Memory.
        set_bytes = set_nbytes(plain)
        ds_bytes = dset.nbytes()

        # Lookups on the mapped (served) form; the naive peer walks the same suffixes in the set.
        def naive(name: str) -> list[str]:
            return [suffix for suffix in suffixes(name) if suffix in plain]

        assert all(bool(dset.matches(q)) == bool(naive(q)) for q in queries), "DomainSet and set disagree"
        for fn in (dset.matches, naive):  # warm both the same way
            time_each(fn, queries[:2000])
        gc.collect()
        ds_times = time_each(dset.matches, queries)
        set_times = time_each(naive, queries)
        contains_times = time_each(dset.__contains__, queries)
        raw_times = time_each(dset.raw_matches, queries)
        index = ListIndex([ListSource("bench", "domains.txt", "block")], dset)
        index_times = time_each(index.hits, queries)
        hit = [bool(dset.matches(q)) for q in queries]
        timer = time_each(lambda q: None, queries)

    n = len(dset)
    ds_med, ds_p99 = median_p99(ds_times)
    set_med, set_p99 = median_p99(set_times)
    hit_med, _ = median_p99([t for t, h in zip(ds_times, hit, strict=True) if h])
    miss_med, _ = median_p99([t for t, h in zip(ds_times, hit, strict=True) if not h])
    contains_med, _ = median_p99(contains_times)
    raw_med, _ = median_p99(raw_times)
    index_med, _ = median_p99(index_times)
    timer_med, _ = median_p99(timer)

    print()
    print("memory")
    print(f"  python set      {set_bytes / 2**20:9.1f} MiB  {set_bytes / n:6.1f} B/domain")
    print(f"  DomainSet       {ds_bytes / 2**20:9.1f} MiB  {ds_bytes / n:6.1f} B/domain")
    print(f"  ratio           {ds_bytes / set_bytes:9.3f}  (set / DomainSet = {set_bytes / ds_bytes:.1f}x)")
    print("build (text file -> structure)")
    print(f"  python set      {set_seconds:9.2f} s   (read + split + set)")
    print(f"  DomainSet       {build_seconds:9.2f} s   (parse {parse_seconds:.2f} s + build)")
    print(f"lookup, {len(queries):,} four-label names, {sum(hit) / len(hit):.0%} hits (per-call clock)")
    print(f"  set suffix walk median {set_med:6.2f} us  p99 {set_p99:6.2f} us")
    print(f"  DomainSet       median {ds_med:6.2f} us  p99 {ds_p99:6.2f} us  (matches, mmap-loaded)")
    print(f"    hits only     median {hit_med:6.2f} us;  misses only median {miss_med:6.2f} us")
    print(f"    raw_matches   median {raw_med:6.2f} us;  `in` median {contains_med:6.2f} us")
    print(f"    ListIndex.hits median {index_med:5.2f} us (the policy's path: raw_matches + Hit)")
    print(f"    clock overhead median {timer_med:5.2f} us (included above)")
    print("reload")
    print(f"  parse text      {parse_seconds * 1000:9.1f} ms")
    print(f"  load compiled   {load_seconds * 1000:9.1f} ms  (mmap + SHA-256 check)")
    print(f"  ratio           {parse_seconds / load_seconds:9.1f}x faster")

    targets = [
        ("memory <= 1/4 of set", ds_bytes * 4 <= set_bytes),
        ("build < 3 s", build_seconds < 3.0),
        ("median lookup < 2 us", ds_med < 2.0),
        ("reload >= 10x faster", parse_seconds >= 10 * load_seconds),
    ]
    print()
    for label, ok in targets:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
