"""Multi-turn tool rollouts: only the model's own tokens (response_mask 1) reach ResRL's subspace, weights and loss.

Where the holes come from (verl 0.9.1, site-packages/verl/experimental/agent_loop/): in ``tool_agent_loop.py``,
``ToolAgentLoop._handle_processing_tools_state`` appends the tool messages through
``AgentLoopBase.ct_merge_context_msg`` (``agent_loop.py``), which calls ``ContinuousTokenBuilder.align_response_metadata``
(``verl/utils/tokenizer/continuous_token.py``): a merge of kind "context" (tool output) appends mask 0 and
log-prob 0.0 for every tool token (and for the boundary tokens the builder inserts), a merge of kind "assistant"
(``_handle_generating_state`` -> ``ct_merge_assistant_token``) appends mask 1 for the model's tokens.
``AgentLoopWorker._agent_loop_postprocess`` (``agent_loop.py``) then pads it and multiplies by the response
attention mask: ``response_mask`` is 1 for the model's tokens, 0 for tool output and padding, all in ONE response.

So a rollout here is [model | tool (mask 0) | model | tool (mask 0) | model], and this file proves, at each layer the
project has (the pure-torch core ``resrl_token_weights``; the worker's whole-group path ``_shard_rows`` ->
``shard_weight_fields``; the engine's capture on a tiny Qwen2 through verl's real forward; the loss
``resrl_ppo_loss``), that whatever sits at the mask-0 positions changes no weight, no subspace and no loss, that
mask-1 tokens do, and that the weights equal a plain per-group loop over the model tokens alone (a batch that simply
omits the holes). Tolerances: bitwise where the same model tokens go through the same code (the holes are dropped by
an index gather before any arithmetic); 1e-5 against the float64 reference loop (the project's float32 layer norm and
residuals, as in tests/test_resrl_algo.py); the engine against HF states per sequence: see that test.

Bug this file found (fixed in ``workers/resrl_groups.py::content_key``): the key that orders a group's rows hashed
the WHOLE response, tool output included, and that order picks the positive subsample above ``max_pos_tokens``;
changing only tool-output token ids moved weights by up to 0.9 (by float rounding, <= 4e-6, below the cap). The key's
order now follows the model tokens; see the groups and engine tests on token ids.
"""

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import verl_resrl.algos.resrl as resrl
from verl.utils import tensordict_utils as tu
from verl_resrl.algos.resrl import ResRLConfig, resrl_token_weights
from verl_resrl.workers.resrl_engine import ResRLFSDPEngine
from verl_resrl.workers.resrl_groups import (
    POSITIVE_FIELD,
    SETTINGS_KEY,
    STATS_FIELD,
    TIE_BITS,
    WEIGHTS_FIELD,
    content_key,
    shard_weight_fields,
)
from verl_resrl.workers.resrl_loss import resrl_ppo_loss
from test_resrl_engine import (  # noqa: F401  (fixtures: gloo_world, cpu_device)
    bare_engine,
    cpu_device,
    gloo_world,
    nested,
    settings,
    tiny_model,
)
from test_resrl_loss import actor_config, make_rows, micro_batch, reference_loss

D = 16
VOCAB = 64
POSITIVE_PATTERN = [(1, 0, 1, 0), (0, 1, 0, 0), (1, 1, 0, 1), (0, 0, 0, 0)]
"""Per prompt group, which of its 4 rollouts are correct: three mixed groups and one all-wrong (never weighted)."""


# ---------------------------------------------------------------------------------------------------- the batch


def segment_mask(g: torch.Generator, trailing_tool: bool = False) -> torch.Tensor:
    """One response's mask: [model | tool | model | tool | model] (optionally a last tool segment, as if truncated)."""
    lengths = [int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((3, 7), (2, 6), (2, 6), (2, 6), (3, 7))]
    if trailing_tool:
        lengths.append(3)
    return torch.cat([torch.full((n,), float(k % 2 == 0)) for k, n in enumerate(lengths)])


