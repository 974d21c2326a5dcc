"""``launch(config)``: everything between Hydra's composed config and verl's ``run_ppo``.

Called by ``python -m verl_resrl.main_ppo +recipe=NAME``. In order:

1. device: ``verl_resrl.launching.device_decision`` decides from ``trainer.device`` and the resources of where the job runs
   (the Ray cluster it joins; this host only for a local run) and the choice is printed with its reason. The CPU
   path selects our CPU platform (``verl_resrl.workers.cpu_platform``) for the driver and, through the marker
   ``VERL_PLATFORM=cpu`` in Ray's runtime env, for every Ray process, then makes the config runnable there
   (:func:`configure_cpu_run`); the GPU path passes ``VERL_RESRL_DEVICE`` and no CPU marker (:func:`configure_gpu_run`);
2. the tiny task: with ``resrl_tiny.enable=true``, build (once, cached) or reuse its assets and fill the config keys
   set to ``"resrl_tiny"`` with their paths (the tool task likewise with ``resrl_tiny_tools.enable``:
   ``verl_resrl.tiny_tools.launch``); a dry run builds nothing, fills the paths a build would have and reports
   what a real run would build first and its cost (``verl_resrl.launching.dry_run.plan_cached_build``);
3. output paths made absolute (Ray workers do not share the driver's working directory);
4. validation: ``verl_resrl.launching.dry_run.preflight`` (our checks, ``verl_resrl.launching.config_check`` and verl's own
   ``validate_config``; stops here on ``trainer.dry_run=true``);
5. verl's ``run_ppo`` with :data:`ResRLTaskRunner` - verl's ``TaskRunnerV1`` whose trainer class comes from
   ``verl_resrl.seams.trainer.resolve_trainer_cls`` and whose metrics also go to ``verl_resrl.reporting.progress``.
"""

from __future__ import annotations

import os

import ray
from omegaconf import OmegaConf, open_dict

from verl.trainer.main_ppo import TaskRunnerV1, run_ppo

from verl_resrl.launching.tiny_assets import TinyTask
from verl_resrl.launching.tiny_assets import prepare as prepare_tiny_task

TINY = TinyTask(block="resrl_tiny", label="tiny task", build_module="verl_resrl.tiny.build",
                settings_class="TinyBuildSettings", ensure="ensure_tiny_assets", error="TinyAssetsError",
                keys={"data.train_files": "train_parquet", "data.val_files": "val_parquet",
                      "actor_rollout_ref.model.path": "model_dir"})
GPU_ONLY_ROLLOUTS = ("sglang", "trtllm")  # vllm runs on CPU as its CPU build (verl_resrl/workers/cpu_vllm.py)
# Ray logical CPUs held besides the placement groups: TransferQueue's controller (num_cpus=1), and one free CPU
# that actors with Ray's default options (TaskRunner, agent-loop and reward workers) need to be scheduled.
_TQ_CONTROLLER_CPUS = 1
_SCHEDULING_HEADROOM_CPUS = 1
_BUNDLE_CPUS = 3  # verl's ResourcePoolManager.max_colocate_count: CPUs in each trainer-process bundle


def _select(config, key, default=None):
    return OmegaConf.select(config, key, default=default)


def _set(config, key, value) -> None:
    with open_dict(config):
        OmegaConf.update(config, key, value, force_add=True)


def decide_device(config):
    """The run's device and why (``verl_resrl.launching.device_decision``: from the cluster the job joins, else this host)."""
    from verl_resrl.launching.device_decision import decide_for_config

    return decide_for_config(config)


def configure_gpu_run(config, decision) -> None:
    """The GPU path: the decided device, and the marker that keeps the CPU platform off in every Ray process."""
    from verl_resrl.launching.device_decision import DEVICE_ENV

    _set(config, "trainer.device", decision.device)
    # the CPU platform switches on only where VERL_PLATFORM=cpu says so (workers/cpu_platform.py); a value left in
    # this shell must not reach the workers of a GPU run
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
        raise ValueError("VERL_PLATFORM=cpu is set in this shell but the run takes the GPU path "
                         f"({decision.reason}); unset it, or pass trainer.device=cpu for the CPU path")
    _set(config, f"ray_kwargs.ray_init.runtime_env.env_vars.{DEVICE_ENV}", decision.device)


