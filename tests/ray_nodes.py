"""Ray nodes on this machine for the cluster-path tests, started by the project's own launch/ray_head.sh and
launch/ray_worker.sh (foreground, their own process groups), on ports from tests/ray_ports.py, with a private temp
dir and auth token; everything they started is killed by process group and by the temp dir's name."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from process_cleanup import kill_processes_naming
from ray_ports import free_ray_ports

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.dirname(os.path.dirname(sys.executable))
# alive nodes and their GPU/CPU resources, as JSON (run with the cluster's token in the environment)
NODES = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
         "print('NODES' + json.dumps(sorted([n['Resources'].get('GPU', 0), n['Resources'].get('CPU', 0)] "
         "for n in ray.nodes() if n['Alive'])))")


def _port_args(ports, head: bool) -> list[str]:
    """`ray start` options for every port of a node (the GCS and dashboard ports are the head script's own)."""
    p = ports.named
    args = ["--node-manager-port", p["node_manager"], "--object-manager-port", p["object_manager"],
            "--metrics-export-port", p["metrics"], "--dashboard-agent-listen-port", p["agent"],
            "--dashboard-agent-grpc-port", p["agent_grpc"], "--runtime-env-agent-port", p["runtime_env_agent"],
            "--min-worker-port", ports.worker_min, "--max-worker-port", ports.worker_max]
    if head:
        args += ["--ray-client-server-port", p["client"]]
    return [str(a) for a in args]


class LocalCluster:
    """A head (launch/ray_head.sh) and ``len(workers)`` worker nodes (launch/ray_worker.sh) on 127.0.0.1."""

    def __init__(self, head: dict, workers: list[dict]):
        self.temp_dir = tempfile.mkdtemp(prefix="rn_", dir="/tmp")  # short: Ray's socket paths stay < 108 bytes
        self.head_spec, self.worker_specs = head, workers
        # a clean node environment: no Ray/verl settings and no torch rendezvous of pytest's process; the one
        # verl_resrl choice a caller sets for the whole suite (.ci/run's CPU precision) is kept
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("RAY_", "VERL_", "MASTER_")) or k == "VERL_RESRL_CPU_BF16"}
        self.env.update(RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_AUTH_MODE="token", VERL_RESRL_VENV=VENV,
                        NODE_IP="127.0.0.1", RAY_TEMP_DIR=self.temp_dir, RAY_BLOCK="1", RAY_DASHBOARD_HOST="127.0.0.1")
        self.procs: list[subprocess.Popen] = []
        self.address = self.url = None

    def _start(self, script: str, spec: dict, args: list[str]) -> None:
        env = dict(self.env, NUM_CPUS=str(spec["num_cpus"]), NUM_GPUS=str(spec["num_gpus"]), **spec.get("env", {}))
        log = open(os.path.join(self.temp_dir, f"node{len(self.procs)}.log"), "w")
        self.procs.append(subprocess.Popen(["bash", os.path.join(REPO, "launch", script), *args], env=env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def __enter__(self):
        try:
            ports = free_ray_ports()
            self.address = f"127.0.0.1:{ports.named['gcs']}"
            self.url = f"http://127.0.0.1:{ports.named['dashboard']}"
            self.head_spec["env"] = {"RAY_PORT": str(ports.named["gcs"]),
                                     "RAY_DASHBOARD_PORT": str(ports.named["dashboard"])}
            self._start("ray_head.sh", self.head_spec, _port_args(ports, head=True))
            self.wait_for(1, deadline_s=240)
            used = set(ports.all())
            for spec in self.worker_specs:
                mine = free_ray_ports()
                while used & set(mine.all()):  # the head's worker range is not bound yet: keep clear of it
                    mine = free_ray_ports()
                used |= set(mine.all())
                self._start("ray_worker.sh", spec, [self.address, *_port_args(mine, head=False)])
            self.wait_for(1 + len(self.worker_specs), deadline_s=240)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def nodes(self) -> list | None:
        """[[GPUs, CPUs], ...] of the alive nodes, or None while the head does not answer."""
        try:
            proc = subprocess.run([sys.executable, "-c", NODES, self.address], env=self.env, capture_output=True,
                                  text=True, timeout=60)
        except subprocess.TimeoutExpired:  # ray.init keeps retrying a head that is not (or no longer) up
            return None
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("NODES")]
        return json.loads(lines[-1][len("NODES"):]) if lines else None

    def wait_for(self, count: int, deadline_s: float) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a ray node exited:\n{self.logs()}")
            nodes = self.nodes()
            if nodes is not None and len(nodes) >= count:
                return
            time.sleep(3)
        raise TimeoutError(f"{count} ray node(s) not up:\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for name in sorted(os.listdir(self.temp_dir)):
            if name.endswith(".log"):
                out.append(f"--- {name}\n" + open(os.path.join(self.temp_dir, name)).read()[-2000:])
        return "\n".join(out)

    def __exit__(self, *exc):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=20)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        kill_processes_naming(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return False