def multiturn_batch(seed=0, d=D, pattern=POSITIVE_PATTERN):
    """Core-layer batch: hidden (B, T, d), 0/1 mask with tool holes and right padding, token ids, uids, positive."""
    g = torch.Generator().manual_seed(seed)
    masks = [segment_mask(g) for grp in pattern for _ in grp]
    T = max(len(m) for m in masks) + 2  # right padding past every response: mask 0 too
    mask = torch.zeros(len(masks), T)
    for i, m in enumerate(masks):
        mask[i, : len(m)] = m
    return dict(
        hidden=torch.randn(len(masks), T, d, generator=g),
        mask=mask,
        lengths=[len(m) for m in masks],
        tokens=torch.randint(0, VOCAB, (len(masks), T), generator=g),
        uids=[f"p{k}" for k, grp in enumerate(pattern) for _ in grp],
        positive=torch.tensor([bool(p) for grp in pattern for p in grp]),
    )


def fill_holes(x: torch.Tensor, mask: torch.Tensor, how: str, seed=1) -> torch.Tensor:
    """A copy of x (B, T, ...) whose mask-0 entries are replaced: large noise, NaN, or (ints) other token ids."""
    out = x.clone()
    holes = mask == 0
    g = torch.Generator().manual_seed(seed)
    if how == "nan":
        out[holes] = float("nan")  # any hole reaching the arithmetic would turn weights or stats into NaN
    elif how == "ids":
        out[holes] = (out[holes] + torch.randint(1, VOCAB, out[holes].shape, generator=g)) % VOCAB
    else:
        out[holes] = 100.0 * torch.randn(out[holes].shape, generator=g)
    return out


def compacted(batch):
    """The same rollouts with the holes simply left out: each row's model tokens packed left, mask all ones there."""
    keep = [batch["mask"][i].bool() for i in range(len(batch["uids"]))]
    width = max(int(k.sum()) for k in keep)
    hidden = torch.zeros(len(keep), width, batch["hidden"].shape[-1])
    mask = torch.zeros(len(keep), width)
    for i, k in enumerate(keep):
        hidden[i, : int(k.sum())], mask[i, : int(k.sum())] = batch["hidden"][i][k], 1
    return hidden, mask


def model_states(batch) -> list[torch.Tensor]:
    """Per row, the states of its model tokens only (m_i, d): what ResRL may see."""
    return [batch["hidden"][i][batch["mask"][i].bool()] for i in range(len(batch["uids"]))]


# ------------------------------------------------------------------------------------------ independent expectation


def reference_loop(states: list[torch.Tensor], uids, positive, cfg: ResRLConfig):
    """Spec eqs. (1)-(3) per group over the model tokens alone (no mask in sight): float64 SVD, numpy quantiles.

    Returns (per-row weights (m_i,), per-row residuals (m_i,) or None). Positive rows, unmixed and skipped groups: 1.
    """
    weights = [torch.ones(len(s), dtype=torch.float64) for s in states]
    residuals = [None] * len(states)
    for g in dict.fromkeys(uids):
        rows = [i for i, u in enumerate(uids) if u == g]
        pos = [i for i in rows if positive[i]]
        neg = [i for i in rows if not positive[i]]
        if not pos or not neg:
            continue
        d = states[0].shape[-1]
        x = F.layer_norm(torch.cat([states[i] for i in pos]).double(), (d,), eps=1e-5)
        if x.shape[0] < cfg.min_pos_tokens:
            continue
        mu = x.mean(0)
        k = min(cfg.rank, x.shape[0] - 1, d)
        v = torch.linalg.svd(x - mu, full_matrices=False).Vh[:k].T  # rank-k PCA of the centred positives
        for i in neg:
            hc = F.layer_norm(states[i].double(), (d,), eps=1e-5) - mu
            residuals[i] = (hc - hc @ v @ v.T).pow(2).sum(-1) / d
        allr = torch.cat([residuals[i] for i in neg]).numpy()
        lo, hi = np.quantile(allr, [cfg.q_low, cfg.q_high])  # linear interpolation, numpy's default (spec eq. 3)
        for i in neg:
            if hi - lo < 1e-5:
                weights[i] = torch.full_like(residuals[i], (cfg.min_weight + 1) / 2)
            else:
                weights[i] = cfg.min_weight + (1 - cfg.min_weight) * ((residuals[i] - lo) / (hi - lo)).clamp(0, 1)
    return weights, residuals


