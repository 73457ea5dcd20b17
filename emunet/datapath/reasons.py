"""Why the datapath dropped a frame: one enum, modelled on Cilium's drop reasons.

Cilium reports every drop with a numeric reason (`bpf/lib/common.h`, DROP_*); `hubble observe`
prints its name. emunet keeps the same idea so counters, `observe` and `trace` all speak the
same vocabulary. Values are stable: they end up in counter files and flow events.
"""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    INVALID_SOURCE = "invalid source"          # Cilium DROP_INVALID_SIP / DROP_INVALID_SMAC
    INVALID_PACKET = "invalid packet"          # truncated or malformed headers
    UNSUPPORTED_L3 = "unsupported L3 protocol"  # not IPv4/ARP (IPv6, LLDP, ...)
    UNSUPPORTED_L4 = "unsupported L4 protocol"  # e.g. SCTP, or ICMP to a ClusterIP
    NO_ROUTE = "no route to destination"       # Cilium DROP_NO_FIB / DROP_UNROUTABLE
    NO_ENDPOINTS = "service backend not found"  # Cilium DROP_NO_SERVICE
    TTL_EXCEEDED = "TTL exceeded"              # Cilium DROP_TTL_EXCEEDED
    INVALID_VNI = "invalid VNI"                # Cilium DROP_INVALID_VNI
    CT_INVALID = "conntrack invalid"           # e.g. an ICMP error with no matching flow
    FRAG_NOT_SUPPORTED = "fragmentation not supported"  # Cilium DROP_FRAG_NOSUPPORT
    FRAG_NEEDED = "fragmentation needed"       # Cilium DROP_FRAG_NEEDED: larger than the MTU
    POLICY_DENIED = "policy denied"            # Cilium DROP_POLICY: a NetworkPolicy isolates
