"""CPU rollout backend ``actor_rollout_ref.rollout.name=hf``: transformers decoding inside a Ray actor.

verl 0.9.1 only registers GPU servers (vllm, sglang, trtllm) and its SPMD-era ``HFRollout`` is abstract
(docs/cpu_path.md, "The `hf` rollout"). This module plugs a CPU server into the same three seams as vLLM:

* :class:`HFRolloutServer` - the server actor. verl's agent loop calls ``generate(prompt_ids, sampling_params, ...)``
  on it (token in, token out) through the load balancer. Concurrent requests are queued and decoded as batches with
  :func:`verl_resrl.workers.hf_generation.generate` in one background thread, so control calls stay responsive.
* :class:`HFRolloutReplica` - a ``RolloutReplica``: launches one server actor per replica (``launch_servers``).
* :class:`HFServerAdapter` - the ``BaseRollout`` inside every FSDP actor worker. verl's weight-sync path
  (``ActorRolloutRefWorker.update_weights``, ``checkpoint_engine.backend=naive``, every step) hands it a generator of
  full HF-named tensors; the replica's first rank forwards them to its server through the Ray object store.

Knobs: ``actor_rollout_ref.rollout.{temperature,top_p,top_k,n,response_length,prompt_length,max_model_len,dtype,
max_num_seqs (largest decoding batch),seed,ignore_eos,val_kwargs}`` as for vLLM, plus :class:`HFServerOptions`
under ``actor_rollout_ref.rollout.engine_kwargs.hf``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, Generator, Optional

import ray
import torch

from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from verl_resrl.workers.hf_generation import generate as hf_generate

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf"
SERVER_NAME_PREFIX = "hf_server_"
# sampling keys verl's agent loops send (AgentLoopWorker.generate_sequences) and the ones we honour
_SAMPLING_KEYS = {"temperature", "top_p", "top_k", "repetition_penalty", "logprobs", "max_tokens", "max_new_tokens",
                  "seed", "ignore_eos"}


@dataclass(frozen=True)
class HFServerOptions:
    """``actor_rollout_ref.rollout.engine_kwargs.hf`` (ours; no vLLM equivalent)."""

    torch_threads: int = 0
    """intra-op threads of the server's torch; 0 keeps torch's default (OMP_NUM_THREADS, set by the launcher)"""
    batch_wait_ms: float = 5.0
    """a batch starts once no new request arrived for this long, so an agent-loop burst becomes one batch"""

    @classmethod
    def from_engine_kwargs(cls, engine_kwargs) -> "HFServerOptions":
        """Read the ``hf`` entry of ``rollout.engine_kwargs``; unknown keys are an error naming them."""
        node = dict((engine_kwargs or {}).get(ROLLOUT_NAME) or {})
        unknown = sorted(set(node) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown key(s) actor_rollout_ref.rollout.engine_kwargs.hf.{unknown}; "
                             f"known: {[f.name for f in fields(cls)]}")
        return cls(**node)


def server_name(replica_rank: int, name_suffix: str = "") -> str:
    """Ray actor name of a replica's server (the adapter finds its server by it)."""
    return f"{SERVER_NAME_PREFIX}{replica_rank}{name_suffix}"


def resolve_max_tokens(sampling_params: dict, prompt_len: int, config) -> int:
    """New-token budget, as ``vLLMHttpServer.generate``: ``max_tokens``, else ``max_new_tokens``, else
    ``min(response_length, prompt_length + response_length - len(prompt))``; clamped to [1, room in max_model_len]."""
    max_model_len = config.max_model_len or (config.prompt_length + config.response_length)
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(f"prompt of {prompt_len} tokens leaves no room to generate within max_model_len "
                         f"{max_model_len} (actor_rollout_ref.rollout.max_model_len)")
    if "max_tokens" in sampling_params:
        wanted = sampling_params["max_tokens"]
    elif "max_new_tokens" in sampling_params:
        wanted = sampling_params["max_new_tokens"]
    else:
        wanted = min(config.response_length, config.prompt_length + config.response_length - prompt_len)
    return max(1, min(int(wanted), room))


def _check_sampling_params(sampling_params: dict) -> None:
    """Reject sampling features this backend does not implement instead of silently ignoring them."""
    unknown = sorted(set(sampling_params) - _SAMPLING_KEYS)
    if unknown:
        raise ValueError(f"hf rollout: unsupported sampling parameter(s) {unknown}")
    if float(sampling_params.get("repetition_penalty", 1.0)) != 1.0:
        raise ValueError("hf rollout: repetition_penalty != 1.0 is not implemented "
                         "(actor_rollout_ref.rollout.repetition_penalty)")