@pytest.fixture
def bases(monkeypatch):
    """Records every subspace the core builds (basis, ranks, energy share), one entry per batched PCA call."""
    seen = []
    real = resrl.subspace_basis

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(tuple(t.clone() for t in out))
        return out

    monkeypatch.setattr(resrl, "subspace_basis", spy)
    return seen


def same_stats(a: dict, b: dict) -> bool:
    """Diagnostics dicts equal, NaN equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


def equal_bases(a, b) -> bool:
    """Two lists of recorded subspaces are bit for bit the same."""
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))


# ------------------------------------------------------------------------------------------------ the core (pure torch)


@pytest.mark.parametrize("how", ["noise", "nan"])
@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_core_holes_change_no_weight_and_no_subspace(bases, method, how):
    """Tool-output states (and padding) replaced by noise or NaN: every weight, stat and basis bit for bit the same."""
    b = multiturn_batch()
    cfg = ResRLConfig(rank=4, pca_method=method)
    w0, s0 = resrl_token_weights(b["hidden"], b["mask"], b["uids"], b["positive"], cfg)
    w1, s1 = resrl_token_weights(fill_holes(b["hidden"], b["mask"], how), b["mask"], b["uids"], b["positive"], cfg)
    assert len(bases) == 2 and equal_bases(bases[:1], bases[1:])
    assert torch.equal(w0, w1) and same_stats(s0, s1)
    assert s0["coverage"] == 1.0 and s0["groups_mixed"] == 3.0  # the three mixed groups really were weighted


@pytest.mark.parametrize("max_pos_tokens", [4096, 8])
def test_core_holes_are_the_same_as_omitted_tokens(max_pos_tokens):
    """The hole batch equals a batch holding only the model tokens (also when the positive subsample applies);
    the hole positions keep weight 1, as docs/algorithm.md defines for masked tokens."""
    b = multiturn_batch()
    cfg = ResRLConfig(rank=4, max_pos_tokens=max_pos_tokens)
    w, _ = resrl_token_weights(b["hidden"], b["mask"], b["uids"], b["positive"], cfg)
    hidden_c, mask_c = compacted(b)
    w_c, _ = resrl_token_weights(hidden_c, mask_c, b["uids"], b["positive"], cfg)
    for i in range(len(b["uids"])):
        keep = b["mask"][i].bool()
        assert torch.equal(w[i][keep], w_c[i][: int(keep.sum())])
        assert torch.all(w[i][~keep] == 1.0)


def test_core_matches_the_reference_loop_over_model_tokens():
    """Independent expectation: a per-group loop over the model tokens alone (holes never handed to it)."""
    b = multiturn_batch(seed=2)
    cfg = ResRLConfig(rank=4, pca_method="exact")
    w, _ = resrl_token_weights(b["hidden"], b["mask"], b["uids"], b["positive"], cfg)
    want, _ = reference_loop(model_states(b), b["uids"], b["positive"], cfg)
    negatives = 0
    for i in range(len(b["uids"])):
        keep = b["mask"][i].bool()
        torch.testing.assert_close(w[i][keep].double(), want[i], rtol=0, atol=1e-5)
        negatives += int((w[i][keep] < 1).sum())
    assert negatives > 20  # the comparison covers real weights, not only 1s


def interior_negative_token(w, batch, group: str):
    """(row, position) of a model token of a wrong rollout of ``group`` whose weight is strictly inside (xi, 1)."""
    for i, u in enumerate(batch["uids"]):
        if u == group and not batch["positive"][i]:
            for t in batch["mask"][i].nonzero().flatten().tolist():
                if 0.2 < w[i, t] < 0.95:
                    return i, t
    raise AssertionError(f"no interior weight in group {group}")


def group_rows(batch, group: str) -> list[int]:
    """Row indices of a prompt group."""
    return [i for i, u in enumerate(batch["uids"]) if u == group]


def test_core_one_wrong_model_token_changes_its_weight_and_only_its_group():
    """Its state set to the group's largest-residual negative token: its weight becomes 1 (R = max >= Q_hi)."""
    b = multiturn_batch()
    cfg = ResRLConfig(rank=4, pca_method="exact")
    w0, _ = resrl_token_weights(b["hidden"], b["mask"], b["uids"], b["positive"], cfg)
    i, t = interior_negative_token(w0, b, "p0")
    _, res = reference_loop(model_states(b), b["uids"], b["positive"], cfg)
    # the largest residual of the group's wrong model tokens, mapped back to (row, position)
    cand = [(float(res[j][k]), j, int(b["mask"][j].nonzero()[k])) for j in group_rows(b, "p0") if res[j] is not None
            for k in range(len(res[j]))]
    _, j, s = max(cand)
    b["hidden"][i, t] = b["hidden"][j, s]
    w1, _ = resrl_token_weights(b["hidden"], b["mask"], b["uids"], b["positive"], cfg)
    assert w1[i, t].item() == pytest.approx(1.0, abs=1e-6) and w0[i, t] < 0.95
    others = [r for r in range(len(b["uids"])) if b["uids"][r] != "p0"]
    assert torch.equal(w1[others], w0[others])
    want, _ = reference_loop(model_states(b), b["uids"], b["positive"], cfg)
    for r in group_rows(b, "p0"):
        torch.testing.assert_close(w1[r][b["mask"][r].bool()].double(), want[r], rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_core_one_correct_model_token_moves_its_groups_subspace_only(bases, method):
    """A correct rollout's model-token state changed: that group's basis and its wrong rollouts' weights move;
    the other groups' bases and weights stay bit for bit."""
    b = multiturn_batch()
    cfg = ResRLConfig(rank=4, pca_method=method, group_chunk=1)  # one PCA call per group: bases compared per group
    w0, _ = resrl_token_weights(b["hidden"], b["mask"], b["uids"], b["positive"], cfg)
    i = next(r for r in group_rows(b, "p2") if b["positive"][r])
    t = int(b["mask"][i].nonzero()[-1])  # a model token of the last model segment
    b["hidden"][i, t] = 3.0 * torch.randn(D, generator=torch.Generator().manual_seed(9))
    w1, _ = resrl_token_weights(b["hidden"], b["mask"], b["uids"], b["positive"], cfg)
    before, after = bases[:3], bases[3:]
    changed = [not equal_bases([p], [q]) for p, q in zip(before, after)]
    assert len(after) == 3 and sum(changed) == 1
    wrong = [r for r in group_rows(b, "p2") if not b["positive"][r]]
    assert (w1[wrong] - w0[wrong]).abs().max() > 1e-3
    assert torch.all(w1[b["positive"]] == 1.0)
    others = [r for r in range(len(b["uids"])) if b["uids"][r] != "p2"]
    assert torch.equal(w1[others], w0[others])


# ------------------------------------------------------------------ the worker's group path (_shard_rows -> weights)


def shard_fields(batch):
    """The batch fields the engine's _shard_rows reads: jagged responses (model + tool tokens) and response_mask."""
    n = batch["lengths"]
    scores = [torch.zeros(r) for r in n]
    for i, p in enumerate(batch["positive"].tolist()):
        scores[i][-1] = 1.0 if p else -1.0
    return tu.get_tensordict({
        "responses": nested([batch["tokens"][i, :r] for i, r in enumerate(n)]),
        "response_mask": nested([batch["mask"][i, :r].long() for i, r in enumerate(n)]),
        "rm_scores": nested(scores),
        "uid": list(batch["uids"]),
    })


def group_path(batch, cfg: ResRLConfig):
    """The worker's code from captured states to fields: ResRLFSDPEngine._shard_rows, then shard_weight_fields."""
    rows = bare_engine(ResRLFSDPEngine, None)._shard_rows(
        shard_fields(batch), [batch["hidden"][i, :r] for i, r in enumerate(batch["lengths"])])
    return shard_weight_fields(rows, cfg)


def assert_same_fields(a: dict, b: dict):
    """WEIGHTS/POSITIVE/STATS fields bit for bit (NaN stats equal)."""
    assert torch.equal(a[WEIGHTS_FIELD].values(), b[WEIGHTS_FIELD].values())
    assert torch.equal(a[POSITIVE_FIELD], b[POSITIVE_FIELD])
    assert torch.equal(a[STATS_FIELD].nan_to_num(-7.0), b[STATS_FIELD].nan_to_num(-7.0))


@pytest.mark.parametrize("max_pos_tokens", [4096, 8])
@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_groups_hole_states_and_hole_token_ids_change_nothing(method, max_pos_tokens):
    """Tool-output states AND tool-output token ids (which the path hashes for the canonical row order) changed:
    fields bit for bit, with and without the positive subsample (max_pos_tokens 8 < the groups' positive tokens)."""
    b = multiturn_batch()
    cfg = ResRLConfig(rank=4, pca_method=method, max_pos_tokens=max_pos_tokens)
    base = group_path(b, cfg)
    assert base[STATS_FIELD][:, 0].tolist() == [1.0] * 12 + [0.0] * 4  # mixed groups weighted, all-wrong not
    for how in ("noise", "nan"):
        assert_same_fields(group_path({**b, "hidden": fill_holes(b["hidden"], b["mask"], how)}, cfg), base)
    for seed in range(4):  # several draws: one draw could leave the rows' order unchanged by chance
        assert_same_fields(group_path({**b, "tokens": fill_holes(b["tokens"], b["mask"], "ids", seed)}, cfg), base)


def test_groups_equal_a_shard_without_holes_and_the_reference_loop():
    """Rows with holes vs the same rollouts with the tool output omitted (responses = model tokens only)."""
    b = multiturn_batch(seed=3)
    cfg = ResRLConfig(rank=4, pca_method="exact")
    fields = group_path(b, cfg)
    hidden_c, mask_c = compacted(b)
    kept = [int(b["mask"][i].sum()) for i in range(len(b["uids"]))]
    tokens_c = torch.zeros(hidden_c.shape[:2], dtype=torch.long)
    for i, m in enumerate(kept):
        tokens_c[i, :m] = b["tokens"][i][b["mask"][i].bool()]
    plain = group_path({**b, "hidden": hidden_c, "mask": mask_c, "tokens": tokens_c, "lengths": kept}, cfg)
    want, _ = reference_loop(model_states(b), b["uids"], b["positive"], cfg)
    for i, (w, wc) in enumerate(zip(fields[WEIGHTS_FIELD].unbind(), plain[WEIGHTS_FIELD].unbind())):
        keep = b["mask"][i, : b["lengths"][i]].bool()
        assert torch.equal(w[keep], wc) and torch.all(w[~keep] == 1.0)
        torch.testing.assert_close(w[keep].double(), want[i], rtol=0, atol=1e-5)
    assert torch.equal(fields[STATS_FIELD].nan_to_num(-7.0), plain[STATS_FIELD].nan_to_num(-7.0))


def test_groups_one_wrong_and_one_correct_model_token():
    """Through the group path: a wrong token's state moves its weight; a correct token's state moves its group's
    wrong rollouts; the other groups stay bit for bit."""
    b = multiturn_batch()
    cfg = ResRLConfig(rank=4, pca_method="exact")
    w0 = group_path(b, cfg)[WEIGHTS_FIELD].unbind()
    dense = torch.ones(b["mask"].shape)
    for i, w in enumerate(w0):
        dense[i, : len(w)] = w
    i, t = interior_negative_token(dense, b, "p0")
    h = b["hidden"].clone()
    h[i, t] = 10.0 * torch.randn(D, generator=torch.Generator().manual_seed(4))
    j = next(r for r in group_rows(b, "p2") if b["positive"][r])
    h[j, int(b["mask"][j].nonzero()[0])] = 10.0 * torch.randn(D, generator=torch.Generator().manual_seed(5))
    w1 = group_path({**b, "hidden": h}, cfg)[WEIGHTS_FIELD].unbind()
    assert abs(float(w1[i][t]) - float(w0[i][t])) > 1e-3
    for r in range(len(w0)):
        if b["uids"][r] == "p2" and not b["positive"][r]:
            assert (w1[r] - w0[r]).abs().max() > 1e-4
        elif b["uids"][r] not in ("p0", "p2"):
            assert torch.equal(w1[r], w0[r])
    want, _ = reference_loop(model_states({**b, "hidden": h}), b["uids"], b["positive"], cfg)
    for r in range(len(w1)):
        torch.testing.assert_close(w1[r][b["mask"][r, : b["lengths"][r]].bool()].double(), want[r], rtol=0, atol=1e-5)


def test_content_key_orders_rows_by_their_model_tokens():
    """The key the path orders a group's rows by: without holes the plain blake2b hash of the tokens (as before);
    with holes its high bits are the model tokens' hash, the tool output only breaks ties."""
    g = torch.Generator().manual_seed(8)
    ids = torch.randint(0, VOCAB, (14,), generator=g)
    mask = torch.tensor([1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1])
    plain = int.from_bytes(hashlib.blake2b(ids.numpy().astype("int64").tobytes(), digest_size=8).digest(), "little")
    assert content_key(ids) == content_key(ids, torch.ones(14)) == plain >> 1
    other_tool = ids.clone()
    other_tool[mask == 0] = (other_tool[mask == 0] + 1) % VOCAB
    high = lambda k: k >> TIE_BITS  # noqa: E731
    assert high(content_key(ids, mask)) == high(content_key(other_tool, mask)) == high(content_key(ids[mask.bool()]))
    assert content_key(ids, mask) != content_key(other_tool, mask)  # a tie of model tokens is still broken


# ------------------------------------------------------------ the engine: capture on verl's real forward, tiny Qwen2

ENGINE_PATTERN = [(1, 0, 1, 0), (0, 1, 0, 1)]


def engine_sequences(seed=5, trailing_row=None):
    """Prompts, responses and multi-turn masks for the engine (two mixed groups of four)."""
    g = torch.Generator().manual_seed(seed)
    masks = [segment_mask(g, trailing_tool=(i == trailing_row)) for i in range(8)]
    prompts = [torch.randint(0, VOCAB, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g) for _ in masks]
    responses = [torch.randint(0, VOCAB, (len(m),), generator=g) for m in masks]
    return prompts, responses, masks


def engine_shard(prompts, responses, masks, cfg: dict, rmpad=True, micro=2):
    """The old-log-prob pass's TensorDict (agent-loop layout) with tool holes in response_mask / loss_mask."""
    positive = [p for grp in ENGINE_PATTERN for p in grp]
    ids = [torch.cat([p, r]) for p, r in zip(prompts, responses)]
    scores = [torch.zeros(len(r)) for r in responses]
    for i, p in enumerate(positive):
        scores[i][-1] = 1.0 if p else -1.0
    resp_mask = [m.long() for m in masks]
    extra = {"temperature": 1.0, "use_remove_padding": rmpad, "use_dynamic_bsz": False, "use_fused_kernels": False,
             "micro_batch_size_per_gpu": micro, "max_token_len_per_gpu": 64, "calculate_entropy": True,
             SETTINGS_KEY: settings(-2, **cfg)}
    return tu.get_tensordict(
        {"input_ids": nested(ids), "position_ids": nested([torch.arange(len(x)) for x in ids]),
         "prompts": nested(prompts), "responses": nested(responses), "response_mask": nested(resp_mask),
         "loss_mask": nested(resp_mask), "rm_scores": nested(scores), "uid": [f"q{i // 4}" for i in range(8)]},
        extra,
    )


def producing_positions(micro_batch, packed: bool) -> list[torch.Tensor]:
    """Per sequence of a micro-batch: the index (into the captured activation) of the state that produced each
    MODEL token (the log-prob shift: response token t of a sequence of length L with r response tokens was produced
    at position L - r - 1 + t). Written from the shift rule, not from the engine's code."""
    lens = micro_batch["input_ids"].offsets().diff().tolist()
    starts = micro_batch["input_ids"].offsets()[:-1].tolist() if packed else [0] * len(lens)
    out = []
    for s, L, m in zip(starts, lens, micro_batch["response_mask"].unbind()):
        t = m.nonzero().flatten()
        out.append(s + L - len(m) - 1 + t)
    return out


def scramble_capture(monkeypatch):
    """Replaces every captured activation row except those that produced model tokens (prompt, tool-output and
    padding rows) by noise before the engine cuts it, so only model-token states can be what reaches the weights."""
    real = ResRLFSDPEngine._response_hidden
    g = torch.Generator().manual_seed(11)

    def scrambled(self, captured, micro_batch):
        packed = bool(tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True))
        out = 50.0 * torch.randn(captured.shape, generator=g, dtype=captured.dtype)
        for j, pos in enumerate(producing_positions(micro_batch, packed)):
            row = 0 if packed else j  # packed: (1, nnz, d); right-padded: (B, S, d)
            out[row, pos] = captured[row, pos]
        return real(self, out, micro_batch)

    monkeypatch.setattr(ResRLFSDPEngine, "_response_hidden", scrambled)


