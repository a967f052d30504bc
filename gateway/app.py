"""Composition root: settings -> policy snapshot -> ordered DNS stages -> listeners; reload, workers."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import random
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.clock import clock_synchronised
from gateway.core.snapshot import Snapshot, SnapshotHolder
from gateway.dns.cache import Cache
from gateway.dns.memo import AnswerMemo
from gateway.dns.server import bind_tcp, bind_udp, serve
from gateway.dns.stages import Chain
from gateway.dns.stages.access import AccessStage
from gateway.dns.stages.cache import CacheStage
from gateway.dns.stages.local import PROBE_ZONE, LocalStage
from gateway.dns.stages.observe import ObserveStage
from gateway.dns.stages.policy import PolicyStage, lookup_packet
from gateway.dns.stages.upstream import UpstreamStage
from gateway.dns.upstream import Upstreams, UpstreamSpec
from gateway.dns.wire import name_to_wire
from gateway.errors import ConfigError, GatewayError
from gateway.policy.compile import PolicyPaths, load_policy
from gateway.settings import Settings, system_resolvers

log = logging.getLogger("gateway")

CHAIN_ORDER = ("observe", "access", "local", "policy", "cache", "upstream")


def _addresses(values) -> list[bytes]:
    return [ipaddress.ip_address(v).packed for v in values if v]


@dataclass
class Components:
    """What one worker runs: kept together so tests and `doctor` can look inside."""

    holder: SnapshotHolder
    chain: Chain
    cache: Cache
    upstreams: Upstreams
    observe: ObserveStage
    access: AccessStage
    local: LocalStage
    policy: PolicyStage
    upstream: UpstreamStage
    extra_upstreams: list = field(default_factory=list)
    memo: AnswerMemo | None = None


def policy_paths(settings: Settings, department: Path | None = None) -> PolicyPaths:
    """Where the policy comes from: the installed Department bundle when there is one, else the config's."""
    if department is not None:
        from gateway.updater import policy_paths as bundle_paths

        paths = bundle_paths(department, settings.policy.school, settings.policy.cache_dir)
        return PolicyPaths(paths.department, paths.school, paths.cache_dir, Path.cwd())
    return PolicyPaths(settings.policy.department, settings.policy.school, settings.policy.cache_dir, Path.cwd())


