"""The pod label index answers every selector exactly as the scan over all pods does."""

from __future__ import annotations

import dataclasses
import random

from bench.lifecycle import config
from emunet.config import load_config_text
from emunet.state.plan import plan


def test_index_matches_the_scan_for_every_service_and_random_selectors():
    st = plan(load_config_text(config(3, 60, 7, "emunet"), "c.yaml"))
    rng = random.Random(5)
    for ps in rng.sample(list(st.pods.values()), 20):  # extra labels, some shared
        ps.pod = dataclasses.replace(ps.pod, labels={**ps.pod.labels,
                                                     "tier": rng.choice("ab")})
    index = st.pod_index()
    for key, ss in st.services.items():
        assert st.selected_pods(ss.service, index) == st.selected_pods(ss.service)
        assert st.endpoints(key, index) == st.endpoints(key)
    svc = next(iter(st.services.values())).service
    for selector in ({}, {"tier": "a"}, {"tier": "b", "app": "app-1"}, {"app": "nope"}):
        s = dataclasses.replace(svc, selector=selector)
        picked = st.selected_pods(s, index)
        assert picked == st.selected_pods(s)
        assert selector == {} or all(p.pod.labels.get(k) == v for p in picked
                                     for k, v in selector.items())
    assert len(st.selected_pods(dataclasses.replace(svc, selector={}), index)) == sum(
        p.pod.namespace == svc.namespace for p in st.pods.values())
