"""Local stage: the school's own records, encrypted-resolver discovery (answered here, never forwarded),
the self-forwarding probe, and which names go to a forward zone's own DNS server."""

from __future__ import annotations

from gateway.dns import answers
from gateway.dns.stages import INF, Request, Stage

LOCAL_TTL = 300
PROBE_ZONE = "loopcheck.school-gateway.invalid"


class LocalStage(Stage):
    name = "local"

    def __init__(self, records: dict, zones: dict | None = None):
        # records: name -> (v4 bytes list, v6 bytes list); zones: zone -> Upstreams
        self.records = records
        self.zones = zones or {}
        self.probes_seen: set[str] = set()

    def before(self, req: Request):
        q = req.query
        name = q.qname
        if name.endswith("resolver.arpa") and (name == "resolver.arpa" or name.endswith(".resolver.arpa")):
            # RFC 9462 discovery would tell clients to switch to an encrypted resolver we cannot filter.
            req.until = INF
            return answers.nodata(q, "resolver.arpa", LOCAL_TTL)
        if name.endswith(PROBE_ZONE):
            if len(self.probes_seen) > 1024:  # only the start-up probes matter; never grow without bound
                self.probes_seen.clear()
            self.probes_seen.add(name.split(".", 1)[0])
            return answers.nxdomain(q, PROBE_ZONE, 0)
        found = self.records.get(name)
        if found is not None:
            req.local = True
            req.until = INF
            return answers.address_answer(q, found[0], found[1], LOCAL_TTL)
        if self.zones:
            for zone, upstreams in self.zones.items():
                if name == zone or name.endswith("." + zone):
                    req.local = True
                    req.upstreams = upstreams
                    break
        return None
