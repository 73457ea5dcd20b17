"""The CoreDNS-like responder behind the kube-dns ClusterIP (see emunet.dns.server)."""
