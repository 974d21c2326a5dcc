"""``python -m verl_resrl.eval.agents``: play agent-task episodes (TextWorldExpress, ScienceWorld) with a model and
report success Avg@n, success Pass@k, mean score, turns, invalid actions and lost episodes.

    python -m verl_resrl.eval.agents model_path=CKPT/global_step_40/actor \\
        'tasks=[data/twx_twc_tiny_dev.parquet]' output_dir=out/agents episodes=4 max_tasks=50

Every episode is played by the trainer's own agent loop, ``TextEnvAgentLoop`` (``verl_resrl.agents.agent_loop``),
instantiated here as verl's ``AgentLoopWorker`` instantiates it, so the message building, the action parsing
(``actions.py``), the turn / token budgets (``AgentOptions``, ``response_length``) and the environment pool
(``env_pool.EnvPool``) are the loop's, not a copy. Only the model behind the loop's ``server_manager.generate``
differs: the eval CLI's own backends (``generation.py``: the transformers engine on CPU, vLLM's offline engine when a
GPU is visible). Two thin wrappers, both outside the loop's file: a subclass that keeps the finished episode's state
(``_output``), and a proxy of the pool's episodes that records what the environment was sent and answered.

Each model turn is sampled with its own seed, derived from (``sampling.seed``, task id, episode, turn): an episode
depends on its task id and index only, not on the order or concurrency of the others. Options:
``verl_resrl/eval/config/eval_agents.yaml`` and docs/evaluation.md ("Agent tasks").
"""

from __future__ import annotations

from verl_resrl.eval.agents.options import InputError, default_config
from verl_resrl.eval.agents.policy import turn_seed
from verl_resrl.eval.agents.run import run_agent_eval

__all__ = ["InputError", "default_config", "run_agent_eval", "turn_seed"]
