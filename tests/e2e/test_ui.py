"""`emunet ui` in a real browser: Debian's headless Chromium, driven by Selenium through the
system chromedriver (no Selenium Manager download), loads the page from a running cluster.

What a user must see (issue 18): the story's 2 nodes and 4 pods with their IPs; a curl from
intruder appearing within 2 s as a red, dropped flow naming `monospaced-access`; a trace from
frontend-client to monospaced drawn with its VXLAN hop and the DNAT backend, each hop's headers
decoded, its pcap downloadable; a Deployment scaled up appearing live. No console errors.
The screenshot it takes goes to the run's scratch dir; with EMUNET_UI_SCREENSHOT=docs it
replaces docs/ui.png (README), so a test run leaves the tree as it was.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import ROOT, Cluster
from tests.waiting import Output, wait_for

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed "
                                "(scripts/setup --test)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)),
                                reason="chromium / chromium-driver not installed "
                                "(scripts/setup --test)")
NS = "blog-website"
DOCS_SHOT = ROOT / "docs" / "ui.png"
DEPLOYMENT = """\
apiVersion: v1
kind: Namespace
metadata: {name: ui-demo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ui-demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx
          ports: [{containerPort: 8080}]
"""
# the page's dropped rows from intruder naming the policy, seen after arguments[0] (epoch s)
DROPPED_ROWS = """
return [...document.querySelectorAll('#flows tbody tr.dropped')]
  .filter(tr => tr.textContent.includes('monospaced-access')
                && tr.textContent.includes('intruder')
                && Date.parse(tr.dataset.time) / 1000 >= arguments[0] - 1)
  .map(tr => ({time: Date.parse(tr.dataset.time) / 1000, shown: Number(tr.dataset.shown),
               text: tr.textContent, color: getComputedStyle(tr.cells[0]).color}));
"""
# Chromium as root in a container-less VM: no sandbox, and nothing that reaches Google
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,800"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(module_clusters) -> Cluster:
    return module_clusters(ROOT / "configs" / "two-node.yaml", "eui")


@pytest.fixture(scope="module")
def url(cluster: Cluster) -> Iterator[str]:
    """`emunet ui --port N` running in the foreground, as a user starts it."""
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "emunet", "ui", "--port", str(port)],
                         env=cluster.env, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        out = Output(p.stdout)
        text = out.wait("Ctrl-C", 20, "emunet ui to print its URL")
        printed = next(w for w in text.split() if w.startswith(f"http://127.0.0.1:{port}/"))
        assert "?token=" in printed
        yield printed
    finally:
        p.send_signal(signal.SIGINT)  # Ctrl-C ends it
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    assert p.returncode == 0, f"emunet ui exited {p.returncode} on Ctrl-C"


@pytest.fixture(scope="module")
def browser(url: str) -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="emunet-ui-chromium-")
    for f in [*FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    try:
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 1280, "height": 800, "deviceScaleFactor": 1,
                           "mobile": False})
        d.get(url)
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_console_errors(browser: Any) -> Iterator[None]:
    yield
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"console errors: {errors}"


def pods_by_ref(d: Any) -> dict[str, str]:
    """The map's pods (one script: the map is redrawn whenever the state is published)."""
    return dict(d.execute_script(
        "return [...document.querySelectorAll('#map g.pod')]"
        ".map(e => [e.dataset.ref, e.dataset.ip]);"))


def test_map_shows_the_nodes_and_pods_with_their_ips(cluster: Cluster, browser: Any) -> None:
    want = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["status"]["podIP"]
            for p in cluster.get("pods")}
    assert len(want) == 4
    got = wait_for(lambda: pods_by_ref(browser) if len(pods_by_ref(browser)) == 4 else None,
                   10, "the map's 4 pods")
    assert got == want
    nodes = {e.get_attribute("data-name"): e.get_attribute("data-underlay-ip")
             for e in browser.find_elements(By.CSS_SELECTOR, "#map g.node")}
    assert nodes == {"node-1": "192.168.1.11", "node-2": "192.168.1.12"}
    svg = browser.find_element(By.ID, "map").text
    for ip in want.values():
        assert ip in svg  # shown, not only in an attribute
    # the Service with an arrow to its ready endpoint, the policy on the pod it selects
    svc = browser.find_element(By.CSS_SELECTOR, f'g.svc[data-ref="{NS}/monospaced"]')
    assert svc.get_attribute("data-ip").startswith("10.43.")
    assert browser.find_elements(By.CSS_SELECTOR, f'path.svc-edge[data-service="{NS}/monospaced"]'
                                 f'[data-pod="{NS}/monospaced-test"]')
    pod = browser.find_element(By.CSS_SELECTOR, f'g.pod[data-ref="{NS}/monospaced-test"]')
    assert "monospaced-access" in pod.text
    assert "app=monospaced" in pod.get_attribute("aria-label")  # labels: on hover and focus


