"""Sign-based baselines of arXiv 2506.01347 (Zhu et al., "The Surprising Effectiveness of Negative Reinforcement").

PSR trains on positive samples only, NSR on negative samples only, W-REINFORCE weights positives by lambda. No group
normalisation; a rollout is correct when its sequence score (sum of token rewards) is > 0, so both reward
conventions, {0, 1} and {-1, +1}, give the same advantages. Pure torch: no verl import.
"""

import torch

NSR_DEFAULT_LAMBDA = 0.1  # W-REINFORCE's lambda in arXiv 2506.01347 (and ResRL's positive weight)


def signed_outcome_advantages(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor, correct_value: float, wrong_value: float
) -> torch.Tensor:
    """Broadcast correct_value / wrong_value over each rollout's valid tokens (B, T)."""
    if token_level_rewards.shape != response_mask.shape:
        raise ValueError(
            f"token_level_rewards {tuple(token_level_rewards.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must have the same shape (B, T)"
        )
    correct = token_level_rewards.sum(dim=-1) > 0
    per_row = torch.where(correct, correct_value, wrong_value).to(torch.float32)
    return per_row[:, None] * response_mask.to(torch.float32)


def psr_advantages(token_level_rewards, response_mask) -> torch.Tensor:
    """PSR: +1 for correct rollouts, 0 for wrong ones."""
    return signed_outcome_advantages(token_level_rewards, response_mask, 1.0, 0.0)


def nsr_advantages(token_level_rewards, response_mask) -> torch.Tensor:
    """NSR: 0 for correct rollouts, -1 for wrong ones."""
    return signed_outcome_advantages(token_level_rewards, response_mask, 0.0, -1.0)


def w_reinforce_advantages(token_level_rewards, response_mask, lam: float = NSR_DEFAULT_LAMBDA) -> torch.Tensor:
    """W-REINFORCE: +lambda for correct rollouts, -1 for wrong ones."""
    if lam < 0:
        raise ValueError(f"w_reinforce lambda must be >= 0, got {lam}")
    return signed_outcome_advantages(token_level_rewards, response_mask, float(lam), -1.0)
