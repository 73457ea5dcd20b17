"""The whole-reply UDP cache in front of the resolver: right ID, right case, dropped on reload,
never used for TCP (where answers are not truncated), bounded."""

from __future__ import annotations

from scapy.layers.dns import DNS, DNSQR

from emunet.dns import handler as handler_mod
from emunet.dns.zone import Zone
from tests.unit.dns_cluster import NS, SERIAL, cluster, handler, query, rrs

SVC = f"monospaced.{NS}.svc.cluster.local"


def test_a_repeated_query_is_answered_from_the_cache_with_its_own_id() -> None:
    h = handler()
    first = h.handle(query(SVC, ident=1))
    assert len(h.wire) == 1
    second = h.handle(query(SVC, ident=2))
    assert isinstance(first, bytes) and isinstance(second, bytes)
    assert DNS(second).id == 2 and second[2:] == first[2:]
    assert h.counters["queries"] == 2 and h.counters["NOERROR"] == 2


def test_each_spelling_and_flag_set_is_its_own_entry() -> None:
    h = handler()
    h.handle(query(SVC))
    out = DNS(h.handle(bytes(DNS(id=7, rd=0, qd=DNSQR(qname=SVC.upper())))))
    assert out.qd[0].qname.decode().rstrip(".") == SVC.upper()
    assert rrs(out.an)[0].rrname.decode().rstrip(".") == SVC.upper() and out.rd == 0
    assert len(h.wire) == 2


def test_reload_drops_the_cache_so_the_next_answer_is_new() -> None:
    h = handler()
    assert DNS(h.handle(query(SVC))).rcode == 0
    st = cluster()
    st.remove_service((NS, "monospaced"))
    h.load(Zone.from_state(st, serial=SERIAL))
    assert h.wire == {} and DNS(h.handle(query(SVC))).rcode == 3


def test_tcp_does_not_use_udp_replies() -> None:
    h = handler()
    h.handle(query(SVC), udp=True)
    h.handle(query(SVC), udp=False)
    assert len(h.wire) == 1  # TCP answers are neither read from nor written to it


def test_the_cache_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(handler_mod, "MAX_CACHE", 3)
    h = handler()
    for i in range(7):
        h.handle(query(f"n{i}.{NS}.svc.cluster.local"))
    assert len(h.wire) <= 3
