"""What the capture holds (workers/resrl_engine.py): ``resrl/captured_bytes``, ``algorithm.resrl.offload_states``, and
a Ulysses SP rank other than the source keeping nothing and computing nothing (verl keeps only the source's outputs).

verl's real forward path on the bare engine of tests/test_resrl_engine.py (tiny Qwen2, one gloo process, CPU).
"""

import pytest
import torch

import verl_resrl.workers.resrl_engine as resrl_engine
from verl_resrl.workers.resrl_engine import CAPTURED_BYTES_METRIC, ResRLFSDPEngine, _ShardStore
from verl_resrl.workers.resrl_groups import STATS_FIELD, WEIGHTS_FIELD
from test_resrl_engine import RESP_LENS, bare_engine, cpu_device, gloo_world, settings, shard, tiny_model  # noqa: F401

HIDDEN = 32  # tiny_model's hidden size


def run(offload=False, src=True, monkeypatch=None):
    engine = bare_engine(ResRLFSDPEngine, tiny_model())
    if not src:
        monkeypatch.setattr(engine, "is_mp_src_rank_with_outputs", lambda: False)
    return engine.infer_batch(shard({**settings(), "offload_states": offload}, 2))


def test_captured_bytes_is_the_response_states_of_the_shard():
    """float32 states of every response token: sum(response lengths) x d x 4 bytes, offloaded or not."""
    expected = sum(RESP_LENS) * HIDDEN * 4
    plain, offloaded = run(False), run(True)
    assert plain["metrics"][CAPTURED_BYTES_METRIC] == expected == offloaded["metrics"][CAPTURED_BYTES_METRIC]
    for key in (WEIGHTS_FIELD, "log_probs"):
        assert torch.equal(plain["model_output"][key].values(), offloaded["model_output"][key].values())
    assert torch.equal(plain["model_output"][STATS_FIELD].nan_to_num(-9),
                       offloaded["model_output"][STATS_FIELD].nan_to_num(-9))
    assert plain["model_output"][STATS_FIELD][:, 0].sum() > 0  # some group was weighted: the comparison means something


def test_non_source_sp_rank_keeps_no_states_and_computes_no_weights(monkeypatch):
    calls = []
    monkeypatch.setattr(resrl_engine, "shard_weight_fields", lambda *a, **k: calls.append(a) or {})
    out = run(src=False, monkeypatch=monkeypatch)
    assert calls == [] and CAPTURED_BYTES_METRIC not in out["metrics"]
    weights = out["model_output"][WEIGHTS_FIELD]
    assert weights.offsets().diff().tolist() == RESP_LENS and torch.equal(weights.values(), torch.ones(sum(RESP_LENS)))
    assert out["model_output"][STATS_FIELD][:, 0].tolist() == [0.0] * len(RESP_LENS)
    assert torch.equal(out["model_output"]["log_probs"].values(), run()["model_output"]["log_probs"].values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offloaded_states_are_pinned_host_copies_and_the_device_is_remembered():
    store = _ShardStore(2, offload=True)
    states = [torch.randn(3, 8, device="cuda"), torch.randn(5, 8, device="cuda")]
    store.put(torch.tensor([1, 0]), states)
    assert store.device.type == "cuda" and store.bytes == 8 * 8 * 4
    rows = store.complete()
    assert all(h.device.type == "cpu" and h.is_pinned() for h in rows)
    assert torch.equal(rows[1], states[0].cpu()) and torch.equal(rows[0], states[1].cpu())