class UpdateMetrics:
    """The updater's observer: its outcomes become metrics and log lines."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def failure(self, reason: str) -> None:
        log.warning("policy bundle update failed (%s); the installed policy keeps serving", reason)
        if self.gateway.metrics is not None:
            self.gateway.metrics.update_failures.labels(reason).inc()

    def success(self, manifest: dict, at: float) -> None:
        m = self.gateway.metrics
        if m is not None:
            set_bundle_gauges(m, manifest)
            m.update_success.set(at)

    def clock_untrusted(self, untrusted: bool) -> None:
        if untrusted:
            log.warning("the clock is not synchronised: the installed bundle is neither rejected nor expired "
                        "because of the date")

    def stale_entries(self, count: int) -> None:
        if count:
            log.warning("%d school policy entries point at things the new Department bundle no longer has; "
                        "they are ignored (school-gateway validate lists them)", count)


def set_bundle_gauges(m, manifest: dict | None) -> None:
    if not manifest:
        return
    from gateway.updater.manifest import parse_time

    try:
        m.bundle_version.set(int(manifest["version"]))
        m.bundle_expiry.set(parse_time(manifest["expires"]))
    except (KeyError, ValueError, TypeError):
        pass


def upstream_specs(settings: Settings) -> list[UpstreamSpec]:
    texts = list(settings.dns.upstreams) or system_resolvers()
    if not texts:
        raise GatewayError("no upstream resolver: set dns.upstreams in gateway.yaml (e.g. udp://9.9.9.9) or add a "
                           "nameserver to /etc/resolv.conf")
    specs = [UpstreamSpec.parse(t) for t in texts]
    own = {(listen.host, listen.port) for listen in settings.dns.listen}
    for spec in specs:
        if (spec.host, spec.port) in own or (spec.port in {p for _, p in own}
                                             and any(h in ("0.0.0.0", "::") for h, _ in own)
                                             and ipaddress.ip_address(spec.host).is_loopback):
            raise GatewayError(f"upstream {spec} is this gateway itself: it would forward to itself. Set "
                               "dns.upstreams in gateway.yaml to the school's router or a public resolver")
    return specs


def build_components(settings: Settings, snapshot: Snapshot, *, clock_trusted=clock_synchronised,
                     ssl_context=None, cache_clock=time.monotonic, cache_tick_phase=random.random) -> Components:
    """Assemble the DNS chain in its one fixed order (CHAIN_ORDER, pinned by a test)."""
    dns = settings.dns
    holder = SnapshotHolder(snapshot)
    upstreams = Upstreams(upstream_specs(settings), timeout=dns.timeout, ssl_context=ssl_context)
    bootstrap = None
    plain = [UpstreamSpec.parse(t) for t in dns.bootstrap] or upstreams_specs_plain(settings)
    if plain:
        bootstrap = Upstreams(plain, timeout=dns.timeout)
    c = dns.cache
    cache = Cache(max_entries=c.size, min_ttl=c.min_ttl, max_ttl=c.max_ttl, negative_ttl=c.negative_ttl,
                  stale_for=c.serve_stale, clock=cache_clock, tick_phase=cache_tick_phase)
    zones = {zone: Upstreams([UpstreamSpec.parse(u) for u in ups], timeout=dns.timeout)
             for zone, ups in dns.forward_zones.items()}
    records = {name: ([ipaddress.ip_address(a).packed for a in addrs if ":" not in a],
                      [ipaddress.ip_address(a).packed for a in addrs if ":" in a])
               for name, addrs in dns.local_records.items()}
    observe = ObserveStage()
    access = AccessStage(holder, dns.rate_limit.qps, dns.rate_limit.burst, dns.rate_limit.exempt)
    local = LocalStage(records, zones)
    policy = PolicyStage(holder, dns.block_ttl, (_addresses([dns.blockpage_v4]), _addresses([dns.blockpage_v6])),
                         dns.rebinding_protection, clock_trusted=clock_trusted)
    upstream = UpstreamStage(upstreams, cache, bootstrap, dns.time_servers, clock_trusted)
    cache_stage = CacheStage(cache, upstream.prefetch if c.prefetch else None)
    chain = Chain([observe, access, local, policy, cache_stage, upstream])
    assert chain.names == CHAIN_ORDER
    memo = AnswerMemo(holder, access, observe.listeners, clock=cache_clock)
    return Components(holder, chain, cache, upstreams, observe, access, local, policy, upstream,
                      [u for u in (bootstrap, *zones.values()) if u is not None], memo)


def freeze_imports() -> None:
    """Before the first policy load: move what the imports made (modules, classes, functions: most of
    the objects the collector tracks, and they live as long as the process) out of its sight, so a full
    collection while serving walks only what serving made. The policy is loaded after this on
    purpose: frozen objects are never collected, and an old policy must be once a reload replaces it."""
    gc.collect()
    gc.freeze()


async def run_low_priority(argv: list[str], timeout: float, escalate_after: float = 60.0) -> int | None:
    """Run `argv` where it cannot delay the serving loop; its exit status, or None if it was killed at
    `timeout`.

    The child is spawned with posix_spawn (vfork-like: no copy of this process's page tables, which a
    fork of a worker holding a 1M-name cache takes milliseconds to make) and under SCHED_IDLE: it
    runs only on CPU time nobody else wants, and a worker waking for a query takes the core back at
    once (at nice 19 under the normal policy the child still ran whole slices on a core it shared with
    a worker, and queries waited 15-30 ms behind them). A box saturated for `escalate_after` s would
    starve it, so from then on it runs under the normal policy at nice 19.
    """
    loop = asyncio.get_running_loop()
    spawned = loop.create_future()

    def spawn() -> None:  # in a thread of its own, which ends with the spawn
        try:
            result = _spawn_idle(argv)
        except BaseException as exc:
            loop.call_soon_threadsafe(spawned.set_exception, exc)
        else:
            loop.call_soon_threadsafe(spawned.set_result, result)

    threading.Thread(target=spawn, name="idle-spawn", daemon=True).start()
    try:
        pid, inherited = await asyncio.shield(spawned)
    except asyncio.CancelledError:
        spawned.add_done_callback(_kill_spawned)  # the spawn still completes: that child must not be left
        raise
    if not inherited:
        try:  # posix_spawn's own scheduler setting refuses SCHED_IDLE (EINVAL); microseconds after exec
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:  # already gone
            pass
    done = loop.create_future()
    pidfd = os.pidfd_open(pid)
    loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
    try:
        first = min(escalate_after, timeout)
        try:
            await asyncio.wait_for(asyncio.shield(done), first)
        except TimeoutError:
            if first >= timeout:
                raise
            try:
                os.setpriority(os.PRIO_PROCESS, pid, 19)
                os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
            except OSError as exc:  # not permitted here (RLIMIT_NICE): it stays idle-only
                log.warning("list compiler stays at idle priority: %s", exc)
            await asyncio.wait_for(done, timeout - first)
    except BaseException as exc:  # the timeout, or the gateway stopping during a reload
        os.kill(pid, signal.SIGKILL)  # not reaped yet, so the pid is still this child's
        if not isinstance(exc, TimeoutError):
            raise
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        status = os.waitpid(pid, 0)[1]
    return None if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)


def _spawn_idle(argv: list[str]) -> tuple[int, bool]:
    """posix_spawn `argv` from the calling thread after putting that thread alone (the policy is per
    thread on Linux) under SCHED_IDLE, so the child has the policy from its first instruction: set from
    the parent just after the spawn, it came too late, since the new child ran its first slice (a
    millisecond or more of the interpreter starting) at the normal policy, on the core of the worker
    that spawned it, at the SIGHUP. The pid, and whether the child inherited the policy."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        inherited = True
    except OSError:
        inherited = False
    devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    return os.posix_spawn(argv[0], argv, os.environ, file_actions=devnull), inherited


