"""ResRL's loss (workers/resrl_loss.py) against verl's stock ppo_loss and a hand-written PPO-clip reference loop.

Micro-batches are built the way verl's TransferQueue delivers them to the actor: jagged (nested) tensors, full-sequence
log-probs from the model, response-level old log-probs / advantages / masks, and the global-batch info
(dp_size, batch_num_tokens, global_batch_size) that verl's forward_backward_batch puts in.
"""

import math

import pytest
import torch

from verl.utils import tensordict_utils as tu
from verl.workers.config import FSDPActorConfig
from verl.workers.utils.losses import ppo_loss

from verl_resrl.algos.resrl import ResRLConfig
from verl_resrl.workers.resrl_groups import POSITIVE_FIELD, WEIGHTS_FIELD
from verl_resrl.workers.resrl_loss import make_resrl_loss, modulated_advantages, resrl_ppo_loss

CLIP, CLIP_C = 0.2, 3.0


def nested(rows):
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def actor_config(loss_agg_mode="token-mean"):
    return FSDPActorConfig(
        strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=1, ppo_mini_batch_size=2,
        loss_agg_mode=loss_agg_mode, clip_ratio=CLIP, clip_ratio_low=CLIP, clip_ratio_high=CLIP, clip_ratio_c=CLIP_C,
    )


def make_rows(seed=0, prompt_lens=(3, 4, 2, 5), resp_lens=(5, 3, 6, 4), positive=(1, 0, 0, 1)):
    """Per-row tensors of a mini-batch: log-probs, old log-probs, advantages (+ for positives), weights in [0.1, 1]."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for p, r, pos in zip(prompt_lens, resp_lens, positive):
        adv = (1.0 if pos else -1.0) * (0.5 + torch.rand(1, generator=g)).expand(r).clone()
        rows.append(dict(
            p=p, r=r, positive=float(pos),
            log_probs=-torch.rand(p + r, generator=g) * 3,  # model output over prompt + response
            old=-torch.rand(r, generator=g) * 3,
            adv=adv,
            w=0.1 + 0.9 * torch.rand(r, generator=g),
        ))
    return rows


def micro_batch(rows, total_tokens, dp_size=1, global_bsz=None):
    """verl-shaped micro-batch TensorDict and model_output for ``rows``."""
    data = tu.get_tensordict(
        {
            "prompts": nested([torch.zeros(x["p"], dtype=torch.long) for x in rows]),
            "responses": nested([torch.ones(x["r"], dtype=torch.long) for x in rows]),
            "response_mask": nested([torch.ones(x["r"], dtype=torch.long) for x in rows]),
            "old_log_probs": nested([x["old"] for x in rows]),
            "advantages": nested([x["adv"] for x in rows]),
            WEIGHTS_FIELD: nested([x["w"] for x in rows]),
            POSITIVE_FIELD: torch.tensor([x["positive"] for x in rows]),
        },
        {"dp_size": dp_size, "batch_num_tokens": total_tokens, "global_batch_size": global_bsz},
    )
    model_output = {"log_probs": nested([x["log_probs"] for x in rows])}
    return data, model_output


def reference_loss(rows, lam, total_tokens, use_resrl=True):
    """Token-mean PPO-clip with dual clip, written out token by token (spec eq. 4-5)."""
    total = 0.0
    for x in rows:
        for t in range(x["r"]):
            scale = (lam if x["positive"] else float(x["w"][t])) if use_resrl else 1.0
            a = float(x["adv"][t]) * scale
            ratio = math.exp(float(x["log_probs"][x["p"] - 1 + t]) - float(x["old"][t]))
            loss = max(-a * ratio, -a * min(max(ratio, 1 - CLIP), 1 + CLIP))
            if a < 0:
                loss = min(loss, -a * CLIP_C)
            total += loss
    return total / total_tokens


def test_modulated_loss_matches_token_by_token_reference():
    rows = make_rows()
    tokens = sum(x["r"] for x in rows)
    data, out = micro_batch(rows, tokens)
    loss, _ = resrl_ppo_loss(actor_config(), out, data, resrl={"pos_weight": 0.1})
    assert loss.item() == pytest.approx(reference_loss(rows, 0.1, tokens), rel=1e-5)


def test_neutral_modulation_is_bitwise_verls_stock_loss():
    """lambda = 1 and w = 1: our wrapper must add nothing to verl's ppo_loss (same aggregation, same metrics)."""
    rows = make_rows(seed=1)
    for x in rows:
        x["w"] = torch.ones(x["r"])
    tokens = sum(x["r"] for x in rows)
    data, out = micro_batch(rows, tokens)
    ours, our_metrics = make_resrl_loss(actor_config(), ResRLConfig(pos_weight=1.0))(model_output=out, data=data)
    stock, stock_metrics = ppo_loss(actor_config(), out, data)
    assert torch.equal(ours, stock)
    assert stock.item() == pytest.approx(reference_loss(rows, 1.0, tokens, use_resrl=False), rel=1e-5)
    assert metric_values(our_metrics) == metric_values(stock_metrics)


def metric_values(metrics):
    """verl Metric objects -> (aggregation, aggregated value) for comparison."""
    return {k: (v.aggregation, float(v.aggregate())) if hasattr(v, "aggregate") else v for k, v in metrics.items()}


def test_caller_micro_batch_keeps_original_advantages():
    rows = make_rows(seed=2)
    data, out = micro_batch(rows, sum(x["r"] for x in rows))
    before = data["advantages"].values().clone()
    resrl_ppo_loss(actor_config(), out, data, resrl={})
    assert torch.equal(data["advantages"].values(), before)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("split", [[4], [2, 2], [1, 1, 1, 1], [1, 3]])
def test_sum_over_micro_batches_equals_whole_mini_batch(mode, split):
    """verl's global-batch normalisation: the micro-batch split must not change the accumulated loss."""
    rows = make_rows(seed=3)
    tokens = sum(x["r"] for x in rows)
    whole, _ = resrl_ppo_loss(actor_config(mode), *reversed(micro_batch(rows, tokens, global_bsz=4)), resrl={})
    parts, start = [], 0
    for size in split:
        data, out = micro_batch(rows[start : start + size], tokens, global_bsz=4)
        parts.append(resrl_ppo_loss(actor_config(mode), out, data, resrl={})[0])
        start += size
    assert sum(parts).item() == pytest.approx(whole.item(), rel=1e-6)


def test_modulated_advantages_scales_positives_by_lambda_and_negatives_by_w():
    adv = nested([torch.tensor([2.0, 2.0]), torch.tensor([-1.0, -1.0, -1.0])])
    w = nested([torch.tensor([0.3, 0.9]), torch.tensor([0.1, 0.5, 1.0])])
    out = modulated_advantages(adv, w, torch.tensor([1.0, 0.0]), ResRLConfig(pos_weight=0.25))
    assert out.unbind()[0].tolist() == [0.5, 0.5]
    assert out.unbind()[1].tolist() == pytest.approx([-0.1, -0.5, -1.0])


def test_missing_fields_and_misaligned_weights_are_errors():
    rows = make_rows(seed=4)
    data, out = micro_batch(rows, 18)
    del data[WEIGHTS_FIELD]
    with pytest.raises(KeyError, match="resrl_weights"):
        resrl_ppo_loss(actor_config(), out, data, resrl={})
    with pytest.raises(ValueError, match="lengths"):
        modulated_advantages(nested([torch.ones(3)]), nested([torch.ones(2)]), torch.zeros(1), ResRLConfig())