@pytest.mark.parametrize("rmpad", [True, False])
def test_engine_only_model_token_states_reach_the_weights(rmpad, monkeypatch):
    """verl's forward path (packed and right-padded): weights with every non-model-token state scrambled are bit for
    bit the plain run's; the log-probs are untouched (the capture only reads)."""
    seqs = engine_sequences()
    model = tiny_model()
    cfg = {"rank": 4, "pca_method": "exact"}
    plain = bare_engine(ResRLFSDPEngine, model).infer_batch(engine_shard(*seqs, cfg, rmpad))["model_output"]
    scramble_capture(monkeypatch)
    scrambled = bare_engine(ResRLFSDPEngine, model).infer_batch(engine_shard(*seqs, cfg, rmpad))["model_output"]
    assert torch.equal(scrambled[WEIGHTS_FIELD].values(), plain[WEIGHTS_FIELD].values())
    assert torch.equal(scrambled["log_probs"].values(), plain["log_probs"].values())
    assert plain[STATS_FIELD][:, 0].tolist() == [1.0] * 8
    for w, m in zip(plain[WEIGHTS_FIELD].unbind(), seqs[2]):
        assert torch.all(w[m == 0] == 1.0)


def hf_model_token_states(model, prompts, responses, masks, layer=-2) -> list[torch.Tensor]:
    """HF output_hidden_states[layer] of each sequence alone, at the positions that produced its model tokens."""
    out = []
    with torch.no_grad():
        for p, r, m in zip(prompts, responses, masks):
            hs = model(input_ids=torch.cat([p, r])[None], output_hidden_states=True).hidden_states[layer][0]
            out.append(hs[len(p) - 1 + m.nonzero().flatten()])
    return out


