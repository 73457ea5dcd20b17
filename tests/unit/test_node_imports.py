"""The node processes read parsed policies from the state: an agent (and the L7 proxy's policy
compile) loads a state with NetworkPolicies and CiliumNetworkPolicies, HTTP rules included,
without importing the config parser, PyYAML or re2 (re2 is loaded on the first HTTP rule a
proxy matches, `emunet.model.cilium.compile_re2`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from emunet.config import load_config
from emunet.state import codec
from emunet.state.plan import plan

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from emunet.agent import loop
from emunet.datapath import NodeTables
from emunet.policy.cilium import cilium_policies
from emunet.state import store
st = store.read(__import__("pathlib").Path(sys.argv[1]))
for n in st.nodes:
    NodeTables.from_state(st, n.name)
assert cilium_policies(st), "the state holds the parsed CNP"
print(json.dumps({m: m in sys.modules for m in ("yaml", "re2", "emunet.config")}))
"""


def test_agent_loads_policies_without_yaml_or_re2(tmp_path):
    st = plan(load_config(str(ROOT / "tests/e2e/configs/l7.yaml")))
    assert st.cilium_policies and any(
        pr.http for p in st.cilium_policies.values() for r in (p.ingress or ())
        for pr in r.to_ports)
    path = tmp_path / "state.json"
    path.write_text(codec.to_json(st))
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], cwd=ROOT, text=True,
                         capture_output=True, check=True)
    assert json.loads(out.stdout) == {"yaml": False, "re2": False, "emunet.config": False}


def test_the_state_file_round_trips_cilium_policies():
    st = plan(load_config(str(ROOT / "tests/e2e/configs/l7.yaml")))
    back = codec.from_json(codec.to_json(st))
    assert back.cilium_policies == st.cilium_policies
