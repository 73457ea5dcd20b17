"""restartPolicy and pod status: what follows a container's exit, the phase (the kubelet's
getPhase), the STATUS word (kubectl's printPod) and the API's containerStatuses; the config
fields (restartPolicy, stdin, stdinOnce, tty) and their validation; the state file keeps them."""

from __future__ import annotations

import time

import pytest

from emunet.api import objects
from emunet.api.tables import table
from emunet.config import ConfigError, load_config_text
from emunet.state import codec, podphase
from emunet.state.plan import plan

RUN = {"state": "running", "startedAt": 1.0}
OK = {"state": "terminated", "exitCode": 0, "reason": "Completed"}
BAD = {"state": "terminated", "exitCode": 3, "reason": "Error"}
BACKOFF = {"state": "waiting", "reason": "CrashLoopBackOff",
           "last": {"exitCode": 1, "reason": "Error"}}
CREATING = {"state": "waiting", "reason": "ContainerCreating"}


def test_exit_codes_and_reasons():
    assert podphase.exit_code(3) == 3 and podphase.exit_code(-9) == 137  # SIGKILL: 128 + 9
    assert podphase.reason(0) == "Completed" and podphase.reason(137) == "Error"


@pytest.mark.parametrize("policy,code,restart", [
    ("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False),
    ("OnFailure", 2, True), ("Never", 0, False), ("Never", 2, False)])
def test_restart_by_policy(policy, code, restart):
    assert podphase.restarts_after(policy, code) is restart


@pytest.mark.parametrize("policy,states,phase", [
    ("Never", [CREATING], "Pending"),
    ("Never", [None], "Pending"),
    ("Never", [RUN], "Running"),
    ("Never", [OK], "Succeeded"),
    ("Never", [BAD], "Failed"),
    ("Never", [OK, BAD], "Failed"),
    ("Never", [OK, RUN], "Running"),  # one done, one still serving
    ("OnFailure", [OK], "Succeeded"),
    ("OnFailure", [BACKOFF], "Running"),  # failed: it will run again
    ("Always", [BACKOFF], "Running"),
    ("Always", [RUN, BACKOFF], "Running"),
])
def test_phase(policy, states, phase):
    assert podphase.phase(policy, states) == phase


def test_status_words_as_kubectl_prints_them():
    assert podphase.status_word("Succeeded", [OK], False) == "Completed"
    assert podphase.status_word("Failed", [BAD], False) == "Error"
    assert podphase.status_word("Running", [BACKOFF], False) == "CrashLoopBackOff"
    assert podphase.status_word("Running", [RUN], True) == "Running"
    assert podphase.status_word("Running", [OK, RUN], True) == "Running"
    # emunet has no per-container readiness: a running container counts only in a Ready pod
    assert podphase.status_word("Running", [OK, RUN], False) == "Completed"
    assert podphase.status_word("Failed", [BAD], False, terminating=True) == "Terminating"
    # the first container's reason wins (printPod reads them last to first)
    assert podphase.status_word("Failed", [BAD, OK], False) == "Error"


CONFIG = """\
apiVersion: emunet/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  nodes: [{name: node-1}]
---
apiVersion: v1
kind: Pod
metadata: {name: once, namespace: default}
spec:
  restartPolicy: Never
  containers:
    - {name: c, image: busybox, args: [sh, -c, "exit 3"], stdin: true, stdinOnce: true,
       tty: true}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  containers: [{name: web, image: nginx}]
"""


def test_config_fields_reach_the_model_the_state_and_the_api():
    st = plan(load_config_text(CONFIG, "t.yaml"))
    st = codec.from_json(codec.to_json(st))  # the state file keeps them
    ps = st.pods[("default", "once")]
    c = ps.pod.containers[0]
    assert ps.pod.restart_policy == "Never" and (c.stdin, c.stdin_once, c.tty) == (
        True, True, True)
    assert st.pods[("default", "web")].pod.restart_policy == "Always"
    st.stamp(time.time())
    ps.containers = {"c": {"state": "terminated", "exitCode": 3, "reason": "Error",
                           "startedAt": 100.0, "finishedAt": 101.0}}
    pod = objects.pod(st, ps)
    assert pod["spec"]["restartPolicy"] == "Never"
    spec = pod["spec"]["containers"][0]
    assert (spec["stdin"], spec["stdinOnce"], spec["tty"]) == (True, True, True)
    assert pod["status"]["phase"] == "Failed"
    cs = pod["status"]["containerStatuses"][0]
    assert cs["state"]["terminated"]["exitCode"] == 3 and cs["ready"] is False
    assert cs["state"]["terminated"]["reason"] == "Error"
    ready = next(x for x in pod["status"]["conditions"] if x["type"] == "Ready")
    assert ready == {**ready, "status": "False", "reason": "PodCompleted"}
    row = table("pods", [pod], "1")["rows"][0]["cells"]
    assert row[1:4] == ["0/1", "Error", "0"]
    assert "stdin" not in objects.pod(st, st.pods[("default", "web")])["spec"]["containers"][0]


def test_a_restarting_container_has_its_last_state():
    st = plan(load_config_text(CONFIG, "t.yaml"))
    st.stamp(time.time())
    ps = st.pods[("default", "once")]
    ps.containers = {"c": {**BACKOFF, "last": {**BACKOFF["last"], "startedAt": 1.0,
                                                "finishedAt": 2.0}}}
    cs = objects.pod(st, ps)["status"]["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 1


@pytest.mark.parametrize("snippet,field,words", [
    ("restartPolicy: Sometimes\n  containers: [{name: c, image: x, command: [sh]}]",
     "spec.restartPolicy", "Sometimes"),
    ("containers: [{name: c, image: x, command: [sh], stdin: yes please}]",
     "spec.containers[0].stdin", "true or false"),
    ("containers: [{name: c, image: busybox, stdin: true}]",
     "spec.containers[0].stdin", "need a command"),
])
def test_bad_pod_fields_name_the_field(snippet, field, words):
    text = CONFIG.split("---\napiVersion: v1\nkind: Pod")[0] + (
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec:\n  "
        + snippet + "\n")
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "t.yaml")
    assert field in str(e.value) and words in str(e.value)


def test_a_deployment_template_must_restart_always():
    text = CONFIG.split("---\napiVersion: v1\nkind: Pod")[0] + """\
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: default}
spec:
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: x}]
"""
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "t.yaml")
    assert "spec.template.spec.restartPolicy" in str(e.value)
    assert 'supported values: "Always"' in str(e.value)
