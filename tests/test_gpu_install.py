"""The GPU install, without downloading: the committed resolution (launch/check_gpu_install.sh's output) lists
exactly setup.py's pins, and launch/install_flash_attn.sh takes a wheel or fails naming it (run against a stand-in
torch that reports the pinned CUDA build). The resolution check itself downloads and is not run here."""

import ast
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = os.path.join(REPO, "benchmarks", "results", "gpu_install_resolution.txt")
SCRIPT = os.path.join(REPO, "launch", "install_flash_attn.sh")
PY_TAG = "cp%d%d" % sys.version_info[:2]


def setup_constants() -> dict:
    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body
            if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") in ("GPU_STACK", "FLASH_ATTN_VERSION")}


def test_committed_resolution_lists_setup_pys_pins():
    text = open(RESULT).read()
    assert "no conflict: the gpu extra resolves to setup.py's pins" in text and "rc=0" in text
    resolved = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", text, flags=re.M))
    for req in setup_constants()["GPU_STACK"]:
        name, version = re.match(r"([A-Za-z0-9_.-]+)(?:\[.*\])?==(.+)", req).groups()
        assert resolved.get(name) == version, (req, resolved.get(name))
    assert "flash-attn" not in resolved and "flash_attn" not in resolved  # a wheel from the user, not the index


@pytest.fixture()
def fake_venv(tmp_path):
    """A venv whose python sees a stand-in torch 2.11.0+cu130 (CUDA 13.0, C++11 ABI), as the gpu extra installs."""
    stub = tmp_path / "stub"
    (stub / "torch").mkdir(parents=True)
    (stub / "torch" / "__init__.py").write_text(
        '__version__ = "2.11.0+cu130"\n'
        "class version:\n    cuda = '13.0'\n"
        "class _C:\n    _GLIBCXX_USE_CXX11_ABI = True\n")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{stub}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return venv, stub


def install(venv, wheel=None):
    env = {k: v for k, v in os.environ.items() if k != "VERL_RESRL_FLASH_ATTN_WHEEL"}
    if wheel is not None:
        env["VERL_RESRL_FLASH_ATTN_WHEEL"] = wheel
    return subprocess.run(["bash", SCRIPT, str(venv)], capture_output=True, text=True, timeout=120, env=env)


WHEEL = f"flash_attn-2.8.3+cu13torch2.11cxx11abiTRUE-{PY_TAG}-{PY_TAG}-linux_x86_64.whl"


def test_no_wheel_fails_naming_the_matching_wheel(fake_venv):
    proc = install(fake_venv[0])
    assert proc.returncode == 1
    assert f"Install flash-attn 2.8.3 for torch 2.11.0+cu130, CUDA 13.0, {PY_TAG}, cxx11abi TRUE: a wheel named " \
           f"{WHEEL}" in proc.stderr, proc.stderr
    assert "VERL_RESRL_FLASH_ATTN_WHEEL=none" in proc.stderr


def test_a_source_archive_is_refused_never_built(fake_venv, tmp_path):
    sdist = tmp_path / "flash_attn-2.8.3.tar.gz"
    sdist.write_text("")
    proc = install(fake_venv[0], str(sdist))
    assert proc.returncode == 1 and "is not a .whl file" in proc.stderr and WHEEL in proc.stderr


def test_none_goes_without_and_says_what_to_set(fake_venv):
    proc = install(fake_venv[0], "none")
    assert proc.returncode == 0 and "attn_implementation=sdpa" in proc.stderr


def test_an_installed_flash_attn_that_imports_is_kept(fake_venv):
    venv, stub = fake_venv
    (stub / "flash_attn").mkdir()
    (stub / "flash_attn" / "__init__.py").write_text('__version__ = "2.8.3"\n')
    proc = install(venv)
    assert proc.returncode == 0 and "flash-attn 2.8.3 already installed" in proc.stderr


def test_a_cpu_torch_is_named():
    import torch

    if torch.version.cuda is not None:
        pytest.skip("this venv has a CUDA torch")
    proc = install(os.path.dirname(os.path.dirname(sys.executable)))  # this project's CPU venv
    assert proc.returncode == 1 and "is a CPU build" in proc.stderr
