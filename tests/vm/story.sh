#!/usr/bin/env bash
# The story on a distribution kernel, run inside the Debian 12 VM by `scripts/vm test` (never on
# the host: it brings up configs/two-node.yaml with the default prefix and checks that
# `ip netns list` ends empty, which only holds on a machine of its own).
# Steps, each timed: the VM's kernel (Debian 12's 6.1), `emunet doctor`, README's first command,
# the journey (nslookup, curl across nodes through the Service, the policy keeping intruder out,
# `emunet trace`), `emunet down` leaving nothing, lab 0 (start, the reference solution of
# tests/labs/solutions/00-try-this, check), and down again. Exits non-zero at the first failure,
# after printing what it saw. --kernel-only: the kernel, its features and doctor, no cluster (what
# scripts/vm test runs under TCG, where the story's timeouts do not hold).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
NS=blog-website
out=$(mktemp)

step() {  # step NAME CMD...: run CMD, print its wall time and PASS/FAIL; stop at a failure
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@" > "$out" 2>&1
  local rc=$?
  local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  if ((rc == 0)); then
    printf 'vm-story: PASS %-28s %6s s\n' "$name" "$dt"
  else
    printf 'vm-story: FAIL %-28s %6s s (exit %d)\n' "$name" "$dt" "$rc"
    sed 's/^/    | /' "$out" | tail -60
    diagnose
    exit 1
  fi
}

diagnose() {
  echo "---- emunet status / doctor / logs after the failure"
  timeout 20 emunet status 2>&1 | tail -30
  timeout 20 emunet doctor 2>&1 | grep -v '^ok' | tail -20
  for f in /run/emunet/logs/*.log; do
    [[ -f $f ]] && { echo "-- $f"; tail -15 "$f"; }
  done
  timeout 60 emunet down >/dev/null 2>&1
}

kernel() {
  uname -r
  case "$(uname -r)" in 6.1.*) ;; *) echo "not Debian 12's 6.1 kernel"; return 1 ;; esac
}

kernel_features() {  # printed whatever the outcome: what this kernel has
  unshare -n sh -c 'ip link set lo up && /root/emunet/.venv/bin/python tests/vm/kernel_features.py'
}

doctor() { emunet doctor; }

readme_up() { ./scripts/setup && emunet up configs/two-node.yaml; }

nslookup_service() {
  local ip; ip=$(emunet get services -n "$NS" -o json \
    | python3 -c 'import json,sys; print(next(s["spec"]["clusterIP"] for s in json.load(sys.stdin)["items"] if s["metadata"]["name"] == "monospaced"))')
  emunet exec -n "$NS" frontend-client -- nslookup monospaced | tee /dev/stderr \
    | grep -q "Address: $ip"
}

curl_across_nodes() {
  emunet exec -n "$NS" frontend-client -- curl -sS --max-time 5 http://monospaced \
    | tee /dev/stderr | grep -q 'node=node-2'
}

kubectl_pods() {
  KUBECONFIG=/run/emunet/kubeconfig kubectl get pods -n "$NS" -o wide | tee /dev/stderr \
    | grep -q 'frontend-client .*Running'
}

intruder_blocked() {
  emunet exec -n "$NS" intruder -- curl -sS --max-time 2 http://monospaced
  local rc=$?
  echo "intruder's curl: exit $rc (28: timed out, the policy's silent drop)"
  ((rc == 28))
}

trace() {
  emunet trace -n "$NS" frontend-client monospaced > /tmp/trace.out 2>&1
  local rc=$?
  cat /tmp/trace.out
  ((rc == 0)) || return 1
  for text in "VXLAN encapsulation (RFC 7348): outer IP 192.168.1.11 -> 192.168.1.12" \
              "VXLAN decapsulation: VNI 1" \
              "ingress policy: allowed by NetworkPolicy blog-website/monospaced-access" \
              "result: connected"; do
    grep -qF "$text" /tmp/trace.out || { echo "missing in trace: $text"; return 1; }
  done
}

nothing_left() {
  local ns; ns=$(ip netns list)
  [[ -z $ns ]] || { echo "namespaces left: $ns"; return 1; }
  [[ ! -e /run/emunet/manifest.json ]] || { echo "/run/emunet/manifest.json left"; return 1; }
  ! ls /etc/netns/emunet-* >/dev/null 2>&1 || { echo "/etc/netns entries left"; return 1; }
}

down_clean() { emunet down && nothing_left; }

lab_start() { emunet lab start 0; }

lab_solution() {
  local sol=tests/labs/solutions/00-try-this
  emunet apply -f "$sol/hello.yaml" || return 1
  # the answer the reference solution records (solution.yaml): the Service's ClusterIP
  emunet lab answer 0 nslookup 10.43.0.11
}

lab_check() { emunet lab check 0; }

echo "vm-story: on $(uname -srm), $(nproc) CPUs, $(free -m | awk '/^Mem:/ {print $2}') MB"
step "kernel is Debian 12's 6.1" kernel
step "kernel features" kernel_features
sed 's/^/    | /' "$out"
step "emunet doctor" doctor
sed 's/^/    | /' "$out" | grep -v '^    | ok '
if [[ "${1:-}" == --kernel-only ]]; then
  echo "vm-story: kernel checks passed on $(uname -r) (--kernel-only: no cluster)"
  exit 0
fi
step "README: setup && up two-node" readme_up
step "nslookup monospaced" nslookup_service
step "curl across nodes (Service)" curl_across_nodes
step "kubectl get pods" kubectl_pods
step "intruder blocked by policy" intruder_blocked
step "emunet trace" trace
step "emunet down leaves nothing" down_clean
step "lab start 0" lab_start
step "lab 0 reference solution" lab_solution
step "lab check 0" lab_check
step "emunet down leaves nothing" down_clean
echo "vm-story: all steps passed on $(uname -r)"