def test_engine_weights_equal_the_reference_loop_on_hf_states():
    """Independent expectation end to end: HF states of each sequence alone, model tokens only, the reference loop.

    Tolerance 1e-5 (measured: 9.7e-7): the packed forward's states differ from per-sequence HF states by float noise
    (CPU sdpa over packed sequences; test_resrl_engine.py bounds them by 1e-6), which eq. (3) amplifies by
    (1 - xi) / (Q_hi - Q_lo), plus float32 vs float64 in the PCA; a hole leaking in moves weights by 1e-2 or more."""
    prompts, responses, masks = engine_sequences(seed=6)
    model = tiny_model()
    cfg = ResRLConfig(rank=4, pca_method="exact", min_pos_tokens=2)
    out = bare_engine(ResRLFSDPEngine, model).infer_batch(
        engine_shard(prompts, responses, masks, {"rank": 4, "pca_method": "exact"}))["model_output"]
    positive = torch.tensor([bool(p) for grp in ENGINE_PATTERN for p in grp])
    want, _ = reference_loop(hf_model_token_states(model, prompts, responses, masks),
                             [f"q{i // 4}" for i in range(8)], positive, cfg)
    for w, m, ref in zip(out[WEIGHTS_FIELD].unbind(), masks, want):
        torch.testing.assert_close(w[m.bool()].double(), ref, rtol=0, atol=1e-5)
        assert torch.all(w[m == 0] == 1.0)
    assert sum(int((w < 1).sum()) for w in want) > 10