def _kill_spawned(spawned: asyncio.Future) -> None:
    if not spawned.cancelled() and spawned.exception() is None:
        pid = spawned.result()[0]
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


_AUDIT_LOCK = threading.Lock()
YOUNG_EVERY = 0.1  # seconds between collections of the youngest generation (collect_young)


async def collect_young(interval: float = YOUNG_EVERY) -> None:
    """Collect the youngest generation every `interval` s while serving.

    CPython starts a young collection once 700 more tracked objects were made than freed. A full cache
    or memo makes one entry and frees the oldest for every new answer, which keeps that balance near
    zero while new entries pile up unexamined: the young generation grew to ~50,000 objects and its
    collection, when something finally set it off, stalled the loop for 5-18 ms. Collected every
    0.1 s it holds what 0.1 s made, and the entries (atoms only) leave it untracked at once.
    """
    while True:
        await asyncio.sleep(interval)
        gc.collect(0)


def upstreams_specs_plain(settings: Settings) -> list[UpstreamSpec]:
    """Plain-DNS upstreams for time-server names while the clock is wrong: the configured UDP/TCP ones,
    else resolv.conf's."""
    specs = [UpstreamSpec.parse(t) for t in settings.dns.upstreams]
    plain = [s for s in specs if s.proto != "tls"]
    if plain:
        return plain
    return [UpstreamSpec.parse(t) for t in system_resolvers()]


