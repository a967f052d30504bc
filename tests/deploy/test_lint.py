"""ansible-lint (production profile) and a syntax check of the playbook with the example inventory."""

from __future__ import annotations

import os
import shutil
import subprocess

from conftest import ANSIBLE_DIR, ansible_env

TOOLS = ("python3", "ansible", "ansible-config", "ansible-galaxy", "ansible-playbook", "ansible-doc", "ansible-lint")


def _path_without_git(tmp_path) -> str:
    # ansible-lint asks git which files to lint; the tests never run git, so it walks the folder instead.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            os.symlink(found, bindir / tool)
    return str(bindir)


def test_ansible_lint_passes_the_production_profile(deploy_tools, tmp_path):
    done = subprocess.run(["ansible-lint", "--offline", "--nocolor"], cwd=ANSIBLE_DIR, capture_output=True, text=True,
                          env=ansible_env(PATH=_path_without_git(tmp_path), HOME=str(tmp_path)), timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Passed with production profile" in out, out


def test_playbook_syntax_with_the_example_inventory(deploy_tools):
    done = subprocess.run(["ansible-playbook", "--syntax-check", "-i", "inventory/example.yml", "site.yml"],
                          cwd=ANSIBLE_DIR, capture_output=True, text=True, env=ansible_env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