def cpu_logical_cpus_needed(config) -> int:
    """Ray logical CPUs a CPU run holds at once (scheduling slots, not cores; see docs/cpu_path.md)."""
    processes = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    storage_units = int(_select(config, "transfer_queue.backend.SimpleStorage.num_data_storage_units", 8))
    return processes * _BUNDLE_CPUS + storage_units + _TQ_CONTROLLER_CPUS + _SCHEDULING_HEADROOM_CPUS


def _check_cpu_config(config) -> None:
    """Settings that cannot run on a CPU: fail now with the key to change, not minutes later in a Ray worker."""
    rollout = _select(config, "actor_rollout_ref.rollout.name")
    if rollout in GPU_ONLY_ROLLOUTS:
        raise ValueError(f"actor_rollout_ref.rollout.name={rollout} needs a GPU; on CPU use "
                         "actor_rollout_ref.rollout.name=vllm (vLLM's CPU build)")
    for role in ("actor", "ref"):
        strategy = _select(config, f"actor_rollout_ref.{role}.strategy")
        if strategy not in (None, "fsdp", "fsdp2"):
            raise ValueError(f"actor_rollout_ref.{role}.strategy={strategy} does not run on CPU; use fsdp or fsdp2")
    attn = _select(config, "actor_rollout_ref.model.override_config.attn_implementation")
    if attn is not None and str(attn).startswith("flash"):
        raise ValueError(f"actor_rollout_ref.model.override_config.attn_implementation={attn} needs a GPU; "
                         "use sdpa (or eager)")


def cpu_env_vars(config) -> dict[str, str]:
    """Environment for every Ray process of a CPU run (user-set values win, except the two markers)."""
    from verl_resrl.launching.device_decision import DEVICE_ENV

    markers = {
        # verl's platform override, and the one marker that switches our "cpu" platform on in a process
        "VERL_PLATFORM": "cpu",
        DEVICE_ENV: "cpu",
    }
    wanted = {
        # torch threads per process: Ray would otherwise set 1 (an actor's num_cpus); processes take turns
        # (rollout, then log-probs, then the update), so each may use every core
        "OMP_NUM_THREADS": str(os.cpu_count() or 1),
        "TOKENIZERS_PARALLELISM": "false",
    }
    return {**markers, **{k: os.environ.get(k, v) for k, v in wanted.items()}}


def configure_cpu_run(config) -> None:
    """Make ``config`` run on the CPU platform: platform env for Ray, device, attention, Ray resources."""
    _check_cpu_config(config)
    env = cpu_env_vars(config)
    os.environ.update(env)  # the driver: verl was imported already, so activate explicitly
    from verl_resrl.workers import cpu_platform

    cpu_platform.activate()
    _set(config, "trainer.device", "cpu")
    from verl_resrl.launching.cpu_precision import apply_cpu_precision

    apply_cpu_precision(config)  # fp32 where this CPU emulates bf16 (a user's mixed_precision setting wins)
    if _select(config, "actor_rollout_ref.model.override_config.attn_implementation") is None:
        _set(config, "actor_rollout_ref.model.override_config.attn_implementation", "sdpa")
    for key, value in env.items():
        _set(config, f"ray_kwargs.ray_init.runtime_env.env_vars.{key}", value)
    # Joining a running cluster (a Ray job, `ray start`): Ray refuses num_cpus/num_gpus there ("When connecting to
    # an existing cluster, num_cpus and num_gpus must not be provided"); the cluster's own resources apply.
    address = _select(config, "ray_kwargs.ray_init.address")
    if os.environ.get("RAY_ADDRESS") or address not in (None, "local"):
        return
    needed = cpu_logical_cpus_needed(config)
    num_cpus = _select(config, "ray_kwargs.ray_init.num_cpus")
    if num_cpus is None:
        _set(config, "ray_kwargs.ray_init.num_cpus", needed)
    elif int(num_cpus) < needed:
        raise ValueError(f"ray_kwargs.ray_init.num_cpus={num_cpus} is below the {needed} logical CPUs this run "
                         "holds (3 per trainer process + TransferQueue storage units + 2); Ray would wait forever")
    # A private local Ray instance unless one is named: Ray's default (address=None) joins any cluster running on
    # this host, which would lack the placeholder GPU slots below and mix our actors with someone else's.
    if _select(config, "ray_kwargs.ray_init.address") is None and not os.environ.get("RAY_ADDRESS"):
        _set(config, "ray_kwargs.ray_init.address", "local")
    # verl's ResourcePoolManager counts only Ray "GPU"/"NPU" resources: one placeholder GPU slot per trainer
    # process (no CUDA is used; the CPU platform never touches torch.cuda).
    processes = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    if _select(config, "ray_kwargs.ray_init.num_gpus") is None:
        _set(config, "ray_kwargs.ray_init.num_gpus", processes)


