"""Kubernetes v1 Namespace, Pod and Service documents to `emunet.model` objects.

Only the fields emunet acts on are mapped; other real Kubernetes fields are accepted and
ignored (tables below) so that the same file still applies to a real cluster, while anything
else is an unknown-field error, as with `kubectl apply --validate=strict`. Field rules follow
the API server's validation (pkg/apis/core/validation): names, ports, protocols, duplicates.
Checks that span several objects live in `validate.py`.
"""

from __future__ import annotations

from emunet import model
from emunet.config import names
from emunet.config.fields import Check, Obj
from emunet.config.probespec import parse_probe
from emunet.config.svcfamily import cluster_ips as _cluster_ip
from emunet.config.svcfamily import families as _families
from emunet.model import ipfamily

PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec")
TOP_IGNORED = ("status",)
META_FIELDS = ("name", "namespace", "labels", "annotations")
META_IGNORED = ("uid", "resourceVersion", "generation", "creationTimestamp",
                "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers",
                "ownerReferences", "managedFields", "selfLink", "generateName")
POD_SPEC_FIELDS = ("containers", "nodeName", "hostname", "subdomain", "restartPolicy",
                   "hostNetwork", "securityContext", "shareProcessNamespace")
POD_SPEC_IGNORED = (
    "initContainers", "ephemeralContainers", "volumes", "serviceAccountName", "serviceAccount",
    "automountServiceAccountToken", "nodeSelector", "affinity", "tolerations",
    "priorityClassName", "priority", "schedulerName", "dnsPolicy", "dnsConfig",
    "terminationGracePeriodSeconds", "activeDeadlineSeconds",
    "imagePullSecrets", "enableServiceLinks", "runtimeClassName",
    "topologySpreadConstraints", "hostAliases", "readinessGates", "preemptionPolicy",
    "overhead", "os", "setHostnameAsFQDN", "resourceClaims", "schedulingGates", "hostUsers",
    "hostPID", "hostIPC", "resources")
CONTAINER_FIELDS = ("name", "image", "command", "args", "ports", "env", "readinessProbe",
                    "livenessProbe", "startupProbe", "securityContext", "stdin", "stdinOnce",
                    "tty")
# securityContext: runAsUser/runAsGroup are honoured; the rest is valid Kubernetes, not acted on
SECURITY_FIELDS = ("runAsUser", "runAsGroup")
SECURITY_IGNORED = (
    "runAsNonRoot", "fsGroup", "fsGroupChangePolicy", "supplementalGroups",
    "supplementalGroupsPolicy", "seLinuxOptions", "seLinuxChangePolicy", "seccompProfile",
    "appArmorProfile", "sysctls", "windowsOptions", "capabilities", "privileged",
    "allowPrivilegeEscalation", "readOnlyRootFilesystem", "procMount")
CONTAINER_IGNORED = (
    "resources", "imagePullPolicy",
    "volumeMounts", "volumeDevices", "workingDir", "envFrom", "lifecycle",
    "terminationMessagePath", "terminationMessagePolicy", "resizePolicy", "restartPolicy")
CONTAINER_PORT_FIELDS = ("containerPort", "protocol", "name")
CONTAINER_PORT_IGNORED = ("hostPort", "hostIP")
SERVICE_SPEC_FIELDS = ("selector", "ports", "type", "clusterIP", "clusterIPs", "externalName",
                       "sessionAffinity", "sessionAffinityConfig", "ipFamilies",
                       "ipFamilyPolicy")
SERVICE_SPEC_IGNORED = (
    "internalTrafficPolicy",
    "externalTrafficPolicy", "publishNotReadyAddresses", "externalIPs", "loadBalancerIP",
    "loadBalancerSourceRanges", "loadBalancerClass", "allocateLoadBalancerNodePorts",
    "healthCheckNodePort", "trafficDistribution")
SERVICE_PORT_FIELDS = ("port", "targetPort", "protocol", "name", "nodePort")
SERVICE_PORT_IGNORED = ("appProtocol",)


def loc(doc: Obj) -> model.Loc:
    return model.Loc(doc.col.file, doc.line)


def parse_metadata(doc: Obj, namespaced: bool,
                   name_check: Check) -> tuple[str | None, str, dict[str, str]]:
    """(name, namespace, labels); name None when missing or invalid (already reported)."""
    meta = doc.map("metadata", required=True)
    if meta is None:
        return None, "default", {}
    meta.check_fields(META_FIELDS, META_IGNORED, what="metadata")
    name = meta.str("name", required=True, check=name_check)
    if name is None and meta.has("generateName") and not meta.has("name"):
        meta.error("generateName", "generateName is not supported",
                   "emunet needs fixed names: set metadata.name")
    namespace = "default"
    if namespaced:
        namespace = meta.str("namespace", check=names.dns1035_label) or "default"
    elif meta.has("namespace"):
        doc.col.warn(meta.line_of("namespace"), f"metadata.namespace of cluster-scoped "
                     f"{doc.raw('kind')} {name} is ignored")
    labels = meta.str_map("labels", names.label_key, names.label_value) or {}
    meta.str_map("annotations", names.label_key)
    return name, namespace, labels


