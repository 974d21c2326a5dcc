"""The CPU platform: on only where the launcher's marker (VERL_PLATFORM=cpu) asks for it - never detected locally,
never registered without it, even on a host with no accelerator - and the pieces verl calls on it (device module,
gloo process group, FSDP engine lookup, checkpoint RNG state) work.

Each check runs in a fresh interpreter: registration happens inside ``import verl`` and the platform is a
process-wide singleton."""

import json
import os
import socket
import subprocess
import sys

import pytest

PROBE = r"""
import json, os, sys
if os.environ.get("FAKE_CUDA") == "1":
    import torch
    torch.cuda.is_available = lambda: True  # what a GPU host reports; must keep every CPU patch out
import verl
from verl.plugin.platform import PlatformRegistry
import verl.utils.distributed as dist_utils
imported_by_plugin = "verl_resrl.workers.cpu_platform" in sys.modules
from verl_resrl.workers import cpu_platform
out = {
    "imported_by_plugin": imported_by_plugin,
    "registered": "cpu" in PlatformRegistry.registered_names(),
    "active": cpu_platform.is_active(),
    "pg_wrapped": getattr(dist_utils.initialize_global_process_group_ray, "__verl_resrl_cpu__", False),
    "engine_env": os.environ.get("VERL_ENGINE_DEVICE"),
}
if os.environ.get("RESOLVE") == "1":
    from verl.plugin.platform import get_platform
    out["platform"] = type(get_platform()).__name__
print("PROBE" + json.dumps(out))
"""


def probe(env_extra=None, code=PROBE):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("PROBE")][-1]
    return json.loads(line[len("PROBE"):])


@pytest.fixture(scope="module")
def cpu_only_host():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")


OFF = {"imported_by_plugin": False, "registered": False, "active": False, "pg_wrapped": False, "engine_env": None}


def test_the_marker_selects_it_on_a_cpu_host(cpu_only_host):
    out = probe({"VERL_PLATFORM": "cpu", "RESOLVE": "1"})
    assert out == {"imported_by_plugin": True, "registered": True, "active": True, "pg_wrapped": True,
                   "engine_env": "cuda", "platform": "PlatformCPU"}


def test_no_marker_no_cpu_platform_even_without_an_accelerator(cpu_only_host):
    """A CPU-only Ray actor of a GPU run sees no accelerator either: local detection must not switch it on."""
    assert probe() == OFF


def test_nothing_registered_or_patched_when_cuda_is_present():
    assert probe({"FAKE_CUDA": "1"}) == OFF


def test_forced_by_verl_platform_env_even_with_cuda():
    out = probe({"FAKE_CUDA": "1", "VERL_PLATFORM": "cpu", "RESOLVE": "1"})
    assert out["active"] and out["registered"] and out["platform"] == "PlatformCPU"


def test_another_forced_platform_keeps_it_off(cpu_only_host):
    out = probe({"VERL_PLATFORM": "nvidia"})
    assert not out["active"] and not out["registered"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


VERL_CALLS = r"""
import json, torch
import verl
from verl.utils.device import get_device_id, get_device_name, get_nccl_backend, get_torch_device
from verl.utils.distributed import initialize_global_process_group_ray
from verl.utils.checkpoint.checkpoint_manager import BaseCheckpointManager
from verl.workers.engine.base import EngineRegistry

initialize_global_process_group_ray(timeout_second=60)
t = torch.tensor([3.0])
torch.distributed.all_reduce(t)
dev = get_torch_device()
free, total = dev.mem_get_info()
torch.manual_seed(5)
state = BaseCheckpointManager.get_rng_state()
first = torch.rand(3).tolist()
torch.rand(7)
BaseCheckpointManager.load_rng_state(state)
again = torch.rand(3).tolist()
out = {
    "backend": torch.distributed.get_backend(),
    "all_reduce": t.item(),
    "device": get_device_name(), "device_id": get_device_id(), "backend_name": get_nccl_backend(),
    "mem": [dev.memory_allocated(), dev.memory_reserved(), dev.max_memory_allocated()],
    "mem_info_ok": 0 < free <= total,
    "device_name": dev.get_device_name(),
    "rng_restored": first == again,
    "engine": [c.__name__ for c in EngineRegistry.get_engine_cls("language_model", "fsdp2").__mro__],
    "to_device": str(torch.zeros(1).to(get_device_id()).device),
}
torch.distributed.destroy_process_group()
print("PROBE" + json.dumps(out))
"""


def test_what_verl_calls_on_the_platform_works(cpu_only_host):
    env = {"VERL_PLATFORM": "cpu", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    out = probe(env, code=VERL_CALLS)
    assert out["backend"] == "gloo" and out["all_reduce"] == 3.0
    assert (out["device"], out["device_id"], out["backend_name"]) == ("cpu", "cpu", "gloo")
    assert out["mem"] == [0, 0, 0] and out["mem_info_ok"]
    assert out["device_name"] == "CPU"
    assert out["rng_restored"]
    # verl's FSDP engine, or our ResRL subclass of it (registered for the (device, vendor) key the platform maps to)
    assert "FSDPEngineWithLMHead" in out["engine"]
    assert out["to_device"] == "cpu"