def prepare_tiny_assets(config):
    """With ``resrl_tiny.enable``, build/reuse the tiny task and fill the keys that say ``resrl_tiny``
    (``tiny_assets.prepare``: a dry run builds nothing and returns what a real run would build first)."""
    return prepare_tiny_task(config, TINY)


def absolutize_outputs(config) -> None:
    """Checkpoint and progress folders as absolute paths, and tensorboard under the run's output folder."""
    local_dir = os.path.abspath(os.path.expanduser(str(config.trainer.default_local_dir)))
    _set(config, "trainer.default_local_dir", local_dir)
    out_dir = _select(config, "resrl_progress.out_dir")
    _set(config, "resrl_progress.out_dir", os.path.abspath(os.path.expanduser(str(out_dir or local_dir))))
    if "TENSORBOARD_DIR" not in os.environ:  # read by verl's tensorboard backend in the TaskRunner
        tb_dir = os.path.join(config.resrl_progress.out_dir, "tensorboard")
        _set(config, "ray_kwargs.ray_init.runtime_env.env_vars.TENSORBOARD_DIR", tb_dir)


def _preflight(config, planned=()) -> bool:
    """Our validation and verl's (``verl_resrl.launching.dry_run.preflight``); True = dry run, stop."""
    from verl_resrl.launching.dry_run import preflight

    return preflight(config, planned)


def with_replay_poll_interval(trainer_cls, poll_interval_s):
    """``trainer_cls`` whose replay buffer polls for finished rollouts every ``poll_interval_s`` (None: unchanged).

    Extends ``PPOTrainer._build_replay_buffer``: verl's ``ReplayBuffer`` sleeps a fixed 2 s between checks for
    finished trajectories (its ``poll_interval`` has no config key), which rounds every generation phase up to a
    multiple of 2 s - a large share of a CPU step of a few seconds.
    """
    if poll_interval_s is None:
        return trainer_cls
    if poll_interval_s <= 0:
        raise ValueError(f"resrl_sampler.poll_interval_s must be > 0 (or null), got {poll_interval_s}")

    class PolledTrainer(trainer_cls):
        def _build_replay_buffer(self):
            buffer = super()._build_replay_buffer()
            buffer.poll_interval = float(poll_interval_s)
            return buffer

    PolledTrainer.__name__ = PolledTrainer.__qualname__ = trainer_cls.__name__
    return PolledTrainer