def parse_namespace(doc: Obj) -> model.Namespace | None:
    doc.check_fields(TOP_FIELDS, TOP_IGNORED, what="Namespace")
    name, _, labels = parse_metadata(doc, namespaced=False, name_check=names.dns1035_label)
    spec = doc.map("spec")
    if spec is not None:
        spec.check_fields((), ("finalizers",), what="Namespace spec")
    return None if name is None else model.Namespace(name, labels, loc(doc))


def parse_pod(doc: Obj) -> model.Pod | None:
    doc.check_fields(TOP_FIELDS, TOP_IGNORED, what="Pod")
    errors_before = len(doc.col.errors)
    name, namespace, labels = parse_metadata(doc, True, names.dns1123_subdomain)
    spec = doc.map("spec", required=True)
    if spec is None:
        return None
    fields = parse_pod_spec(spec)
    if len(doc.col.errors) > errors_before or name is None:
        return None
    return model.Pod(namespace=namespace, name=name, labels=labels, loc=loc(doc), **fields)


def parse_pod_spec(spec: Obj) -> dict:
    """A PodSpec (of a Pod, or of a Deployment's template) as model.Pod keyword arguments."""
    spec.check_fields(POD_SPEC_FIELDS, POD_SPEC_IGNORED, what="Pod spec")
    if spec.bool("hostNetwork"):
        spec.error("hostNetwork", "hostNetwork pods are not supported",
                   "every emunet pod gets its own network namespace; remove hostNetwork")
    policy = spec.str("restartPolicy", choices=("Always", "OnFailure", "Never")) or "Always"
    node = spec.str("nodeName", check=names.dns1123_subdomain)
    hostname = spec.str("hostname", check=names.dns1123_label)
    subdomain = spec.str("subdomain", check=names.dns1123_label)
    pod_user, pod_group = _security(spec)
    items = spec.objs("containers", required=True)
    if spec.has("containers") and isinstance(spec.raw("containers"), list) and not items \
            and not spec.raw("containers"):
        spec.error("containers", "a pod needs at least one container")
    share = spec.bool("shareProcessNamespace")
    return {"containers": _containers(items, pod_user, pod_group), "node_name": node,
            "hostname": hostname, "subdomain": subdomain, "share_process_namespace": bool(share),
            "restart_policy": policy}


def _security(obj: Obj) -> tuple[int | None, int | None]:
    """securityContext.runAsUser / runAsGroup of a pod spec or a container (Linux ids)."""
    sc = obj.map("securityContext")
    if sc is None:
        return None, None
    sc.check_fields(SECURITY_FIELDS, SECURITY_IGNORED, what="securityContext")
    why = "a Linux user or group id (Kubernetes allows 0-2147483647)"
    return (sc.int("runAsUser", lo=0, hi=2**31 - 1, why=why),
            sc.int("runAsGroup", lo=0, hi=2**31 - 1, why=why))