def test_engine_trailing_tool_output_token_ids_change_no_weight():
    """A rollout cut off inside a tool output: changing those token ids changes only mask-0 states (causal
    attention: nothing before them) and the content key the path orders a group's rows by; with the positive
    subsample on (max_pos_tokens 6), the weights must still be bit for bit the same."""
    row = 2
    prompts, responses, masks = engine_sequences(seed=7, trailing_row=row)
    assert masks[row][-3:].tolist() == [0.0, 0.0, 0.0]
    cfg = {"rank": 4, "max_pos_tokens": 6}
    model = tiny_model()
    base = bare_engine(ResRLFSDPEngine, model).infer_batch(engine_shard(prompts, responses, masks, cfg))
    for shift in (1, 2, 3):
        changed = [r.clone() for r in responses]
        changed[row][-3:] = (changed[row][-3:] + shift) % VOCAB
        out = bare_engine(ResRLFSDPEngine, model).infer_batch(engine_shard(prompts, changed, masks, cfg))
        assert torch.equal(out["model_output"][WEIGHTS_FIELD].values(), base["model_output"][WEIGHTS_FIELD].values())


# ----------------------------------------------------------------------------------------------------- the loss


def holey_rows(seed=0):
    """test_resrl_loss's rows with a multi-turn response_mask (two tool holes per row)."""
    rows = make_rows(seed=seed, resp_lens=(12, 10, 13, 11))
    g = torch.Generator().manual_seed(seed + 100)
    for x in rows:
        m = torch.ones(x["r"])
        a = int(torch.randint(1, 3, (1,), generator=g))
        m[a: a + 2] = 0
        m[x["r"] - 5: x["r"] - 3] = 0  # second hole; the response still ends with model tokens
        x["mask"] = m
    return rows


