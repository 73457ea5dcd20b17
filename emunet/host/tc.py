"""Link impairments on a node's underlay (Mininet's TCLink, containerlab's `tools netem`).

`emunet link set NODE --delay 50ms --jitter 5ms --loss 5% --rate 10mbit` is recorded in the
cluster state (`links`, published by the supervisor like any change) and applied in two places:

- delay, jitter and loss by the node's agent, on every frame it sends onto the underlay (VXLAN
  datagrams, NodePort replies), with netem's semantics (emunet/datapath/netem.py). Not tc netem:
  CONFIG_NET_SCH_NETEM is optional and missing on some kernels; this way the result is the same
  on every machine. A ping from a pod on this node to one elsewhere gets the delay once per
  round trip (the reply leaves the other node unimpaired), as with netem on eth0.
- the rate by the kernel: a tc tbf qdisc on the node's eth0 (tbf is in every distribution
  kernel; it queues in the kernel and pushes back on the sender, as a slow link does).

A node with `datapath: kernel` has no agent: there the kernel's netem does delay/jitter/loss
(netem as the parent of tbf), and a kernel without netem is told so. The same block is
declarable per node in the Cluster document (`impairment:`).

Parsing the values (as tc writes them) is `emunet.config.impairment`; this module runs tc
(`tc -n NETNS`) and keeps the state's `links` in step.
"""

from __future__ import annotations

import subprocess

from emunet.config import impairment
from emunet.host.manifest import HostError
from emunet.model import Impairment
from emunet.state.cluster import ClusterState

TBF_LATENCY_MS = 100  # how long a packet may wait in tbf before it is dropped


def tc_commands(netns: str, imp: Impairment, dev: str = "eth0",
                netem_too: bool = False) -> list[list[str]]:
    """The tc commands for one impairment (replace: idempotent over an earlier one): tbf for
    the rate; netem only with `netem_too` (a kernel-datapath node, which has no agent)."""
    tc = ["tc", "-n", netns, "qdisc"]
    netem = []
    if imp.delay_ms and netem_too:
        netem += ["delay", f"{imp.delay_ms:g}ms"]
        if imp.jitter_ms:
            netem += [f"{imp.jitter_ms:g}ms"]
            if imp.distribution != "uniform":
                netem += ["distribution", imp.distribution]
    if imp.loss_pct and netem_too:
        netem += ["loss", f"{imp.loss_pct:g}%"]
    tbf = []
    if imp.rate_bps:
        # burst: at least one 10 ms tick of the rate and a few full frames (tbf needs > MTU)
        burst = max(imp.rate_bps // 8 // 100, 4 * 1514)
        tbf = ["tbf", "rate", f"{imp.rate_bps}bit", "burst", str(burst),
               "latency", f"{TBF_LATENCY_MS}ms"]
    cmds = [[*tc, "del", "dev", dev, "root"]]  # may fail (nothing set): ignored by apply
    if netem:
        cmds.append([*tc, "add", "dev", dev, "root", "handle", "1:", "netem", *netem])
        if tbf:
            cmds.append([*tc, "add", "dev", dev, "parent", "1:1", "handle", "10:", *tbf])
    elif tbf:
        cmds.append([*tc, "add", "dev", dev, "root", "handle", "1:", *tbf])
    return cmds


def _run(cmd: list[str], ignore_error: bool = False) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0 and not ignore_error:
        err = r.stderr.strip()
        if "netem" in cmd and ("unknown" in err.lower() or "not found" in err.lower()):
            raise HostError("this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): delay, "
                            "jitter and loss cannot be emulated here; --rate works (tbf)")
        raise HostError(f"{' '.join(cmd)}: {err}")


def apply_tc(state: ClusterState, node: str, imp: Impairment) -> None:
    """The kernel's part of NODE's impairment on its eth0 (replacing any earlier one)."""
    from emunet.host.kernelnode import is_kernel  # builds on state, as this module

    netns = state.node(node).netns
    cmds = tc_commands(netns, imp, netem_too=is_kernel(state, node))
    _run(cmds[0], ignore_error=True)
    try:
        for cmd in cmds[1:]:
            _run(cmd)
    except HostError:
        _run(cmds[0], ignore_error=True)  # never leave half an impairment behind
        raise


def reset_tc(state: ClusterState, node: str) -> None:
    _run(["tc", "-n", state.node(node).netns, "qdisc", "del", "dev", "eth0", "root"],
         ignore_error=True)


def set_link(state: ClusterState, node: str, imp: Impairment | None) -> str:
    """The supervisor's `link set` (imp) / `link reset` (None): tc first, then the state the
    caller publishes (the agents pick up delay/jitter/loss on their reload)."""
    state.node(node)  # StateError for an unknown node
    if imp is None:
        reset_tc(state, node)
        state.links.pop(node, None)
        return f"link/{node} reset (no impairment)"
    apply_tc(state, node, imp)
    state.links[node] = imp
    return f"link/{node} impaired: {impairment.describe(imp)}"


def apply_declared(state: ClusterState) -> None:
    """`up`: the Cluster document's impairment blocks (already in state.links)."""
    for node, imp in state.links.items():
        apply_tc(state, node, imp)


def show(state: ClusterState) -> list[list[str]]:
    """Rows for `emunet link show`: node, underlay IP, what is set, the kernel's qdiscs."""
    rows = [["NODE", "UNDERLAY", "IMPAIRMENT", "QDISC (tc)"]]
    for n in state.nodes:
        imp = state.links.get(n.name)
        r = subprocess.run(["tc", "-n", n.netns, "qdisc", "show", "dev", "eth0"],
                           capture_output=True, text=True, check=False)
        qdiscs = "; ".join(line.strip() for line in r.stdout.splitlines()
                           if not line.startswith("qdisc clsact")) or "-"
        rows.append([n.name, n.underlay_ip, impairment.describe(imp) if imp else "none", qdiscs])
    return rows