def _containers(items: list[Obj], pod_user: int | None = None,
                pod_group: int | None = None) -> tuple[model.Container, ...]:
    out = []
    names_seen: dict[str, int] = {}
    ports_seen: dict[tuple[int, str], int] = {}
    port_names: dict[str, int] = {}
    for c in items:
        c.check_fields(CONTAINER_FIELDS, CONTAINER_IGNORED, what="container")
        name = c.str("name", required=True, check=names.dns1123_label)
        if name is not None and name in names_seen:
            c.error("name", f"duplicate container name {name!r} (first on line "
                    f"{names_seen[name]})", "container names must be unique within a pod")
        elif name is not None:
            names_seen[name] = c.line_of("name")
        image = c.str("image", required=True) or ""
        command, args = c.str_list("command"), c.str_list("args")
        ports = []
        for p in c.objs("ports"):
            p.check_fields(CONTAINER_PORT_FIELDS, CONTAINER_PORT_IGNORED, what="containerPort")
            number = p.int("containerPort", required=True, lo=1, hi=65535)
            protocol = p.str("protocol", choices=PROTOCOLS) or "TCP"
            pname = p.str("name", check=names.port_name)
            if number is not None:
                key = (number, protocol)
                if key in ports_seen:
                    p.error("containerPort", f"duplicate containerPort {number}/{protocol} "
                            f"(first on line {ports_seen[key]})")
                else:
                    ports_seen[key] = p.line_of("containerPort")
            if pname is not None and pname in port_names:
                p.error("name", f"duplicate port name {pname!r} (first on line "
                        f"{port_names[pname]})", "port names must be unique within a pod")
            elif pname is not None:
                port_names[pname] = p.line_of("name")
            if number is not None:
                ports.append(model.ContainerPort(number, protocol, pname))
        user, group = _security(c)  # the container's settings win over the pod's
        env = []
        for e in c.objs("env"):
            e.check_fields(("name", "value"), ("valueFrom",), what="env")
            ename = e.str("name", required=True, check=names.env_name)
            value = e.str("value") or ""
            if ename is not None:
                env.append((ename, value))
        # stdin/stdinOnce/tty: what the runtime holds for `kubectl attach` (emunet.cluster.stdio);
        # a container with neither command nor args is a built-in server, which reads no stdin
        stdin, once, tty = c.bool("stdin"), c.bool("stdinOnce"), c.bool("tty")
        if (stdin or tty) and not (command or args):
            c.error("stdin" if stdin else "tty", "stdin/tty need a command: emunet runs no "
                    "image, a container without command or args is its built-in server",
                    'add command (e.g. ["sh"]) or args, or remove stdin/tty')
        out.append(model.Container(name=name or "", image=image, command=command, args=args,
                                   ports=tuple(ports), env=tuple(env),
                                   readiness_probe=parse_probe(c, "readinessProbe"),
                                   liveness_probe=parse_probe(c, "livenessProbe"),
                                   startup_probe=parse_probe(c, "startupProbe"),
                                   run_as_user=pod_user if user is None else user,
                                   run_as_group=pod_group if group is None else group,
                                   stdin=bool(stdin), stdin_once=bool(once), tty=bool(tty)))
    return tuple(out)


def parse_service(doc: Obj) -> model.Service | None:
    doc.check_fields(TOP_FIELDS, TOP_IGNORED, what="Service")
    errors_before = len(doc.col.errors)
    name, namespace, labels = parse_metadata(doc, True, names.dns1035_label)
    spec = doc.map("spec", required=True)
    if spec is None:
        return None
    spec.check_fields(SERVICE_SPEC_FIELDS, SERVICE_SPEC_IGNORED, what="Service spec")
    stype = spec.str("type", choices=SERVICE_TYPES) or "ClusterIP"
    affinity, timeout = service_affinity(spec)
    external = _external_name(spec, stype)
    cluster_ip, cluster_ips = _cluster_ip(spec)
    families, policy = _families(spec, stype)
    if stype != "ExternalName":
        given = cluster_ips or ((cluster_ip,) if cluster_ip else ())
        for path, msg in ipfamily.check_fields(given, cluster_ip, families):
            key = path.split(".")[1].split("[")[0]
            spec.col.error(spec.line_of(key if spec.has(key) else "clusterIP"), path, msg)
    if cluster_ip == "None" and stype in ("NodePort", "LoadBalancer"):
        # API server: "may not be set to 'None' for LoadBalancer or NodePort services"
        spec.error("clusterIP", f"a {stype} Service cannot be headless",
                   "remove clusterIP: None, or use type ClusterIP")
    if external is not None and cluster_ip is not None:
        # API server: clusterIP "may not be set for ExternalName services" (not even None).
        spec.error("clusterIP", "clusterIP may not be set for an ExternalName Service",
                   "remove clusterIP")
    selector = spec.str_map("selector", names.label_key, names.label_value) or None
    # ExternalName Services need no ports (the DNS CNAME is all they are).
    ports = _service_ports(spec, headless=cluster_ip == "None" or stype == "ExternalName",
                           node_ports=stype in ("NodePort", "LoadBalancer"))
    if len(doc.col.errors) > errors_before or name is None:
        return None
    return model.Service(namespace=namespace, name=name, ports=ports, selector=selector,
                         type=stype, cluster_ip=cluster_ip, external_name=external,
                         labels=labels, loc=loc(doc), session_affinity=affinity,
                         affinity_timeout=timeout, cluster_ips=cluster_ips,
                         ip_families=families, ip_family_policy=policy)


def service_affinity(spec: Obj) -> tuple[str, int]:
    """spec.sessionAffinity and sessionAffinityConfig.clientIP.timeoutSeconds, checked as the
    API server does (0 < timeoutSeconds <= 86400, default 10800; only with ClientIP)."""
    affinity = spec.str("sessionAffinity", choices=("None", "ClientIP")) or "None"
    timeout = model.DEFAULT_AFFINITY_TIMEOUT
    cfg = spec.map("sessionAffinityConfig")
    if cfg is None:
        return affinity, timeout
    cfg.check_fields(("clientIP",), what="sessionAffinityConfig")
    if affinity != "ClientIP":
        spec.error("sessionAffinityConfig", "sessionAffinityConfig needs sessionAffinity: "
                   "ClientIP", "add sessionAffinity: ClientIP, or remove the config")
    client = cfg.map("clientIP")
    if client is not None:
        client.check_fields(("timeoutSeconds",), what="clientIP")
        timeout = client.int("timeoutSeconds", lo=1, hi=86400) or timeout
    return affinity, timeout


