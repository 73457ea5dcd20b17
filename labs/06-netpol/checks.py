"""Lab 6 checks: the story's policy, the policy named in the flow log, default-deny egress + DNS.

Everything is measured the way the learner sees it: the policies in the cluster state, DNS
queries and connections sent from inside the pods through the datapath, and the flows the
node agents recorded (the same records `emunet observe` prints). A dropped connection is proved
by a timeout, never by a refusal: NetworkPolicy drops silently (a RST would mean the packet
reached a pod that had nothing listening).
"""

from __future__ import annotations

from emunet import naming
from emunet.labs.checks import normalise
from emunet.observe import flowlog, hubble

NS = "blog-website"
POLICY = (NS, "monospaced-access")
SERVICE_FQDN = f"monospaced.{NS}.svc.cluster.local"
CURL_TIMEOUT = 28  # curl: "Operation timed out"
CURL_REFUSED = 7  # curl: "Couldn't connect" (a RST came back)


def _pods(ctx) -> list:
    return sorted((p for p in ctx.state().pods.values() if p.pod.namespace == NS),
                  key=lambda p: p.pod.name)


def pods_in_namespace(ctx) -> str | None:
    """Without a policy every pod reaches monospaced-test's 3000, the server itself included."""
    pods = _pods(ctx)
    return str(len(pods)) if pods else None


def story_policy_applied(ctx) -> str | None:
    st = ctx.state()
    pol = st.policies.get(POLICY)
    if pol is None:
        return f"no NetworkPolicy {POLICY[1]} in {NS}: `kubectl apply -f` prints " \
               "`networkpolicy.networking.k8s.io/monospaced-access created` when it is in"
    server = st.pods.get((NS, "monospaced-test"))
    if server is not None and not pol.pod_selector.matches(server.pod.labels):
        return f"{POLICY[1]}'s podSelector does not select monospaced-test (app=monospaced)"
    if "Ingress" not in pol.policy_types:
        return f"{POLICY[1]} does not isolate its pods for Ingress"
    return None


def _dropped_by(ctx) -> set[str]:
    """Every policy named in a recorded drop of a flow from intruder (ingress or egress)."""
    d = hubble.Directory(ctx.state())
    names: set[str] = set()
    for rec in flowlog.read_all(naming.run_dir()):
        for f in hubble.flows(rec, d):
            src = f.get("source", {})
            if f.get("verdict") != "DROPPED" or (src.get("namespace"), src.get("pod_name")) \
                    != (NS, "intruder"):
                continue
            for key, refs in f.items():
                if key.endswith("_denied_by"):
                    for r in refs:
                        names |= {r["name"], f"{r['namespace']}/{r['name']}"}
    return names


def dropped_by_answer(ctx) -> str | None:
    names = _dropped_by(ctx)
    if not names:
        return "no connection from intruder has been dropped yet: apply the policy (task 2), " \
               "then curl from intruder"
    given = ctx.answer() or ""
    if normalise(given) not in {normalise(n) for n in names}:
        return f"{given!r} is not a policy that dropped a flow from intruder"
    return None


def namespace_egress_isolated(ctx) -> str | None:
    """Default deny egress: every pod of the namespace is selected by an Egress policy."""
    policies = [p for p in ctx.state().policies.values()
                if p.namespace == NS and "Egress" in p.policy_types]
    open_pods = [p.pod.name for p in _pods(ctx)
                 if not any(pol.pod_selector.matches(p.pod.labels) for pol in policies)]
    if open_pods:
        return f"egress is not denied by default in {NS}: no Egress policy selects " \
               f"{', '.join(open_pods)} (apply labs/06-netpol/default-deny-egress.yaml)"
    return None


def dns_answers_from_every_pod(ctx) -> str | None:
    """A UDP query from every pod, and a TCP one from frontend-client, both through kube-dns."""
    st = ctx.state()
    svc = st.services.get((NS, "monospaced"))
    if svc is None or svc.cluster_ip is None:
        return f"Service {NS}/monospaced is gone"
    silent = [p.pod.name for p in _pods(ctx)
              if ctx.resolve(NS, p.pod.name, SERVICE_FQDN) != svc.cluster_ip]
    if silent:
        return f"DNS over UDP gets no answer from {', '.join(silent)}: egress to kube-dns on " \
               "UDP 53 is still denied"
    client = ctx.pod(NS, "frontend-client")
    tcp = ctx.run(client.netns, "dig", "+tcp", "+short", "+tries=1", "+time=1",
                  f"@{st.cluster.cluster_dns}", SERVICE_FQDN)
    if svc.cluster_ip not in tcp.stdout.split():
        return "DNS over TCP (`dig +tcp`) gets no answer from frontend-client: allow TCP 53 " \
               "to kube-dns too"
    return None


def other_egress_denied(ctx) -> str | None:
    """Egress that is not DNS stays denied: a ping between pods, another port on CoreDNS."""
    client = ctx.pod(NS, "frontend-client")
    if client is None:
        return f"pod {NS}/frontend-client is gone"
    ping = ctx.exec(NS, "monospaced-test", "ping", "-c1", "-W1", client.ip)
    if ping.returncode == 0:
        return "monospaced-test can still ping frontend-client: egress is open beyond DNS"
    dns_pods = [p for p in ctx.state().pods.values() if p.pod.labels.get("k8s-app") == "kube-dns"]
    if not dns_pods:
        return "the CoreDNS pod is gone"
    curl = ctx.exec(NS, "intruder", "curl", "-sS", "-m", "1", f"http://{dns_pods[0].ip}:8080")
    if curl.returncode == CURL_REFUSED:
        return "intruder reaches the CoreDNS pod on port 8080 (refused, not dropped): allow " \
               "only port 53 to kube-dns"
    if curl.returncode != CURL_TIMEOUT:
        return f"intruder's curl to CoreDNS port 8080 exited {curl.returncode}, expected a " \
               "timeout (28)"
    return None