def test_a_dropped_curl_appears_red_within_2s(cluster: Cluster, browser: Any) -> None:
    """The 2 s run from the packet's drop (the agent's record time) to the row on the page
    (the page notes when it added it; one clock): the time `emunet exec` takes to start curl
    on a loaded machine is not the page's."""
    started = time.time()
    curl = subprocess.Popen([sys.executable, "-m", "emunet", "exec", "-n", NS, "intruder",
                             "--", "curl", "-s", "-m", "3", "http://monospaced"],
                            env=cluster.env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        rows = wait_for(lambda: browser.execute_script(DROPPED_ROWS, started), 15,
                        "a dropped flow from intruder naming monospaced-access")
        first = min(rows, key=lambda r: r["time"])
        latency = first["shown"] / 1000 - first["time"]
        assert latency < 2.0, f"the drop showed {latency:.2f} s after the packet"
        assert "✕ DROPPED" in first["text"]  # not only red
        assert first["color"] == "rgb(196, 22, 28)"
        drop = wait_for(lambda: browser.find_elements(
            By.CSS_SELECTOR, f'#drops g.drop[data-src="{NS}/intruder"]'), 3,
            "the broken edge on the map")
        assert "monospaced-access" in drop[0].text
    finally:
        curl.wait(10)
    # observe's filters: only drops, then every flow again
    verdict = Select(browser.find_element(By.CSS_SELECTOR, "#filters select[name=verdict]"))
    verdict.select_by_visible_text("DROPPED")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    verdicts = wait_for(lambda: (v := browser.execute_script(
        "return [...document.querySelectorAll('#flows tbody tr')].map(t => t.dataset.verdict);"))
        and set(v) == {"DROPPED"} and v, 5, "only dropped flows listed")
    assert len(verdicts) >= 1
    verdict.select_by_visible_text("any")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait_for(lambda: "FORWARDED" in browser.execute_script(
        "return [...document.querySelectorAll('#flows tbody tr')].map(t => t.dataset.verdict);"),
        5, "every flow listed again")


def test_trace_draws_vxlan_and_the_dnat_backend(cluster: Cluster, browser: Any,
                                                url: str) -> None:
    backend = cluster.pod(NS, "monospaced-test")["status"]["podIP"]
    sel = browser.find_element(By.ID, "trace-from")
    sel.find_element(By.CSS_SELECTOR, f'option[value="{NS}/frontend-client"]').click()
    dest = browser.find_element(By.ID, "trace-dest")
    dest.clear()
    dest.send_keys("monospaced")
    browser.find_element(By.ID, "trace-go").click()
    encap = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".hop[data-step=encap]"),
                     15, "the VXLAN hop")
    assert "VNI 1" in encap[0].text and "8472" in encap[0].text
    assert encap[0].find_element(By.CSS_SELECTOR, ".layer").text == "L2 over UDP"
    dnat = browser.find_element(By.CSS_SELECTOR, ".hop[data-step=dnat]")
    assert f"backend {backend}:3000" in dnat.text
    steps = [e.get_attribute("data-step") for e in browser.find_elements(By.CSS_SELECTOR, ".hop")]
    assert steps[0] == "send" and "decap" in steps and "deliver" in steps
    assert "reverse-nat" in steps  # the reply comes back through the reverse NAT
    line = browser.find_element(By.CSS_SELECTOR, "#path polyline.path-line")
    assert line.get_attribute("data-nodes") == "node-1 node-2"
    assert "DNAT" in browser.find_element(By.ID, "path").text
    # a hop's headers, decoded by Scapy: the VXLAN header and the inner TCP SYN
    encap[0].send_keys("\n")  # keyboard: Enter on the focused hop
    detail = wait_for(lambda: (t := browser.find_element(By.ID, "hop-detail").text)
                      and "VXLAN" in t and t, 5, "the hop's decoded headers")
    assert "TCP" in detail and "192.168.1.12" in detail
    shot = DOCS_SHOT if os.environ.get("EMUNET_UI_SCREENSHOT") == "docs" else \
        cluster.tmp / "ui.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000  # a real picture, not an empty page
    # the pcap of the traced flow, and the flows as JSON
    href = browser.find_element(By.CSS_SELECTOR, "#trace-status a").get_attribute("href")
    data = urllib.request.urlopen(href, timeout=10).read()
    from scapy.layers.vxlan import VXLAN
    from scapy.utils import rdpcap
    frames = rdpcap(io.BytesIO(data))
    assert any(VXLAN in f for f in frames) and len(frames) >= 6
    base = url.partition("?")[0]
    flows = json.loads(urllib.request.urlopen(base + "api/flows?download=1", timeout=10).read())
    assert any(f.get("verdict") == "DROPPED" for f in flows)


