"""The targeted split-group exchange (workers/resrl_exchange.py) on two gloo ranks, and one device per group.

Every group split across the two ranks: the weights equal the one-rank weights bit for bit, each group's PCA runs
exactly once (on the rank holding most of its tokens, on that rank's compute device), and the bytes moved (counted at
the point-to-point calls) equal ``resrl/exchange_bytes`` and the non-computing holders' rows only, not the batch.
"""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import verl_resrl.workers.resrl_groups as resrl_groups
from verl_resrl.algos.resrl import ResRLConfig
from verl_resrl.workers.resrl_exchange import plan_owners
from verl_resrl.workers.resrl_groups import (
    EXCHANGE_BYTES_METRIC,
    STATS_COLUMNS,
    STATS_FIELD,
    WEIGHTS_FIELD,
    RowRecord,
    group_weights,
    shard_weight_fields,
)

from test_resrl_engine import synthetic_rows  # noqa: E402 - the same mixed groups as the engine's group tests

CONFIG = ResRLConfig(min_pos_tokens=2)


def _worker(rank, world, init_file, layout, result_file):
    """One data-parallel rank: its share of the rows; records the PCA calls and the bytes it sends."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    sent, pca_calls = [], []
    real_batch, real_weights = dist.batch_isend_irecv, resrl_groups.resrl_token_weights

    def counting_batch(ops):
        sent.extend(op.tensor.numel() * op.tensor.element_size() for op in ops if op.op is dist.isend)
        return real_batch(ops)

    def spy_weights(hidden, mask, group_ids, positive, *args):
        pca_calls.append((group_ids[0], {str(t.device) for t in (hidden, mask, positive)}))
        return real_weights(hidden, mask, group_ids, positive, *args)

    dist.batch_isend_irecv, resrl_groups.resrl_token_weights = counting_batch, spy_weights
    rows = synthetic_rows()
    mine = [RowRecord(r.uid, r.key, r.positive, r.hidden, r.mask, (rank, j))
            for j, r in enumerate(rows[i] for i in layout[rank])]
    metrics = {}
    fields = shard_weight_fields(mine, CONFIG, dist.group.WORLD, torch.device("cpu"), metrics)
    torch.save({"rows": layout[rank], "weights": fields[WEIGHTS_FIELD].unbind(), "stats": fields[STATS_FIELD],
                "sent": sum(sent), "pca": pca_calls, "metrics": metrics}, f"{result_file}.{rank}")
    dist.destroy_process_group()


def run_two_ranks(tmp_path, layout):
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), layout, str(tmp_path / "out")), nprocs=2,
                       start_method="spawn")
    return [torch.load(f"{tmp_path / 'out'}.{rank}") for rank in range(2)]


def row_bytes(row: RowRecord) -> int:
    """What moving one row costs: float32 states + mask there, float32 weights + one stats row back."""
    r, d = row.hidden.shape
    return r * (d * 4 + 4) + (r + len(STATS_COLUMNS)) * 4


@pytest.mark.parametrize("layout_name", ["every_group_split", "one_group_split"])
def test_split_groups_get_the_single_rank_weights_with_targeted_traffic(tmp_path, layout_name):
    rows = synthetic_rows()
    n = len(rows)
    if layout_name == "every_group_split":  # every group has rows on both ranks (3 + 1 or 1 + 3 or 2 + 2)
        layout = [[i for i in range(n) if i % 3 != 0], [i for i in range(n) if i % 3 == 0]]
    else:  # g0..g1 on rank 0, g2..g3 on rank 1, except that one row of g1 sits on rank 1 and one of g3 on rank 0
        layout = [[0, 1, 2, 3, 4, 5, 6, 15], [7, 8, 9, 10, 11, 12, 13, 14]]
    single = shard_weight_fields(rows, CONFIG)
    got = run_two_ranks(tmp_path, layout)
    for rank in range(2):
        for j, i in enumerate(got[rank]["rows"]):
            assert torch.equal(got[rank]["weights"][j], single[WEIGHTS_FIELD].unbind()[i])
            assert torch.equal(got[rank]["stats"][j].nan_to_num(-9), single[STATS_FIELD][i].nan_to_num(-9))
    assert single[STATS_FIELD][:, 0].tolist() == [1.0] * n
    # every group's PCA ran once, on one rank, with all its tensors on that rank's compute device
    calls = [c for rank in range(2) for c in got[rank]["pca"]]
    assert sorted(uid for uid, _ in calls) == ["g0", "g1", "g2", "g3"]
    assert all(devices == {"cpu"} for _, devices in calls)
    # the bytes: counted at the send calls == the metric (same on both ranks) == the non-computing holders' rows
    holders = [{"rows": [(rows[i].uid, rows[i].positive, rows[i].hidden.shape[0], rows[i].key) for i in part]}
               for part in layout]
    owners = plan_owners(holders)
    split_uids = {rows[i].uid for i in range(n)} if layout_name == "every_group_split" else {"g1", "g3"}
    assert set(owners) == split_uids
    moved = sum(row_bytes(rows[i]) for rank, part in enumerate(layout) for i in part
                if owners.get(rows[i].uid, rank) != rank)
    sent = got[0]["sent"] + got[1]["sent"]
    assert sent == moved == got[0]["metrics"][EXCHANGE_BYTES_METRIC] == got[1]["metrics"][EXCHANGE_BYTES_METRIC]
    split_rows = sum(row_bytes(r) for r in rows if r.uid in split_uids)
    assert sent <= split_rows / 2  # the computing rank holds the larger share of each group's tokens
    if layout_name == "one_group_split":
        assert sent == row_bytes(rows[7]) + row_bytes(rows[15])  # two rows travel, the batch stays home


def test_plan_picks_the_holder_of_most_tokens_and_skips_unmixed_or_whole_groups():
    summaries = [{"rows": [("a", True, 5, 1), ("a", False, 1, 2), ("b", True, 3, 3), ("c", True, 2, 4)]},
                 {"rows": [("a", False, 2, 5), ("b", True, 9, 6), ("d", False, 1, 7), ("d", True, 1, 8)]}]
    # a: 6 tokens on rank 0, 2 on rank 1 -> rank 0; b: all positive -> no weights, not exchanged; c, d: whole
    assert plan_owners(summaries) == {"a": 0}
    tie = [{"rows": [("e", True, 3, 1)]}, {"rows": [("e", False, 3, 2)]}]
    assert plan_owners(tie) == {"e": 0}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_cpu_and_cuda_members_compute_on_the_cuda_device():
    """Half the members on CUDA, half host copies (as received): one PCA on the compute device, CPU's weights."""
    rows = synthetic_rows(groups=1)
    cpu = group_weights(rows, CONFIG, torch.device("cpu"))
    for r in rows[::2]:
        r.hidden, r.mask = r.hidden.cuda(), r.mask.cuda()
    gpu = group_weights(rows, CONFIG, torch.device("cuda"))
    for owner, (w, _) in gpu.items():
        assert w.device.type == "cuda"
        torch.testing.assert_close(w.cpu(), cpu[owner][0], rtol=0, atol=1e-5)
