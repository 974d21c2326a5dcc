"""Ports for a test's own `ray start --head`: named ports and a worker range that cannot overlap.

Why not ``bind(("127.0.0.1", 0))``: the kernel hands out such ports from its ephemeral range, the same range in which
it later picks the source ports of outgoing connections, and a worker range drawn at random independently of them can
contain them ("worker_ports is trying to use a port number 42299 that is used by other components", seen in a few
percent of runs). Here every port is drawn below the ephemeral range (so no outgoing connection takes one later),
the named ports outside the worker range, all distinct, and each probed free at the time of the draw.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass

NAMED = ("gcs", "dashboard", "client", "agent", "agent_grpc", "metrics", "runtime_env_agent", "node_manager",
         "object_manager")
LOWEST = 10000  # below this, ports are often reserved for system services


@dataclass(frozen=True)
class RayPorts:
    named: dict[str, int]
    worker_min: int
    worker_max: int

    def all(self) -> list[int]:
        return list(self.named.values()) + list(range(self.worker_min, self.worker_max + 1))


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's range for outgoing source ports (Linux's default where the file is missing)."""
    try:
        low, high = open(path).read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ray_ports(worker_width: int = 200, seed: int | None = None, tries: int = 200) -> RayPorts:
    """Named ports and a ``worker_width``-port worker range, disjoint, below the ephemeral range, free right now."""
    rng = random.Random(seed)
    top = ephemeral_range()[0]  # exclusive
    if top - LOWEST < worker_width + 2 * len(NAMED):
        raise RuntimeError(f"the ephemeral range starts at {top}: too little room below it for Ray's ports")
    for _ in range(tries):
        base = rng.randrange(LOWEST, top - worker_width)
        if all(_is_free(p) for p in range(base, base + worker_width)):
            break
    else:
        raise RuntimeError(f"no {worker_width} consecutive free ports between {LOWEST} and {top}")
    named: dict[str, int] = {}
    for name in NAMED:
        for _ in range(tries):
            port = rng.randrange(LOWEST, top)
            if not base <= port < base + worker_width and port not in named.values() and _is_free(port):
                named[name] = port
                break
        else:
            raise RuntimeError(f"no free port for Ray's {name} between {LOWEST} and {top}")
    return RayPorts(named, base, base + worker_width - 1)