def _external_name(spec: Obj, stype: str) -> str | None:
    """spec.externalName: required for, and only for, type ExternalName; validated as the API
    server does (a DNS-1123 subdomain once a trailing dot is trimmed)."""
    if stype != "ExternalName":
        if spec.has("externalName"):
            spec.error("externalName", "externalName is only for type ExternalName",
                       "add type: ExternalName, or remove externalName")
        return None
    value = spec.str("externalName", required=True)
    if value is None:
        return None
    bad = names.dns1123_subdomain(value.removesuffix("."))
    if bad:
        spec.error("externalName", f"{value!r} {bad}", "write a DNS name like db.example.com")
        return None
    return value


def _service_ports(spec: Obj, headless: bool, node_ports: bool = False
                   ) -> tuple[model.ServicePort, ...]:
    items = spec.objs("ports")
    if not items and not spec.has("ports") and not headless:
        spec.error(None, "a Service needs at least one port",
                   "add spec.ports (only headless Services may have none)")
    elif not items and isinstance(spec.raw("ports"), list) and not headless:
        spec.error("ports", "a Service needs at least one port")
    out = []
    seen: dict[tuple[int, str], int] = {}
    seen_np: dict[tuple[int, str], int] = {}
    port_names: dict[str, int] = {}
    for p in items:
        p.check_fields(SERVICE_PORT_FIELDS, SERVICE_PORT_IGNORED, what="Service port")
        port = p.int("port", required=True, lo=1, hi=65535)
        protocol = p.str("protocol", choices=PROTOCOLS) or "TCP"
        pname = p.str("name", check=names.dns1123_label)
        if pname is None and len(items) > 1 and not p.has("name"):
            p.col.error(p.line, p.sub("name"), "required when a Service has more than one "
                        "port", 'add e.g. name: http')
        elif pname is not None and pname in port_names:
            p.error("name", f"duplicate port name {pname!r} (first on line "
                    f"{port_names[pname]})")
        elif pname is not None:
            port_names[pname] = p.line_of("name")
        node_port = _node_port(p, node_ports, seen_np)
        target = _target_port(p)
        if port is None:
            continue
        if (port, protocol) in seen:
            p.error("port", f"duplicate port {port}/{protocol} (first on line "
                    f"{seen[(port, protocol)]})")
        seen[(port, protocol)] = p.line_of("port")
        out.append(model.ServicePort(port=port, target_port=port if target is None else target,
                                     protocol=protocol, name=pname, node_port=node_port))
    return tuple(out)


def _node_port(p: Obj, allowed: bool, seen: dict[tuple[int, str], int]) -> int | None:
    """ports[].nodePort: only for NodePort/LoadBalancer, inside the node port range, and not
    twice per protocol in one Service (other Services are checked by config.validate)."""
    if not p.has("nodePort"):
        return None
    if not allowed:
        p.error("nodePort", "nodePort needs type NodePort or LoadBalancer",
                "add type: NodePort, or remove nodePort")
        return None
    lo, hi = model.NODE_PORT_RANGE
    value = p.int("nodePort", lo=lo, hi=hi,
                  why=f"the node port range is {lo}-{hi} (--service-node-port-range)")
    if value is None:
        return None
    proto = p.str("protocol") or "TCP"
    if (value, proto) in seen:
        p.error("nodePort", f"duplicate nodePort {value}/{proto} (first on line "
                f"{seen[(value, proto)]})")
    seen[(value, proto)] = p.line_of("nodePort")
    return value


def _target_port(p: Obj) -> int | str | None:
    """IntOrString: a number 1-65535 or an IANA port name (RFC 6335); default: `port`."""
    v = p.raw("targetPort")
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        if 1 <= v <= 65535:
            return v
        p.error("targetPort", f"must be 1-65535 or a port name, got {v}", "fix the value")
        return None
    if isinstance(v, str):
        return port_name_ref(p, "targetPort", v)
    p.error("targetPort", f"must be 1-65535 or a port name, got {v!r}")
    return None


def port_name_ref(p: Obj, field: str, v: str) -> str | None:
    """A port given by name (a Service targetPort, a NetworkPolicy port): an IANA_SVC_NAME, and
    never a quoted number, which Kubernetes would read as a name that matches nothing."""
    if v.isdigit():
        p.error(field, f"{v!r} is a quoted number, which Kubernetes reads as a port name",
                f"write {field}: {v} without quotes")
        return None
    bad = names.port_name(v)
    if bad:
        p.error(field, f"port name {v!r} {bad}")
        return None
    return v