def holey_micro_batch(rows):
    """micro_batch of test_resrl_loss with the multi-turn response_mask; batch_num_tokens counts model tokens
    (verl's forward_backward_batch: loss_mask.sum())."""
    tokens = int(sum(x["mask"].sum() for x in rows))
    data, out = micro_batch(rows, tokens)
    data["response_mask"] = nested([x["mask"].long() for x in rows])
    lp_values = torch.cat([x["log_probs"] for x in rows]).requires_grad_(True)
    out = {"log_probs": torch.nested.nested_tensor_from_jagged(lp_values, data["prompts"].offsets()
                                                               + data["responses"].offsets())}
    return data, out, lp_values, tokens


def perturb_holes(rows, seed=3):
    """Copies of the rows with advantages, ResRL weights, old and new log-probs changed at the holes only."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for x in rows:
        y = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in x.items()}
        h = y["mask"] == 0
        y["adv"][h] = 5.0 * torch.randn(int(h.sum()), generator=g)
        y["w"][h] = torch.tensor([0.0, 7.0]).repeat(int(h.sum()))[: int(h.sum())]
        y["old"][h] -= torch.rand(int(h.sum()), generator=g)
        y["log_probs"][y["p"] - 1:][: y["r"]][h] += torch.rand(int(h.sum()), generator=g)
        out.append(y)
    return out


def omitted(rows):
    """The rows with the hole tokens left out (reference_loss reads response token t at log_probs[p - 1 + t])."""
    out = []
    for x in rows:
        k = x["mask"].bool()
        out.append(dict(p=x["p"], r=int(k.sum()), positive=x["positive"], adv=x["adv"][k], w=x["w"][k],
                        old=x["old"][k], log_probs=torch.cat([x["log_probs"][: x["p"] - 1],
                                                              x["log_probs"][x["p"] - 1: x["p"] - 1 + x["r"]][k]])))
    return out


def test_loss_and_gradient_ignore_everything_at_the_holes():
    """resrl_ppo_loss (verl's ppo_loss under it): advantages, ResRL weights and log-probs at mask-0 positions
    perturbed -> the same loss and log-prob gradient bit for bit, zero gradient at the holes; the value equals the
    token-by-token PPO-clip reference over the model tokens alone."""
    rows = holey_rows()
    results = []
    for variant in (rows, perturb_holes(rows)):
        data, out, lp, tokens = holey_micro_batch(variant)
        loss, _ = resrl_ppo_loss(actor_config(), out, data, resrl={"pos_weight": 0.1})
        loss.backward()
        results.append((loss.detach(), lp.grad.clone()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    for x, grad in zip(rows, results[0][1].split([x["p"] + x["r"] for x in rows])):
        assert torch.all(grad[x["p"] - 1: x["p"] - 1 + x["r"]][x["mask"] == 0] == 0)
        assert torch.any(grad[x["p"] - 1: x["p"] - 1 + x["r"]][x["mask"] == 1] != 0)  # clipped tokens give 0
    assert results[0][0].item() == pytest.approx(reference_loss(omitted(rows), 0.1, tokens), rel=1e-5)
