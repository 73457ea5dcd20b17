"""TCP connection states as Linux nf_conntrack models them (nf_conntrack_proto_tcp.c).

Pure data and one function: the state a segment moves a tracked connection to, given its
direction and flags, and each state's timeout (the nf_conntrack_tcp_timeout_* defaults,
Documentation/networking/nf_conntrack-sysctl.rst). Window tracking (tcp_in_window) is left
out: emunet's pods are honest about sequence numbers, its attackers are not the point.
"""

from __future__ import annotations

from emunet.packets import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN

# enum tcp_conntrack (include/uapi/linux/netfilter/nf_conntrack_tcp.h), same numbers
NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, \
    SYN_SENT2 = range(10)
CUT = 10  # emunet's own: a connection a new NetworkPolicy denies (a tombstone, see Conntrack)
IGNORE = -1  # sIG / sIV: the segment does not move the state (nor refresh the timeout)

NAMES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
         "TIME_WAIT", "CLOSE", "SYN_SENT2", "CUT")

# seconds, tcp_timeouts[] of nf_conntrack_proto_tcp.c
TIMEOUTS = (10.0, 120.0, 60.0, 432000.0, 120.0, 60.0, 30.0, 120.0, 10.0, 120.0, 60.0)
UNACK = 300.0  # nf_conntrack_tcp_timeout_unacknowledged: a picked-up flow until its peer answers
CLOSING = frozenset((FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE))  # tcp_can_early_drop

# get_conntrack_index(): the row a segment selects
SYN_SET, SYNACK_SET, FIN_SET, ACK_SET, RST_SET, NONE_SET = range(6)

_I = IGNORE
_SS, _SR, _ES, _FW, _CW, _LA, _TW, _CL, _S2 = (SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT,
                                               CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, SYN_SENT2)
# tcp_conntracks[dir][index][state], columns NONE..SYN_SENT2 (both sIG and sIV are IGNORE here:
# emunet passes such a segment unchanged, where Linux marks the sIV ones INVALID)
TABLE: tuple[tuple[tuple[int, ...], ...], ...] = (
    (  # ORIGINAL direction
        (_SS, _SS, _I, _I, _I, _I, _I, _SS, _SS, _S2),   # SYN: TIME_WAIT/CLOSE reopen
        (_I, _I, _I, _I, _I, _I, _I, _I, _I, _SR),       # SYN-ACK
        (_I, _I, _FW, _FW, _LA, _LA, _LA, _TW, _CL, _I),  # FIN
        (_ES, _I, _ES, _ES, _CW, _CW, _TW, _TW, _CL, _I),  # ACK: SYN_RECV -> ESTABLISHED
        (_I, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL),  # RST
        (_I,) * 10,                                       # none of them
    ),
    (  # REPLY direction
        (_I, _S2, _I, _I, _I, _I, _I, _I, _I, _S2),       # SYN: simultaneous open
        (_I, _SR, _I, _I, _I, _I, _I, _I, _I, _SR),       # SYN-ACK: SYN_SENT -> SYN_RECV
        (_I, _I, _FW, _FW, _LA, _LA, _LA, _TW, _CL, _I),
        (_I, _I, _SR, _ES, _CW, _CW, _TW, _TW, _CL, _I),
        (_I, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL, _CL),
        (_I,) * 10,
    ),
)


def index(flags: int) -> int:
    """get_conntrack_index(): RST first, then SYN (with or without ACK), FIN, ACK."""
    if flags & TCP_RST:
        return RST_SET
    if flags & TCP_SYN:
        return SYNACK_SET if flags & TCP_ACK else SYN_SET
    if flags & TCP_FIN:
        return FIN_SET
    return ACK_SET if flags & TCP_ACK else NONE_SET


def first_state(flags: int) -> int:
    """The state of a connection its first segment opens (tcp_new): a SYN starts SYN_SENT; an
    ACK is picked up mid-stream as ESTABLISHED (nf_conntrack_tcp_loose=1, the default, so a
    restarted agent without a snapshot keeps flows working), unassured until the peer
    answers. Linux tracks nothing else (INVALID); emunet tracks it as CLOSE, 10 s, so NAT
    stays consistent for the stray segment's answer."""
    i = index(flags)
    if i == SYN_SET:
        return SYN_SENT
    if i == ACK_SET:
        return ESTABLISHED
    return CLOSE
