"""What answers the agent loop's model turns in the eval: the transformers or vLLM backend behind verl's
server-manager contract, each turn with its own seed, concurrent episodes' turns batched on one thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
from typing import Protocol

from omegaconf import DictConfig, OmegaConf

BATCH_WAIT_S = 0.005  # how long the batcher waits for other episodes' turns before it calls the model


@dataclasses.dataclass(frozen=True)
class TurnRequest:
    """One model turn the loop asks for: the conversation so far as token ids, and where it stands."""

    task_id: str
    episode: int  # 0 .. episodes-1
    turn: int  # 0-based model turn within the episode
    prompt_ids: list[int]
    max_tokens: int  # the loop's cap: min(max_tokens_per_turn, what is left of response_length)
    temperature: float
    top_p: float
    top_k: int
    seed: int


class Policy(Protocol):
    """What answers the loop's turns: a model backend, or (in tests) a scripted player."""

    def generate(self, requests: list[TurnRequest]) -> list:
        """One ``GenerationResult`` (``verl_resrl.workers.hf_generation``: new token ids, EOS included) each."""


def turn_seed(base_seed: int, task_id: str, episode: int, turn: int) -> int:
    """A reproducible seed for one model turn, independent of the order the episodes are played in."""
    digest = hashlib.sha256(f"{base_seed}:{task_id}:{episode}:{turn}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31 - 1)


class HFPolicy:
    """The eval CLI's transformers backend (``generation.HFBackend``), one request at a time: each turn is then
    sampled with its own seed exactly (the engine seeds a whole batch with one generator)."""

    def __init__(self, backend):
        self.backend = backend

    def generate(self, requests: list[TurnRequest]) -> list:
        from verl_resrl.eval.generation import SamplingSettings

        out = []
        for r in requests:
            settings = SamplingSettings(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                        max_new_tokens=r.max_tokens, seed=r.seed)
            out.append(self.backend.sample([r.prompt_ids], [1], [r.seed], settings, False)[0][0])
        return out


class VLLMPolicy:
    """vLLM's offline engine (``generation.VLLMBackend``): every waiting turn in one call, each with its own seed
    and token cap (vLLM seeds per request)."""

    def __init__(self, backend):
        self.backend = backend

    def generate(self, requests: list[TurnRequest]) -> list:
        from vllm import SamplingParams

        from verl_resrl.eval.generation import _from_vllm
        from verl_resrl.workers.hf_generation import GenerationResult

        params = [SamplingParams(n=1, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                 max_tokens=r.max_tokens, seed=r.seed) for r in requests]
        outputs = self.backend.llm.generate([{"prompt_token_ids": list(r.prompt_ids)} for r in requests], params,
                                            use_tqdm=False)
        return [_from_vllm(o.outputs[0], False, GenerationResult) for o in outputs]


class _Batcher:
    """Collects the turns that concurrent episodes ask for and hands them to the policy together, on one thread
    (the model is not shared between threads); the environments' steps go on meanwhile."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.pending: list[tuple[TurnRequest, asyncio.Future]] = []
        self.wake = asyncio.Event()
        self.thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="resrl-eval-policy")
        self.task = asyncio.get_running_loop().create_task(self._serve())
        self.calls = 0

    async def submit(self, request: TurnRequest):
        future = asyncio.get_running_loop().create_future()
        self.pending.append((request, future))
        self.wake.set()
        return await future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            await asyncio.sleep(BATCH_WAIT_S)
            batch, self.pending = self.pending, []
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.thread, self.policy.generate, [r for r, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the policy returned {len(results)} results for {len(batch)} turns")
            except Exception as exc:  # noqa: BLE001 - each waiting episode gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.calls += 1
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    def close(self) -> None:
        self.task.cancel()
        self.thread.shutdown(wait=False)


class _EpisodeServer:
    """verl's server-manager contract (``generate`` -> ``TokenOutput``) for one episode, answered by the batcher."""

    def __init__(self, batcher: _Batcher, task_id: str, episode: int, base_seed: int):
        self.batcher, self.task_id, self.episode, self.base_seed = batcher, task_id, episode, base_seed
        self.turn = 0
        self.finish_reasons: list[str] = []

    async def generate(self, request_id=None, *, prompt_ids, sampling_params, **kwargs):  # noqa: ARG002
        from verl.workers.rollout.replica import TokenOutput

        request = TurnRequest(task_id=self.task_id, episode=self.episode, turn=self.turn, prompt_ids=list(prompt_ids),
                              max_tokens=int(sampling_params["max_tokens"]),
                              temperature=float(sampling_params["temperature"]),
                              top_p=float(sampling_params["top_p"]), top_k=int(sampling_params["top_k"]),
                              seed=turn_seed(self.base_seed, self.task_id, self.episode, self.turn))
        self.turn += 1
        result = await self.batcher.submit(request)
        self.finish_reasons.append(result.finish_reason)
        return TokenOutput(token_ids=list(result.token_ids), log_probs=None, extra_fields={})


def _load_model(cfg: DictConfig):
    """(policy, tokenizer, hf_model_type, backend name) of the model: a verl checkpoint is merged first."""
    from transformers import AutoConfig, AutoTokenizer

    from verl_resrl.eval.checkpoint import resolve_model_path
    from verl_resrl.eval.generation import choose_backend

    model_path = resolve_model_path(str(cfg.model_path), str(cfg.output_dir))
    tokenizer_path = cfg.tokenizer_path or model_path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    hf_model_type = getattr(AutoConfig.from_pretrained(model_path), "model_type", None)  # as verl's worker reads it
    backend = choose_backend(str(cfg.backend))
    if backend == "vllm":
        from verl_resrl.eval.generation import VLLMBackend

        policy = VLLMPolicy(VLLMBackend(model_path, tokenizer_path, OmegaConf.to_container(cfg.vllm, resolve=True)))
    else:
        from verl_resrl.eval.generation import HFBackend

        hf = cfg.hf
        policy = HFPolicy(HFBackend(model_path, tokenizer, hf.dtype, hf.device, 1, hf.get("round_weights_to")))
    return policy, tokenizer, hf_model_type, backend