class _ResRLTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's TaskRunnerV1 (``@ray.remote`` there; subclassed through its underlying class) with our trainer class.

    Replaces only the trainer lookup of ``TaskRunnerV1.run``: that method calls ``verl.trainer.ppo.v1.get_trainer_cls``
    by module attribute, so pointing that attribute at ``resolve_trainer_cls`` in this (TaskRunner) process changes
    the class and nothing else (plus ``resrl_sampler.poll_interval_s``, see :func:`with_replay_poll_interval`).
    Metrics also reach ``verl_resrl.reporting.progress`` (its Tracking subclass is installed here).
    """

    def run(self, config):
        from verl.trainer.ppo import v1

        from verl_resrl.reporting.progress import install_in_v1_trainer
        from verl_resrl.seams.trainer import resolve_trainer_cls

        install_in_v1_trainer()
        from verl_resrl.agents.trainer_hooks import wrap_agent_trainer
        from verl_resrl.tiny_tools.launch import wrap_trainer

        poll = _select(config, "resrl_sampler.poll_interval_s")
        # wrap_trainer: per-step tools/* metrics when rollout.multi_turn.enable (verl logs turns, not tool calls);
        # wrap_agent_trainer: per-step agent/* means when the rows are resrl_text_env's (verl logs them only at
        # validation); each leaves the class unchanged otherwise (tiny_tools/ and agents/trainer_hooks.py)
        v1.get_trainer_cls = lambda _mode: wrap_agent_trainer(wrap_trainer(
            with_replay_poll_interval(resolve_trainer_cls(config), poll), config), config)
        try:
            return super().run(config)
        except Exception as err:
            dead = self._dead_rollout_servers()
            if dead:
                # verl reports a dead rollout server only indirectly (failed groups, then an error about empty
                # batches); name the cause so the user does not have to dig through the workers' logs
                raise RuntimeError(
                    f"rollout server(s) died during the run: {', '.join(dead)} (Ray ActorDiedError; their log is "
                    f"above). verl then failed with {type(err).__name__}: {err}"
                ) from err
            raise

    def _dead_rollout_servers(self, timeout_s: float = 10.0) -> list[str]:
        """Addresses of this run's rollout servers that no longer answer Ray's readiness call."""
        manager = getattr(getattr(self, "trainer", None), "llm_server_manager", None)
        dead = []
        for replica in manager.get_replicas() if manager is not None else []:
            for server in replica.servers:
                try:
                    ray.get(server.__ray_ready__.remote(), timeout=timeout_s)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    dead.append(str(replica.server_address))
        return dead


ResRLTaskRunner = ray.remote(_ResRLTaskRunner)


def launch(config, startup=None) -> None:
    """Prepare ``config`` for this host, validate it, and run verl's PPO with our task runner.

    ``startup``: the ``console.StartupHold`` of ``main_ppo`` (known-harmless start-up lines, written to the run's log
    here), or None.
    """
    if not bool(_select(config, "trainer.use_v1", True)):
        raise ValueError("trainer.use_v1=false (verl's deprecated legacy trainer) is not supported by verl_resrl; "
                         "use the v1 trainer")
    # A dry run checks the config for the machines it will run on, not for this one: a GPU recipe dry-run on a CPU
    # login node must not be turned into a CPU run (only an explicit trainer.device=cpu selects the CPU path then).
    dry_run_elsewhere = bool(_select(config, "trainer.dry_run", False)) and _select(config, "trainer.device") != "cpu"
    decision = None
    if not dry_run_elsewhere:
        decision = decide_device(config)
        print(decision.message(), flush=True)
        if decision.cpu_path:
            configure_cpu_run(config)
        else:
            configure_gpu_run(config, decision)
    from verl_resrl.tiny_agent.launch import prepare_tiny_agent_assets
    from verl_resrl.tiny_tools.launch import prepare_tiny_tools_assets

    # the tiny tasks' builds and paths (no-ops unless enabled); a dry run builds nothing and gets back what a real
    # run would build first
    planned = [p for p in (prepare_tiny_assets(config), prepare_tiny_tools_assets(config),
                           prepare_tiny_agent_assets(config)) if p is not None]
    if decision is not None and decision.cpu_path:
        from verl_resrl.workers.cpu_vllm import configure_vllm_rollout, describe

        # after the model path is known: the KV cache is sized from the model's config (a planned one on a dry run)
        model_config = next((p.model_config for p in planned
                             if os.path.join(p.data_dir, "model") == _select(config, "actor_rollout_ref.model.path")),
                            None)
        chosen = configure_vllm_rollout(config, model_config=model_config)
        if chosen is not None:
            print(describe(chosen), flush=True)
    absolutize_outputs(config)
    if _preflight(config, planned):
        return
    from verl_resrl.reporting.console import quiet_console
    from verl_resrl.reporting.progress import print_run_summary

    # the terminal shows our progress lines and errors; verl's metric dumps and Ray's worker output go to the log
    log_path = os.path.join(str(_select(config, "resrl_progress.out_dir")),
                            str(_select(config, "resrl_progress.log_file", "run.log")))
    quiet = bool(_select(config, "resrl_progress.enable", False)) and not bool(
        _select(config, "resrl_progress.verbose", False))
    if startup is not None:  # a console that is not quiet shows everything, these lines included
        startup.release(log_path if quiet else None, cpu_path=decision is None or decision.cpu_path)
    from verl_resrl.launching import shm_cleanup

    shm_before = shm_cleanup.snapshot()
    with quiet_console(log_path, enabled=quiet):
        try:
            run_ppo(config, task_runner_class=ResRLTaskRunner)
        except Exception as err:
            # say which path failed: a worker's CUDA/NCCL error alone does not tell why the run went to the GPUs
            if decision is not None and not decision.cpu_path:
                print(f"[resrl] the GPU path ({decision.reason}) failed in the Ray workers: {type(err).__name__}: "
                      f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}", flush=True)
            raise
        finally:
            # Ray prints its de-duplicated worker lines ("[repeated 20x across cluster]") when it shuts down: do it
            # here, so that they go to the log and the summary below stays the last thing on the terminal
            if quiet and ray.is_initialized():
                ray.shutdown()
            if not ray.is_initialized():  # vLLM's and verl's segments, left by Ray's SIGKILLed actors
                shm_cleanup.remove_orphans(shm_before)
    print_run_summary(config)  # start/end validation accuracy as the last lines of the run
    if quiet:
        print(f"[resrl] full log: {log_path}", flush=True)
