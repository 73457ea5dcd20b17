"""Test helper: the upstream Kubernetes netpol e2e model as a pure ClusterState.

Namespaces x, y, z (label ns=<name>), pods a, b, c in each (label pod=<name>), each serving TCP
and UDP on ports 80 and 81 with the upstream port names (serve-80-tcp, ...). `reach` asks the
compiled tables of both nodes, as the datapath does: egress on the source's node, ingress on
the destination's.
"""

from __future__ import annotations

from emunet.config import load_config_text
from emunet.packets import PROTO_TCP, PROTO_UDP, ip_bytes
from emunet.policy.compile import PROTOS, compile_node
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
ALL = tuple(f"{n}/{p}" for n in NAMESPACES for p in PODS)
CLUSTER = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: netpol}
spec:
  nodes: [{name: node-1}, {name: node-2}]
"""


def model_yaml(pod_labels: dict[str, dict[str, str]] | None = None) -> str:
    docs = [CLUSTER]
    for ns in NAMESPACES:
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: "
                    f"{{ns: {ns}}}}}\n")
    for ns in NAMESPACES:
        for p in PODS:
            labels = (pod_labels or {}).get(f"{ns}/{p}", {"pod": p})
            lab = ", ".join(f"{k}: {v}" for k, v in labels.items())
            ports = "".join(f"        - {{name: serve-{n}-{pr.lower()}, containerPort: {n}, "
                            f"protocol: {pr}}}\n" for n in (80, 81) for pr in ("TCP", "UDP"))
            docs.append(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {p}, namespace: {ns}, "
                        f"labels: {{{lab}}}}}\nspec:\n  containers:\n    - name: c\n"
                        f"      image: agnhost\n      ports:\n{ports}")
    return "---\n".join(docs)


def state(policies: str = "", pod_labels: dict[str, dict[str, str]] | None = None
          ) -> ClusterState:
    text = model_yaml(pod_labels) + ("---\n" + policies if policies.strip() else "")
    return plan(load_config_text(text, "t.yaml"))


class Reach:
    """Ask the compiled policy of every node whether src may open a connection to dst."""

    def __init__(self, st: ClusterState) -> None:
        self.st = st
        self.nodes = {n.name: compile_node(st, n.name) for n in st.nodes}

    def ip(self, who: str) -> bytes:
        ns, name = who.split("/")
        return ip_bytes(self.st.pods[(ns, name)].ip)

    def node(self, who: str) -> str:
        ns, name = who.split("/")
        return self.st.pods[(ns, name)].node

    def verdicts(self, src: str, dst: str | bytes, proto: str | int, port: int):
        p = PROTOS[proto] if isinstance(proto, str) else proto
        s = self.ip(src)
        d = dst if isinstance(dst, bytes) else self.ip(dst)
        eg = self.nodes[self.node(src)].egress(s, d, p, port)
        ing = None
        if not isinstance(dst, bytes):
            ing = self.nodes[self.node(dst)].ingress(s, d, p, port)
        return eg, ing

    def __call__(self, src: str, dst: str | bytes, proto: str | int = "TCP",
                 port: int = 80) -> bool:
        if src == dst:
            return True  # over the pod's loopback: never leaves the pod
        return all(v is None or v.allowed for v in self.verdicts(src, dst, proto, port))

    def table(self, proto: str = "TCP", port: int = 80) -> dict[tuple[str, str], bool]:
        return {(s, d): self(s, d, proto, port) for s in ALL for d in ALL}


def expect(rule) -> dict[tuple[str, str], bool]:
    """A full truth table from a hand-written predicate over (src, dst)."""
    return {(s, d): s == d or bool(rule(s, d)) for s in ALL for d in ALL}


__all__ = ["ALL", "PROTO_TCP", "PROTO_UDP", "Reach", "expect", "state"]
