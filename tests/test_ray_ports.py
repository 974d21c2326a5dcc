"""The test Ray head's ports: distinct, the named ones outside the worker range, none in the ephemeral range."""

import socket

import pytest

from ray_ports import NAMED, ephemeral_range, free_ray_ports


@pytest.mark.parametrize("seed", range(30))
def test_ports_are_disjoint_free_and_below_the_ephemeral_range(seed):
    ports = free_ray_ports(worker_width=200, seed=seed)
    assert list(ports.named) == list(NAMED)
    assert ports.worker_max - ports.worker_min == 199
    every = ports.all()
    assert len(every) == len(set(every)) == 200 + len(NAMED)
    assert not any(ports.worker_min <= p <= ports.worker_max for p in ports.named.values())
    assert max(every) < ephemeral_range()[0]
    for port in ports.named.values():  # each really free: binding it succeeds
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_an_occupied_port_is_never_handed_out():
    """Occupy a port, then draw with the seed that picked it: the draw moves elsewhere."""
    first = free_ray_ports(seed=7)
    taken = first.named["gcs"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        second = free_ray_ports(seed=7)
    assert taken not in second.all()


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path):
    path = tmp_path / "range"
    path.write_text("40000\t50000\n")
    assert ephemeral_range(str(path)) == (40000, 50000)
    assert ephemeral_range(str(tmp_path / "missing")) == (32768, 60999)