class HFRolloutServer:
    """The server actor of one replica (``ray.remote`` is applied by :class:`HFRolloutReplica`)."""

    def __init__(self, config, model_config, replica_rank: int):
        from verl.utils.config import omega_conf_to_dataclass
        from verl.utils.torch_dtypes import PrecisionType
        from verl.workers.config import HFModelConfig

        self.config = config
        self.replica_rank = replica_rank
        self.options = HFServerOptions.from_engine_kwargs(config.engine_kwargs)
        if self.options.torch_threads > 0:
            torch.set_num_threads(self.options.torch_threads)
        hf_cfg: HFModelConfig = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.model = self._load_model(hf_cfg, PrecisionType.to_dtype(config.dtype))
        self.eos_token_ids = [] if config.ignore_eos else self._eos_ids(hf_cfg)
        tok = hf_cfg.tokenizer
        pad = getattr(tok, "pad_token_id", None) if tok is not None else None
        self.pad_token_id = pad if pad is not None else (self.eos_token_ids or [0])[0]
        self.global_steps: Optional[int] = None
        self._rng = random.Random(config.seed + replica_rank)
        self._pending: list[tuple[tuple, list[int], asyncio.Future]] = []
        self._batcher: Optional[asyncio.Task] = None
        # one thread: decoding and weight loads never overlap, and the actor's event loop stays free
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_rollout")

    @staticmethod
    def _load_model(hf_cfg, dtype):
        """AutoModelForCausalLM from the actor's model path; flash-attention requests fall back to sdpa on CPU."""
        from transformers import AutoModelForCausalLM

        attn = (hf_cfg.override_config or {}).get("attn_implementation", "sdpa")
        if str(attn).startswith("flash") and not torch.cuda.is_available():
            attn = "sdpa"
        model = AutoModelForCausalLM.from_pretrained(
            hf_cfg.local_path, dtype=dtype, attn_implementation=attn, trust_remote_code=hf_cfg.trust_remote_code
        )
        return model.eval()

    @staticmethod
    def _eos_ids(hf_cfg) -> list[int]:
        """EOS ids as vLLM uses them: generation_config's, the model config's and the tokenizer's."""
        ids: list[int] = []
        for source in (hf_cfg.generation_config, hf_cfg.hf_config, hf_cfg.tokenizer):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            for v in [value] if isinstance(value, int) else (value or []):
                if v not in ids:
                    ids.append(int(v))
        return ids

    async def ready(self) -> str:
        """Returns once the model is loaded (the actor constructor has run)."""
        return server_name(self.replica_rank)

    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                       image_data=None, video_data=None, audio_data=None, mm_processor_kwargs=None,
                       priority: int = 0, **_ignored) -> TokenOutput:
        """verl's token-in/token-out call: queue the request and wait for its batch."""
        if image_data is not None or video_data is not None or audio_data is not None:
            raise ValueError("hf rollout: multimodal inputs are not supported")
        params = dict(sampling_params)
        _check_sampling_params(params)
        prompt = [int(t) for t in prompt_ids]
        key = (
            float(params.get("temperature", self.config.temperature)),
            float(params.get("top_p", 1.0)),
            int(params.get("top_k", -1)),
            resolve_max_tokens(params, len(prompt), self.config),
            bool(params.get("logprobs", False)),
        )
        future = asyncio.get_running_loop().create_future()
        self._pending.append((key, prompt, future))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches())
        return await future

    async def _run_batches(self) -> None:
        """Decode queued requests, grouped by sampling parameters, at most ``max_num_seqs`` rows per batch."""
        loop = asyncio.get_running_loop()
        while self._pending:
            await self._wait_for_arrivals_to_pause()
            taken, self._pending = self._pending, []
            groups: dict[tuple, list] = {}
            for key, prompt, future in taken:
                groups.setdefault(key, []).append((prompt, future))
            for key, items in groups.items():
                for start in range(0, len(items), max(1, self.config.max_num_seqs)):
                    chunk = items[start : start + max(1, self.config.max_num_seqs)]
                    seed = self._rng.randrange(2**62)
                    try:
                        outputs = await loop.run_in_executor(self._executor, self._decode, key, chunk, seed)
                    except Exception as err:  # noqa: BLE001 - handed to every waiting request, never swallowed
                        for _, future in chunk:
                            if not future.done():
                                future.set_exception(err)
                        continue
                    for (_, future), output in zip(chunk, outputs):
                        if not future.done():
                            future.set_result(output)

    async def _wait_for_arrivals_to_pause(self) -> None:
        """Sleep until no request arrived for ``batch_wait_ms`` (at most 40 waits)."""
        for _ in range(40):
            seen = len(self._pending)
            await asyncio.sleep(self.options.batch_wait_ms / 1000.0)
            if len(self._pending) == seen:
                return

    def _decode(self, key: tuple, chunk: list, seed: int) -> list[TokenOutput]:
        """Blocking batch decode (runs in the server's single worker thread)."""
        temperature, top_p, top_k, max_tokens, want_log_probs = key
        results = hf_generate(
            self.model, [prompt for prompt, _ in chunk], max_new_tokens=max_tokens, temperature=temperature,
            top_p=top_p, top_k=top_k, eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id,
            return_log_probs=want_log_probs, seed=seed,
        )
        return [
            TokenOutput(token_ids=r.token_ids, log_probs=r.log_probs, stop_reason="completed",
                        extra_fields={"global_steps": self.global_steps, "finish_reason": r.finish_reason})
            for r in results
        ]

    async def load_weights(self, weights: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> int:
        """Copy the actor's full HF-named weights into the server's model; returns the number of tensors."""
        count = await asyncio.get_running_loop().run_in_executor(self._executor, self._load_state, weights)
        self.global_steps = global_steps
        return count

    def _load_state(self, weights: dict[str, torch.Tensor]) -> int:
        """``load_state_dict(strict=False)`` that still fails on unknown names or on untied parameters left out."""
        result = self.model.load_state_dict(weights, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"hf rollout: weights for unknown parameters {result.unexpected_keys[:5]}")
        state = self.model.state_dict(keep_vars=True)
        loaded = {state[name].data_ptr() for name in weights if name in state}
        untied_missing = [k for k in result.missing_keys if state[k].data_ptr() not in loaded]
        if untied_missing:
            raise ValueError(f"hf rollout: weight sync left parameters unset: {untied_missing[:5]}")
        return len(weights)

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # Lifecycle calls verl makes on every server (CheckpointEngineManager, replica fan-outs). There is no KV cache
    # or device memory to free between requests, so they are no-ops, like an always-awake server.
    async def sleep(self) -> None:
        return None

    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def start_profile(self, **kwargs) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


class HFRolloutReplica(RolloutReplica):
    """One ``hf`` server per replica, placed on the node of the replica's first worker."""

    server_class = HFRolloutServer  # subclasses (tests, fault injection) swap the server

    async def launch_servers(self) -> None:
        """Create the server actor and fill ``servers``, ``_server_handle``, ``_server_address`` (verl's contract)."""
        name = server_name(self.replica_rank, self.name_suffix)
        options = {"name": name, "num_cpus": 0, "max_concurrency": self.max_concurrency}
        # num_cpus=0: never wait on the logical-CPU quota the placement groups already hold (docs/cpu_path.md)
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id())
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            )
        server = ray.remote(self.server_class).options(**options).remote(
            config=self.config, model_config=self.model_config, replica_rank=self.replica_rank
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{ROLLOUT_NAME}://{name}"  # the load balancer's key: unique per replica

    def rollout_worker_use_gpu(self) -> bool:
        return False


class HFServerAdapter(BaseRollout):
    """The rollout object inside each FSDP actor worker: forwards synced weights to the replica's server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1, **kwargs):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        replica_world = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                         * self.config.pipeline_model_parallel_size)
        self.replica_rank = rank // replica_world if replica_rank == -1 else replica_rank
        self.is_leader_rank = rank % replica_world == 0
        self._server = None

    def _server_handle(self):
        # looked up lazily: the worker is built before the replica launches its server
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(self, weights: Generator[tuple[str, torch.Tensor], None, None],
                             wire_format: str = "named_tensors", global_steps: Optional[int] = None,
                             peft_config=None, **kwargs) -> None:
        """Drain the generator on every rank (FSDP2 ``full_tensor`` is a collective); the leader sends the dict."""
        if wire_format != "named_tensors":
            raise ValueError(f"hf rollout: wire_format {wire_format!r} is not supported (only named_tensors)")
        if peft_config is not None:
            raise NotImplementedError("hf rollout: unmerged LoRA adapters are not supported; "
                                      "set actor_rollout_ref.model.lora.merge=True")
        state: dict[str, torch.Tensor] = {}
        for name, tensor in weights:
            if self.is_leader_rank:
                state[name] = tensor.detach().to("cpu", copy=True)
        if self.is_leader_rank:
            await self._server_handle().load_weights.remote(state, global_steps)


def register() -> None:
    """Register ``hf`` in verl's two rollout registries (worker side and driver side)."""
    from verl.workers.rollout import base, replica

    # _ROLLOUT_REGISTRY is a plain dict in verl 0.9.1 (no register API): (name, mode) -> dotted class path
    base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.HFServerAdapter"
    replica.RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: HFRolloutReplica)


register()
