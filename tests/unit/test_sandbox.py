"""emunet.host.sandbox: the command lines that put a pod's processes in their namespaces, the
environment an image gives them, and finding a sandbox's PID 1. Pure: no root, nothing run."""

from __future__ import annotations

from emunet.host import sandbox
from emunet.model import Container, Pod

POD = Pod("shop", "web-7d4b9c-abcde", containers=(Container("web", command=("sleep", "9")),))


def test_the_sandbox_holds_new_uts_ipc_mount_pid_namespaces_with_the_pause_as_pid_1():
    argv = sandbox.sandbox_argv(POD, "emt-shop-web")
    assert argv[:4] == ["ip", "netns", "exec", "emt-shop-web"]
    assert {"--uts", "--ipc", "--mount", "--pid", "--fork", "--mount-proc"} <= set(argv)
    script = argv[argv.index("-c") + 1]
    assert 'hostname "$0"' in script and 'exec "$@"' in script
    assert "tmpfs /dev/shm" in script and "lowerdir=/tmp" in script and "tmpfs /tmp" in script
    assert argv[-3:] == ["web-7d4b9c-abcde", "catatonit", "-P"]


def test_a_container_joins_the_sandbox_and_gets_its_own_pid_namespace_by_default():
    c = POD.containers[0]
    argv = sandbox.container_argv(POD, c, 4242, ["sleep", "9"])
    assert argv[:2] == ["nsenter", "--target=4242"]
    joined = argv[:argv.index("--")]
    assert {"--net", "--uts", "--ipc", "--mount"} <= set(joined) and "--pid" not in joined
    rest = argv[argv.index("--") + 1:]
    assert rest[:4] == ["unshare", "--pid", "--fork", "--mount-proc"]
    assert rest[-2:] == ["sleep", "9"] and "--reuid=65534" in rest  # nobody by default


def test_share_process_namespace_joins_the_sandboxs_pid_namespace():
    pod = Pod("shop", "web", containers=POD.containers, share_process_namespace=True)
    argv = sandbox.container_argv(pod, pod.containers[0], 4242, ["sleep", "9"])
    assert "--pid" in argv[:argv.index("--")] and "unshare" not in argv


def test_exec_enters_the_containers_namespaces_or_fresh_ones():
    argv = sandbox.exec_argv(POD, "ns1", 77, ["ps"])
    assert argv[:2] == ["nsenter", "--target=77"] and "--pid" in argv and argv[-1] == "ps"
    fresh = sandbox.exec_argv(POD, "ns1", None, ["hostname"])
    assert fresh[:4] == ["ip", "netns", "exec", "ns1"] and "--uts" in fresh
    assert fresh[-2:] == ["web-7d4b9c-abcde", "hostname"]


def test_hostname_is_spec_hostname_else_the_name_cut_to_63():
    assert sandbox.hostname(Pod("a", "x" * 70)) == "x" * 63
    assert sandbox.hostname(Pod("a", "web-0", hostname="db")) == "db"


def test_environment_is_an_images_not_the_invoking_shells():
    env = sandbox.env(POD, Container("c", env=(("A", "1"),)))
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["HOSTNAME"] == "web-7d4b9c-abcde" and env["A"] == "1"
    assert env["HOME"] == "/nonexistent"  # nobody's, as in /etc/passwd
    assert sandbox.env(POD, Container("c", run_as_user=0))["HOME"] == "/root"


def test_child_pid_reads_the_one_child(tmp_path):
    (tmp_path / "10" / "task" / "10").mkdir(parents=True)
    (tmp_path / "10" / "task" / "10" / "children").write_text("11 ")
    assert sandbox.child_pid(10, tmp_path) == 11
    assert sandbox.child_pid(12, tmp_path) is None


def test_recorded_pid_takes_the_newest_live_process_of_the_role():
    import os

    from emunet.host.manifest import process_start_time
    me = {"pid": os.getpid(), "start_time": process_start_time(os.getpid()),
          "role": sandbox.container_role(POD, POD.containers[0])}
    stale = {**me, "start_time": -1}  # a recycled pid: its start time does not match
    assert sandbox.recorded_pid([stale], me["role"]) is None
    assert sandbox.recorded_pid([stale, me], me["role"]) == os.getpid()
    assert sandbox.recorded_pid([me], "container other/pod/c") is None