def test_a_dropped_probe_ends_at_the_policy(browser: Any) -> None:
    # keyboard: a pod on the map is focusable, Enter picks it as the source and moves to "to"
    browser.execute_script(f"document.querySelector('#map g.pod[data-ref=\"{NS}/intruder\"]')"
                           ".focus();")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    assert browser.find_element(By.ID, "trace-from").get_attribute("value") == f"{NS}/intruder"
    dest = browser.switch_to.active_element
    assert dest.get_attribute("id") == "trace-dest"
    dest.clear()
    dest.send_keys("monospaced")
    browser.find_element(By.ID, "trace-go").click()
    drop = wait_for(lambda: browser.find_elements(
        By.CSS_SELECTOR, "#journey ol.request li:last-child .hop[data-step=drop]"), 15,
        "the request's path to end at the drop")
    assert "monospaced-access" in drop[0].text and "✕" in drop[0].text
    assert drop[0].get_attribute("class").split().count("step-drop") == 1
    assert "dropped here" in browser.find_element(By.ID, "path").text
    assert "✕" in browser.find_element(By.ID, "trace-status").text  # the probe timed out


def test_scaling_a_deployment_adds_pods_live(cluster: Cluster, browser: Any) -> None:
    (cluster.tmp / "web.yaml").write_text(DEPLOYMENT)
    cluster.emunet("apply", "-f", str(cluster.tmp / "web.yaml"))

    def web_pods() -> dict[str, str]:
        return {r: ip for r, ip in pods_by_ref(browser).items() if r.startswith("ui-demo/web-")}
    wait_for(lambda: len(web_pods()) == 1, 10, "the Deployment's first pod on the map")
    cluster.emunet("scale", "deployment", "web", "--replicas", "3", "-n", "ui-demo")
    got = wait_for(lambda: web_pods() if len(web_pods()) == 3 else None, 10,
                   "3 pods of web on the map")
    want = {f"ui-demo/{p['metadata']['name']}": p["status"]["podIP"] for p in
            json.loads(cluster.emunet("get", "pods", "-n", "ui-demo", "-o", "json").stdout)
            ["items"]}
    assert got == want
