# ruff: noqa: E501  (a table of YAML snippets reads better unwrapped)
"""Generate tests/configs/bad/*.yaml (run from the repo root): the base config with one mistake each.

A case's replacement marks the line that must be reported with '#!'; the marker is removed and
the line number written into the first comment line with the expected field path.
"""
import pathlib

BASE = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata:
  name: test
spec:
  nodes:
    - name: node-1
    - name: node-2
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  nodeName: node-1
  containers:
    - name: web
      image: nginx:1.27
      ports:
        - containerPort: 80
          name: http
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
    - port: 80
      targetPort: http
"""

CASES = [
    # (file, what is wrong, old, new, expected path)
    ("yaml-syntax", "YAML syntax error: a tab-less but broken flow sequence",
     "    - name: node-2\n", "    - name: [node-2\n---  #!\n", ""),
    ("doc-not-mapping", "a document that is a list, not a mapping",
     "---\napiVersion: v1\nkind: Namespace\n", "---\n- just  #!\n- a list\n---\napiVersion: v1\nkind: Namespace\n", ""),
    ("missing-kind", "a document without kind",
     "apiVersion: v1\nkind: Namespace\nmetadata:\n", "apiVersion: v1  #!\nmetadata:\n", "kind"),
    ("unknown-kind", "kind Serivce is a typo",
     "kind: Service\n", "kind: Serivce  #!\n", "kind"),
    ("wrong-apiversion", "Pod under apps/v1",
     "apiVersion: v1\nkind: Pod\n", "apiVersion: apps/v1  #!\nkind: Pod\n", "apiVersion"),
    ("no-cluster", "no Cluster document at all",
     BASE.split("---\n")[0] + "---\n", "", ""),
    ("two-clusters", "two Cluster documents",
     "---\napiVersion: v1\nkind: Namespace\n",
     "---\napiVersion: emunet/v1alpha1\nkind: Cluster  #!\nmetadata:\n  name: again\nspec:\n"
     "  nodes:\n    - name: n1\n---\napiVersion: v1\nkind: Namespace\n", "kind"),
    ("unknown-field-typo", "containerport is a typo of containerPort",
     "        - containerPort: 80\n", "        - containerport: 80  #!\n",
     "spec.containers[0].ports[0].containerport"),
    ("unknown-spec-field", "a Cluster spec field that does not exist",
     "  nodes:\n    - name: node-1\n", "  podCIDR: 10.42.0.0/16  #!\n  nodes:\n    - name: node-1\n",
     "spec.podCIDR"),
    ("port-out-of-range", "Service targetPort 70000",
     "      targetPort: http\n", "      targetPort: 70000  #!\n", "spec.ports[0].targetPort"),
    ("port-as-string", "Service port is a quoted string",
     "    - port: 80\n", '    - port: "80"  #!\n', "spec.ports[0].port"),
    ("pod-name-invalid", "upper-case pod name",
     "  name: web\n  namespace: shop\n  labels:\n",
     "  name: Web_Server  #!\n  namespace: shop\n  labels:\n", "metadata.name"),
    ("service-name-digit", "a Service name must start with a letter (DNS-1035)",
     "  name: web\n  namespace: shop\nspec:\n  selector:\n",
     "  name: 1web  #!\n  namespace: shop\nspec:\n  selector:\n", "metadata.name"),
    ("node-name-invalid", "a node name with a dot is not a DNS-1123 label",
     "    - name: node-2\n", "    - name: node.2  #!\n", "spec.nodes[1].name"),
    ("label-value-invalid", "a label value with a space",
     "    app: web\nspec:\n  nodeName", "    app: web server  #!\nspec:\n  nodeName",
     "metadata.labels.app"),
    ("label-value-number", "a label value that YAML reads as a number",
     "    app: web\nspec:\n  nodeName", "    app: web\n    version: 1.0  #!\nspec:\n  nodeName",
     "metadata.labels.version"),
    ("label-key-invalid", "a label key with two slashes",
     "    app: web\nspec:\n  nodeName", "    example.com/a/b: x  #!\nspec:\n  nodeName",
     "metadata.labels.example.com/a/b"),
    ("duplicate-pod", "the same pod twice",
     "---\napiVersion: v1\nkind: Service\n",
     "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web  #!\n  namespace: shop\nspec:\n"
     "  containers:\n    - name: c\n      image: busybox\n---\napiVersion: v1\nkind: Service\n",
     "metadata.name"),
    ("undeclared-namespace", "a pod in a namespace no document declares",
     "  name: web\n  namespace: shop\n  labels:\n", "  name: web\n  namespace: shoop  #!\n  labels:\n",
     "metadata.namespace"),
    ("cidr-host-bits", "clusterCIDR with host bits set",
     "  nodes:\n    - name: node-1\n", "  clusterCIDR: 10.42.0.1/16  #!\n  nodes:\n    - name: node-1\n",
     "spec.clusterCIDR"),
    ("cidr-overlap", "serviceCIDR inside clusterCIDR",
     "  nodes:\n    - name: node-1\n",
     "  clusterCIDR: 10.42.0.0/16\n  serviceCIDR: 10.42.128.0/17  #!\n  clusterDNS: 10.42.128.10\n"
     "  nodes:\n    - name: node-1\n", "spec.serviceCIDR"),
    ("underlay-overlap", "underlay inside the cluster range",
     "  nodes:\n    - name: node-1\n",
     "  underlay:\n    cidr: 10.42.200.0/24  #!\n  nodes:\n    - name: node-1\n", "spec.underlay.cidr"),
    ("podcidr-outside", "a node podCIDR outside the clusterCIDR",
     "    - name: node-2\n", "    - name: node-2\n      podCIDR: 10.99.0.0/24  #!\n", "spec.nodes[1].podCIDR"),
    ("podcidr-overlap", "node-2's podCIDR is node-1's default /24",
     "    - name: node-2\n", "    - name: node-2\n      podCIDR: 10.42.1.0/24  #!\n",
     "spec.nodes[1].podCIDR"),
    ("too-many-nodes", "a /23 cluster range holds one node /24 (the .0 one is unused)",
     "  nodes:\n    - name: node-1\n    - name: node-2\n",
     "  clusterCIDR: 10.42.0.0/23\n  nodes:\n    - name: node-1\n    - name: node-2  #!\n",
     "spec.nodes[1]"),
    ("underlay-too-small", "a /28 underlay has addresses .11-.14 for nodes: not five",
     "  nodes:\n    - name: node-1\n    - name: node-2\n",
     "  underlay:\n    cidr: 192.168.1.0/28\n  nodes:\n    - name: node-1\n    - name: node-2\n"
     "    - name: node-3\n    - name: node-4\n    - name: node-5  #!\n", "spec.nodes[4]"),
    ("dns-outside", "clusterDNS outside the service range",
     "  nodes:\n    - name: node-1\n", "  clusterDNS: 10.42.0.10  #!\n  nodes:\n    - name: node-1\n",
     "spec.clusterDNS"),
    ("vni-out-of-range", "VNI is 24 bits",
     "  nodes:\n    - name: node-1\n", "  vxlan:\n    vni: 16777216  #!\n  nodes:\n    - name: node-1\n",
     "spec.vxlan.vni"),
    ("vxlan-port-zero", "VXLAN UDP port 0",
     "  nodes:\n    - name: node-1\n", "  vxlan:\n    port: 0  #!\n  nodes:\n    - name: node-1\n",
     "spec.vxlan.port"),
    ("mtu-too-small", "MTU below the IPv4 minimum",
     "  nodes:\n    - name: node-1\n", "  mtu: 500  #!\n  nodes:\n    - name: node-1\n", "spec.mtu"),
    ("mtu-no-vxlan-room", "MTU 1500 leaves no room for VXLAN's 50 bytes",
     "  nodes:\n    - name: node-1\n", "  mtu: 1500  #!\n  nodes:\n    - name: node-1\n", "spec.mtu"),
    ("unknown-node", "nodeName naming a node that does not exist",
     "  nodeName: node-1\n", "  nodeName: node-3  #!\n", "spec.nodeName"),
    ("dup-container-port", "the same containerPort twice",
     "          name: http\n", "          name: http\n        - containerPort: 80  #!\n",
     "spec.containers[0].ports[1].containerPort"),
    ("service-no-ports", "a ClusterIP Service without ports",
     "  ports:\n    - port: 80\n      targetPort: http\n", "  ports: []  #!\n", "spec.ports"),
    ("service-dup-port", "the same port/protocol twice",
     "      targetPort: http\n",
     "      targetPort: http\n      name: a\n    - port: 80  #!\n      name: b\n",
     "spec.ports[1].port"),
    ("named-targetport-missing", "no selected pod declares the named port",
     "      targetPort: http\n", "      targetPort: https  #!\n", "spec.ports[0].targetPort"),
    ("clusterip-outside", "clusterIP outside the service range",
     "  selector:\n    app: web\n", "  clusterIP: 10.99.0.5  #!\n  selector:\n    app: web\n",
     "spec.clusterIP"),
    ("clusterip-is-dns", "clusterIP equal to clusterDNS",
     "  selector:\n    app: web\n", "  clusterIP: 10.43.0.10  #!\n  selector:\n    app: web\n",
     "spec.clusterIP"),
    ("clusterip-twice", "two Services with the same clusterIP",
     "  selector:\n    app: web\n  ports:\n    - port: 80\n      targetPort: http\n",
     "  clusterIP: 10.43.0.50\n  selector:\n    app: web\n  ports:\n    - port: 80\n"
     "      targetPort: http\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web2\n"
     "  namespace: shop\nspec:\n  clusterIP: 10.43.0.50  #!\n  ports:\n    - port: 81\n",
     "spec.clusterIP"),
    ("service-nodeport-range", "a nodePort outside 30000-32767",
     "      targetPort: http\n", "      targetPort: http\n      nodePort: 8080  #!\n  type: NodePort\n",
     "spec.ports[0].nodePort"),
    ("service-nodeport-clusterip", "nodePort on a ClusterIP Service",
     "      targetPort: http\n", "      targetPort: http\n      nodePort: 30080  #!\n",
     "spec.ports[0].nodePort"),
    ("service-affinity-timeout", "sessionAffinityConfig timeoutSeconds above 86400",
     "  selector:\n    app: web\n", "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 90000  #!\n  selector:\n    app: web\n",
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds"),
    ("service-type-bad", "an unknown Service type",
     "  selector:\n    app: web\n", "  type: Clusterip  #!\n  selector:\n    app: web\n", "spec.type"),
    ("container-no-name", "a container without a name",
     "    - name: web\n      image: nginx:1.27\n", "    - image: nginx:1.27  #!\n",
     "spec.containers[0].name"),
    ("dup-container-name", "two containers named web",
     "          name: http\n",
     "          name: http\n    - name: web  #!\n      image: busybox\n", "spec.containers[1].name"),
    ("no-containers", "a pod with an empty container list",
     "  containers:\n    - name: web\n      image: nginx:1.27\n      ports:\n        - containerPort: 80\n"
     "          name: http\n", "  containers: []  #!\n", "spec.containers"),
    ("netns-collision", "pod shop-a/b and pod shop/a-b share netns emunet-shop-a-b",
     "---\napiVersion: v1\nkind: Service\n",
     "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop-a\n---\napiVersion: v1\n"
     "kind: Pod\nmetadata:\n  name: a-b\n  namespace: shop\nspec:\n  containers:\n    - name: c\n"
     "      image: busybox\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: b  #!\n"
     "  namespace: shop-a\nspec:\n  containers:\n    - name: c\n      image: busybox\n"
     "---\napiVersion: v1\nkind: Service\n", "metadata.name"),
    ("node-full", "a /30 podCIDR holds one pod (gateway .1): two pinned pods",
     "    - name: node-2\n",
     "    - name: node-2\n      podCIDR: 10.42.9.0/30\n", "spec.nodeName"),
    ("duplicate-yaml-key", "a key written twice in one mapping",
     "  nodeName: node-1\n", "  nodeName: node-1\n  nodeName: node-2  #!\n", ""),
    ("hostnetwork", "hostNetwork pods are not supported",
     "  nodeName: node-1\n", "  nodeName: node-1\n  hostNetwork: true  #!\n", "spec.hostNetwork"),
    ("quoted-targetport", "a quoted number is a port name in Kubernetes",
     "      targetPort: http\n", '      targetPort: "8080"  #!\n', "spec.ports[0].targetPort"),
    ("protocol-lowercase", "protocol must be TCP, UDP or SCTP",
     "    - port: 80\n", "    - port: 80\n      protocol: tcp  #!\n", "spec.ports[0].protocol"),
    ("multi-port-no-name", "several Service ports need names",
     "    - port: 80\n      targetPort: http\n",
     "    - port: 80  #!\n      targetPort: http\n    - port: 443\n      name: https\n",
     "spec.ports[0].name"),
    ("networkpolicy-no-name", "an unimplemented kind still needs metadata.name",
     "---\napiVersion: v1\nkind: Service\n",
     "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:  #!\n"
     "  namespace: shop\nspec:\n  podSelector: {}\n---\napiVersion: v1\nkind: Service\n",
     "metadata.name"),
    ("image-missing", "a container without an image",
     "      image: nginx:1.27\n", "", "spec.containers[0].image"),
    ("kube-dns-reserved", "kube-system/kube-dns is emunet's own",
     "  name: web\n  namespace: shop\nspec:\n  selector:\n",
     "  name: kube-dns  #!\n  namespace: kube-system\nspec:\n  selector:\n", "metadata.name"),
]


def main() -> None:
    out = pathlib.Path("tests/configs/bad")
    for old in out.glob("*.yaml"):
        old.unlink()
    for name, what, old, new, path in CASES:
        assert BASE.count(old) >= 1, name
        text = BASE.replace(old, new, 1)
        lines = text.split("\n")
        if name == "image-missing":
            marked = [i for i, ln in enumerate(lines) if ln == "    - name: web"]
            lines[marked[0]] += "  #!"
        if name == "node-full":
            second = BASE.split("---\n")[2].replace("nodeName: node-1", "nodeName: node-2  #!")
            second = second.replace("name: web\n", "name: web2\n", 1)
            text = BASE.replace(old, new, 1).replace("nodeName: node-1", "nodeName: node-2")
            text = text + "---\n" + second
            lines = text.split("\n")
        marked = [i for i, ln in enumerate(lines) if ln.endswith("  #!")]
        if name == "no-cluster":  # reported at the top of the file
            line = 1
        else:
            assert len(marked) == 1, (name, marked)
            line = marked[0] + 1 + 2  # two header comment lines are added above
            lines[marked[0]] = lines[marked[0]][:-4]
        header = f"# expect: {line} {path or '-'}\n# {what}\n"
        (out / f"{name}.yaml").write_text(header + "\n".join(lines))
    print(len(CASES), "files")


main()
