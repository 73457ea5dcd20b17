"""scripts/vm and the VM story, statically: they parse, CI runs the story after the suite, the
VM gets no network device, and the Vagrantfile validates with both providers' config (where
the distribution packages vagrant: scripts/setup --test installs it). The VM itself is
booted by `scripts/vm test` in .ci/run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "scripts" / "vm", ROOT / "tests" / "vm" / "story.sh",
           ROOT / "scripts" / "check-fresh-install", ROOT / ".ci" / "run"]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_the_scripts_parse(path: Path):
    p = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_ci_runs_the_vm_story_after_the_suite_with_a_time_limit():
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    suite = lines.index("bash scripts/test")
    vm = next(i for i, ln in enumerate(lines) if ln.endswith("scripts/vm test"))
    assert vm > suite and lines[vm].startswith("timeout ")


def test_the_vm_has_no_network_device():
    text = (ROOT / "scripts" / "vm").read_text()
    qemu = text[text.index("local q=(qemu-system-x86_64"):]
    qemu = qemu[:qemu.index(")\n")]
    assert "-nic none" in qemu and "-nodefaults" in qemu
    assert not re.search(r"-netdev|-nic (user|tap|bridge)|hostfwd", text)


def test_the_vagrantfile_has_both_providers():
    text = (ROOT / "Vagrantfile").read_text()
    assert 'provider "virtualbox"' in text and 'provider "libvirt"' in text


def _vagrant_packaged() -> bool:
    """scripts/setup --test installs Debian's vagrant wherever the distribution packages it."""
    return subprocess.run(["apt-cache", "show", "vagrant-libvirt"], capture_output=True,
                          timeout=60).returncode == 0 if shutil.which("apt-cache") else False


@pytest.mark.skipif(shutil.which("vagrant") is None and not _vagrant_packaged(),
                    reason="this distribution packages no vagrant")
def test_vagrant_validates_the_vagrantfile(tmp_path: Path):
    assert shutil.which("vagrant"), "vagrant is packaged here: scripts/setup --test installs it"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "VAGRANT_HOME": str(tmp_path / "vagrant.d"),
           "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot")}  # no .vagrant/ in the repo
    # With Debian's vagrant-libvirt plugin the libvirt provider's options are validated too;
    # without it (or VirtualBox) vagrant picks no provider, so only the rest is checked.
    args = ["--ignore-provider"]
    if Path("/usr/share/vagrant-plugins/plugins.d/vagrant-libvirt.json").exists():
        args, env["VAGRANT_DEFAULT_PROVIDER"] = [], "libvirt"
    p = subprocess.run(["vagrant", "validate", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 0 and "validated successfully" in p.stdout, p.stdout + p.stderr
