"""A pod's resolv.conf and hosts file, as the kubelet writes them (emunet.host.podfiles, what
`host.add_pod` puts in /etc/netns/<pod netns>/). Pure: rendered from a planned state."""

from __future__ import annotations

from emunet import model
from emunet.host import podfiles
from emunet.state.cluster import ClusterState
from emunet.state.plan import plan


def _config(nodes: int) -> model.Config:
    """The host-layer tests' cluster (tests/integration/test_host.py): blog/frontend with a
    hostname and subdomain, blog/backend, blog/db on the last node."""
    return model.Config(
        cluster=model.ClusterSpec(nodes=tuple(model.NodeSpec(f"node-{i}")
                                              for i in range(1, nodes + 1))),
        namespaces=(model.Namespace("blog"),),
        pods=(model.Pod("blog", "frontend", node_name="node-1", hostname="web",
                        subdomain="site"),
              model.Pod("blog", "backend", node_name="node-1"),
              model.Pod("blog", "db", node_name=f"node-{nodes}")),
    )


def pod(state: ClusterState, name: str, ns: str = "blog"):
    return state.pods[(ns, name)]


def test_resolv_conf_is_clusterfirst():
    st = plan(_config(2))
    assert podfiles.resolv_conf(st, pod(st, "db")) == (
        "search blog.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.43.0.10\noptions ndots:5\n")


def test_hosts_file_as_kubelet_writes_it():
    st = plan(_config(2))
    lines = podfiles.hosts_file(st, pod(st, "db")).splitlines()
    assert lines[1:3] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    assert lines[-1] == f"{pod(st, 'db').ip}\tdb"
    fe = pod(st, "frontend")
    assert podfiles.hosts_file(st, fe).splitlines()[-1] == (
        f"{fe.ip}\tweb.site.blog.svc.cluster.local\tweb")