class Gateway:
    """One worker: listeners, reload on SIGHUP or file change, clean stop on SIGTERM."""

    def __init__(self, settings: Settings, *, reuse_port: bool = False, out=sys.stdout, worker: int = 0,
                 workers: int = 1, serve_metrics: bool = True):
        self.settings = settings
        self.reuse_port = reuse_port
        self.worker, self.workers, self.serve_metrics = worker, workers, serve_metrics
        self.metrics = None
        self.updater = None
        self.department: Path | None = None  # the installed bundle's Department layer, if any
        self.out = out
        self.components: Components | None = None
        self.stopping = asyncio.Event()
        self.reloads = {"ok": 0, "failed": 0}
        self._watch_state: dict | None = None

    def load(self) -> Snapshot:
        return load_policy(policy_paths(self.settings, self.department))

    def _start_updater(self) -> None:
        """Recover any half-done update, then serve the installed bundle's Department layer if one is there."""
        from gateway.updater import Updater, make_validator

        settings = self.settings
        loop = asyncio.get_running_loop()

        def applied(department: Path) -> None:  # called from the updater's thread
            self.department = department
            loop.call_soon_threadsafe(lambda: loop.create_task(self.reload()))

        self.updater = Updater(settings.updater, validate=make_validator(settings.policy.school,
                                                                         settings.policy.cache_dir),
                               on_applied=applied, observer=UpdateMetrics(self))
        if self.worker == 0:
            self.updater.recover()
        self.department = self.updater.department_dir()

    async def reload(self) -> bool:
        """Compile a new snapshot beside the old one and swap it; a bad policy keeps the old one serving."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            await self._precompile()
            snapshot = await loop.run_in_executor(None, self.load)
        except ConfigError as exc:
            self.reloads["failed"] += 1
            if self.metrics is not None:
                self.metrics.reloads.labels("failed").inc()
            log.error("policy reload rejected, the previous policy keeps serving:\n%s", exc.render("en"))
            return False
        except Exception as exc:
            self.reloads["failed"] += 1
            log.error("policy reload failed, the previous policy keeps serving: %s", exc)
            return False
        old = self.components.holder.swap(snapshot)
        self.reloads["ok"] += 1
        # In a thread: the audit trail is fsynced, which can take tens of milliseconds on an SD card.
        await loop.run_in_executor(None, self._audit, snapshot)
        if self.metrics is not None:
            self.metrics.reloads.labels("ok").inc()
            self.metrics.set_policy(snapshot, time.time())
        self._watch_state = self._file_state(snapshot)
        log.info("policy reloaded in %.2fs: %s -> %s", time.perf_counter() - started, old.fingerprint[:12],
                 snapshot.fingerprint[:12])
        return True

    async def _precompile(self) -> None:
        """Parse changed lists in a child process, which leaves the compiled form in the cache: the
        serving process then only maps it (milliseconds), so a big list never holds its GIL for seconds."""
        paths = policy_paths(self.settings, self.department)
        if paths.cache_dir is None:
            return
        code = ("import sys; from pathlib import Path\n"
                "from gateway.policy.compile import PolicyPaths, load_policy\n"
                "try:\n load_policy(PolicyPaths(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))\n"
                "except Exception:\n sys.exit(1)\n")
        await run_low_priority([sys.executable, "-c", code, str(paths.department), str(paths.school),
                                str(paths.cache_dir)], timeout=300)
        # Whatever happened, the in-process load below gives the verdict (and the errors to log).

    def _file_state(self, snapshot: Snapshot) -> dict:
        state = {}
        for name in snapshot.files:
            try:
                st = os.stat(name)
                state[name] = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                state[name] = None
        return state

    async def _watch(self, interval: float = 2.0) -> None:
        # A changed file is reloaded once it has stayed the same for one more interval (complete),
        # or at once when it was replaced by rename (new inode) — the safe way to write it.
        pending = None
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), interval)
                return
            except TimeoutError:
                pass
            if self.updater is not None and self.worker != 0:
                installed = self.updater.department_dir()  # worker 0 installs; the others follow
                if installed is not None and installed != self.department:
                    self.department = installed
                    await self.reload()
                    continue
            current = self._file_state(self.components.holder.current)
            if current == self._watch_state:
                pending = None
                continue
            renamed = any(old and new and old[2] != new[2]
                          for old, new in zip(self._watch_state.values(), current.values(), strict=False))
            if renamed or pending == current:
                pending = None
                await self.reload()
            else:
                pending = current

    def _audit(self, snapshot: Snapshot) -> None:
        from gateway.audit import AuditTrail

        if self.worker != 0:
            return
        try:
            with _AUDIT_LOCK:  # two reloads in a row: one record (read the last entry, append) at a time
                entry = AuditTrail(state_dir(self.settings) / "audit.jsonl").record(snapshot)
        except OSError as exc:
            log.warning("could not write the policy audit trail: %s", exc)
            return
        if entry is not None:
            log.info("policy change recorded in the audit trail: %s", "; ".join(entry["changes"])[:500])

    async def _flush_query_log(self, qlog, interval: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            try:
                await loop.run_in_executor(None, qlog.flush)
            except Exception as exc:
                log.warning("query log write failed: %s", exc)

    async def _run_proxy(self) -> None:
        """The optional HTTP(S) proxy, on the same policy holder as DNS (one process only)."""
        from gateway.proxy.service import run_proxy
        from gateway.proxy.stats import ProxyStats

        self.proxy_stats = ProxyStats()
        if self.metrics is not None:
            self.proxy_stats.client_seen = self.metrics.clients.see
        try:
            await run_proxy(self.settings, self.components.holder, self.stopping, stats=self.proxy_stats,
                            started=lambda service: log.info("proxy listening on %s", service.addresses))
        except Exception as exc:
            log.error("the proxy stopped: %s", exc)

    async def _flush_metrics(self, interval: float = 1.0) -> None:
        m, comps = self.metrics, self.components
        m.protection.set(1)
        m.clock_synced.set(1 if clock_synchronised() else 0)
        shared_at = 0.0
        while True:
            await asyncio.sleep(interval)
            try:
                stats = getattr(self, "proxy_stats", None)
                if stats is not None:
                    m.add_proxy(stats.take(), stats.open)
                m.flush()
                m.set_cache(comps.cache.stats())
                m.set_rate_limited(comps.access.limited)
                m.single_source.set(1 if comps.access.relays.single_source else 0)
                m.clock_synced.set(1 if clock_synchronised() else 0)
                for h in comps.upstreams.health():
                    m.upstream_up.labels(str(h.spec)).set(1 if h.healthy else 0)
                    if h.latency is not None:
                        m.upstream_latency.labels(str(h.spec)).set(h.latency)
                if time.monotonic() - shared_at > 5:
                    shared_at = time.monotonic()
                    await asyncio.get_running_loop().run_in_executor(None, m.share)
            except Exception as exc:
                log.warning("metrics flush failed: %s", exc)

    async def _probe_loops(self) -> None:
        """Ask each upstream for a random name only this gateway would recognise: if it comes back to us,
        that upstream forwards to the gateway (directly, via 127.0.0.53, or via a relaying router)."""
        comps = self.components
        looping = []
        for spec in comps.upstreams.specs:
            token = secrets.token_hex(8)
            probe = Upstreams([spec], timeout=min(1.0, self.settings.dns.timeout), attempts=1)
            packet = lookup_packet(name_to_wire(f"{token}.{PROBE_ZONE}"), 1, False)
            try:
                await probe.query(packet)
            except Exception:
                pass
            finally:
                await probe.close()
            if token in comps.local.probes_seen:
                looping.append(spec)
        if looping:
            names = ", ".join(str(s) for s in looping)
            raise GatewayError(f"upstream {names} sends queries back to this gateway (a forwarding loop). Set "
                               "dns.upstreams in gateway.yaml to a resolver that does not use the gateway, "
                               "e.g. the ISP's or a public one, not 127.0.0.53 or a router whose DNS is the "
                               "gateway")

    async def run(self) -> int:
        settings = self.settings
        if settings.updater is not None:
            try:
                self._start_updater()
            except ConfigError as exc:
                print(exc.render("en"), file=sys.stderr)
                return 2
        freeze_imports()
        try:
            snapshot = self.load()
        except ConfigError as exc:
            print(exc.render("en"), file=sys.stderr)
            return 2
        self.components = build_components(settings, snapshot)
        comps = self.components
        sockets = []
        for listen in settings.dns.listen:
            sockets.append(("udp", bind_udp(listen.host, listen.port, self.reuse_port)))
            sockets.append(("tcp", bind_tcp(listen.host, listen.port, self.reuse_port)))
        transports, servers = await serve(comps.chain, sockets, comps.memo)
        loop = asyncio.get_running_loop()
        try:
            await self._probe_loops()
        except GatewayError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
        for sig, handler in ((signal.SIGTERM, self.stopping.set), (signal.SIGINT, self.stopping.set),
                             (signal.SIGHUP, lambda: loop.create_task(self.reload()))):
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):
                pass
        self._watch_state = self._file_state(snapshot)
        self._audit(snapshot)
        watcher = loop.create_task(self._watch()) if settings.policy.watch else None
        collector = loop.create_task(collect_young())
        qlog_task = None
        if settings.query_log.enabled:
            from gateway.querylog import QueryLog

            qlog = QueryLog(query_log_path(settings), settings.query_log.privacy, settings.query_log.retention_days)
            comps.observe.listeners.append(qlog.observe)
            qlog_task = loop.create_task(self._flush_query_log(qlog))
        metrics_server = None
        if settings.metrics.enabled:
            self.metrics = make_metrics(settings, self.worker, self.workers)
            self.metrics.set_policy(snapshot, time.time())
            comps.observe.listeners.append(self.metrics.observe)
            if self.updater is not None:
                set_bundle_gauges(self.metrics, self.updater.installed())
            flusher = loop.create_task(self._flush_metrics())
            if self.serve_metrics:
                metrics_server = start_metrics_server(settings, self.metrics.exposition)
        else:
            flusher = None
        where = " ".join(f"udp+tcp {listen}" for listen in settings.dns.listen)
        ups = ", ".join(str(s) for s in comps.upstreams.specs)
        source = "embedded default configuration" if settings.embedded else settings.source
        clock = "synchronised" if clock_synchronised() else "NOT synchronised: time restrictions are on"
        # one write per line: several workers share stdout, and print() writes the newline separately
        self.out.write(f"school-gateway ready: dns {where}; upstreams {ups}; policy {snapshot.version} "
                       f"{snapshot.fingerprint[:12]} ({len(snapshot.index)} listed names); {source}; "
                       f"clock {clock}\n")
        self.out.flush()
        proxy_task = None
        if settings.proxy is not None and self.worker == 0:
            proxy_task = loop.create_task(self._run_proxy())
        update_task = None
        if self.updater is not None and self.worker == 0:
            update_task = loop.create_task(self.updater.run_forever(self.stopping))
        await self.stopping.wait()
        if proxy_task is not None:
            try:
                await asyncio.wait_for(proxy_task, 10)
            except (TimeoutError, Exception):
                proxy_task.cancel()
        if update_task is not None:
            try:
                await asyncio.wait_for(update_task, 5)
            except (TimeoutError, Exception):
                update_task.cancel()
        if watcher:
            watcher.cancel()
        collector.cancel()
        if flusher:
            flusher.cancel()
        if qlog_task:
            qlog_task.cancel()
            await loop.run_in_executor(None, qlog.flush)
        if metrics_server is not None:
            metrics_server.stop()
        for t in transports:
            t.close()
        for s in servers:
            s.close()
        await comps.upstreams.close()
        for u in comps.extra_upstreams:
            await u.close()
        self.out.write("school-gateway stopped\n")
        self.out.flush()
        return 0


def state_dir(settings: Settings) -> Path:
    from gateway.settings import default_cache_dir

    return settings.state_dir or settings.policy.cache_dir or default_cache_dir()


def query_log_path(settings: Settings) -> Path:
    return settings.query_log.path or state_dir(settings) / "querylog.sqlite"


def make_metrics(settings: Settings, worker: int = 0, workers: int = 1):
    from gateway.metrics import Metrics

    return Metrics(min_group_size=settings.privacy.min_group_size,
                   decision_interval=settings.privacy.decision_interval,
                   state_dir=state_dir(settings) / "metrics", worker=worker, workers=workers,
                   key=_SHARED_KEY)


def start_metrics_server(settings: Settings, render):
    from gateway.metrics import MetricsServer

    m = settings.metrics
    allow = m.allow or (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    server = MetricsServer(render, m.host, m.port, allow, m.basic_auth, m.tls).start()
    log.info("metrics on %s:%d", m.host, server.port)
    return server


# Key for the keyed client hashes that count distinct clients: made once per start, in memory only,
# and inherited by forked workers so their counts can be united.
_SHARED_KEY = secrets.token_bytes(16)


def run(settings: Settings) -> int:
    """Run the gateway: one process, or one per core (`workers: auto`) sharing the port via SO_REUSEPORT."""
    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workers = settings.dns.workers or os.cpu_count() or 1
    if workers == 1:
        return _run_one(settings, reuse_port=False)
    # Compile the list cache once in the parent so every worker maps the same file.
    try:
        load_policy(policy_paths(settings))
    except ConfigError as exc:
        print(exc.render("en"), file=sys.stderr)
        return 2
    metrics_server = None
    if settings.metrics.enabled:
        # Workers write their numbers to files here; the parent serves their sum on one endpoint.
        mp = state_dir(settings) / "metrics-mp"
        if mp.exists():
            for old in mp.iterdir():
                old.unlink()
        mp.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mp)
    children = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _run_one(settings, reuse_port=True, worker=index, workers=workers)
            finally:
                os._exit(code)
        children.append(pid)
    if settings.metrics.enabled:
        from gateway.metrics import Metrics

        metrics_server = start_metrics_server(settings, Metrics.multiprocess_exposition)

    def forward(sig, _frame):
        for pid in children:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        code = code or os.waitstatus_to_exitcode(status)
    if metrics_server is not None:
        metrics_server.stop()
    return code


def _run_one(settings: Settings, reuse_port: bool, worker: int = 0, workers: int = 1) -> int:
    try:
        import uvloop  # a well-kept, faster event loop where it is installed
    except ImportError:
        uvloop = None
    try:
        main = Gateway(settings, reuse_port=reuse_port, worker=worker, workers=workers,
                       serve_metrics=workers == 1).run()
        if uvloop is not None:
            return uvloop.run(main)
        return asyncio.run(main)
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
