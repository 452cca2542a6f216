"""PPO at scale on paper: gradient accumulation, global whitening over processes, one prepared module."""

from __future__ import annotations

import os

import pytest
import torch

from tests.rl.test_direction import tiny_config


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each test's Accelerator starts from scratch (accelerate keeps process-wide singletons)."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


class RecordingOptimizer:
    """Stands in for AdamW: records the gradients each optimiser step would apply."""

    def __init__(self, params):
        self.params = list(params)
        self.steps: list[list[torch.Tensor]] = []

    def step(self):
        self.steps.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in self.params])

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def synthetic_batch(vocab: int, n: int = 8, lq: int = 5, t: int = 7):
    """A step's rollouts with random tokens, ragged response lengths and random targets."""
    from rl.train import Batch

    g = torch.Generator().manual_seed(0)
    query = torch.randint(3, vocab, (n, lq), generator=g)
    query_mask = torch.ones(n, lq, dtype=torch.long)
    query_mask[0, :2] = 0  # left padding
    response = torch.randint(3, vocab, (n, t), generator=g)
    lengths = torch.tensor([7, 3, 5, 1, 7, 2, 6, 4])[:n]
    attn = (torch.arange(t) < lengths[:, None]).float()
    mask = attn.clone()
    mask[3] = 0  # a completion left out of the update (truncated, `mask` mode)
    return Batch(
        query=query,
        query_mask=query_mask,
        response=response,
        attn=attn,
        mask=mask,
        scores=torch.rand(n, generator=g),
        old_logprobs=-torch.rand(n, t, generator=g) * 3,
        advantages=torch.randn(n, t, generator=g) * mask,
        old_values=torch.randn(n, t, generator=g),
        returns=torch.randn(n, t, generator=g),
    )


def gradients_of_one_minibatch(tiny_model, micro: int) -> list[torch.Tensor]:
    from rl.setup import Models, PolicyCritic, load_critic, make_accelerator
    from rl.train import minibatch_step
    from runtime.models import load_model

    config = tiny_config(tiny_model, mini_batch_size=8, micro_batch_size=micro, max_grad_norm=1e9, entropy_coef=0.01)
    accelerator = make_accelerator(config)
    torch.manual_seed(0)
    module = PolicyCritic(load_model(tiny_model, dtype=torch.float32), load_critic(str(tiny_model))).train()
    optimizer = RecordingOptimizer(module.parameters())
    models = Models(module, None, optimizer)
    batch = synthetic_batch(module.policy.config.vocab_size)
    minibatch_step(models, batch, torch.arange(8), config, accelerator)
    assert len(optimizer.steps) == 1, "one optimiser step per mini-batch, however many micro-batches"
    return optimizer.steps[0]


def test_accumulated_gradient_equals_the_whole_minibatch_gradient(tiny_model):
    """micro_batch_size = mini / 4: four forward/backward passes, the same gradient as one pass over the mini-batch."""
    whole = gradients_of_one_minibatch(tiny_model, micro=8)
    accumulated = gradients_of_one_minibatch(tiny_model, micro=2)
    assert any(g.abs().sum() > 0 for g in whole)
    for a, b in zip(whole, accumulated, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def padded(batch, left: int, right: int):
    """`batch` with `left` query columns of padding before every prompt and `right` response columns after every
    completion: what a step's rollouts look like when the longest prompt or completion is in another pass."""
    from rl.train import Batch

    def pad(t, value=0):
        if t is None or t.dim() < 2:
            return t
        return torch.nn.functional.pad(t, (0, right), value=value)

    q = torch.nn.functional.pad(batch.query, (left, 0), value=0)
    qm = torch.nn.functional.pad(batch.query_mask, (left, 0), value=0)
    fields = {k: pad(v) for k, v in batch.__dict__.items() if k not in ("query", "query_mask")}
    return Batch(**{**fields, "query": q, "query_mask": qm})


def test_a_pass_is_cut_to_its_own_rows_padding_and_gives_the_same_gradient(tiny_model):
    """`Batch.rows` drops the columns no row of the pass uses (left query padding, response columns past its
    longest row): the loss and the gradient are those of the uncut rows, the tensors are smaller."""
    from rl.setup import Models, PolicyCritic, load_critic
    from rl.train import length_sorted, ppo_losses
    from runtime.models import load_model

    config = tiny_config(tiny_model, entropy_coef=0.01)
    torch.manual_seed(0)
    module = PolicyCritic(load_model(tiny_model, dtype=torch.float32), load_critic(str(tiny_model))).train()
    batch = synthetic_batch(module.policy.config.vocab_size)
    wide = padded(batch, left=3, right=4)
    short = length_sorted(torch.arange(8), wide.attn)[:4]  # the four shortest completions: lengths 1, 2, 3, 4
    assert wide.attn[short].sum(1).tolist() == [1.0, 2.0, 3.0, 4.0]
    cut = wide.rows(short)
    assert cut.response.shape == (4, 4) and cut.query.shape == (4, 5)
    grads = []
    for b in (batch, wide):
        module.zero_grad()
        loss, _ = ppo_losses(Models(module, None, None), b, short, config)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_micro_batch_must_divide_the_mini_batch():
    from rl.config import PPOConfig, accumulation_steps

    with pytest.raises(ValueError, match="mini_batch_size 32 must be a multiple of micro_batch_size 6"):
        PPOConfig(mini_batch_size=32, micro_batch_size=6)
    # 16 prompts x 4 = 64 completions in 2 global mini-batches of 32: each process holds 32 / world of each.
    assert accumulation_steps(PPOConfig(mini_batch_size=32, micro_batch_size=8), 1) == 4
    assert accumulation_steps(PPOConfig(mini_batch_size=32, micro_batch_size=8), 2) == 2
    assert accumulation_steps(PPOConfig(mini_batch_size=32), 4) == 1
    # micro_batch_size is "at most": a mini-batch smaller than it is one pass (ppo-tiny-cpu's 8 with a test's mini of 4)
    assert accumulation_steps(PPOConfig(mini_batch_size=4, micro_batch_size=8), 1) == 1


def test_minibatches_are_the_same_completions_on_any_number_of_processes():
    """Each global mini-batch is a fixed set of the step's completions (by their global index), and every process
    holds an equal share of it, so the world size changes neither the sets nor the optimiser steps."""
    from rl.config import PPOConfig
    from rl.train import minibatch_labels

    config = PPOConfig(prompts_per_step=8, rollouts_per_prompt=4, mini_batch_size=8)  # 32 completions, 4 mini-batches
    labels = minibatch_labels(config, step=3, epoch=0, n=32)
    assert sorted(labels.bincount().tolist()) == [8, 8, 8, 8]
    for world in (2, 4, 8):
        share = 32 // world
        for rank in range(world):
            mine = minibatch_labels(config, 3, 0, (rank + 1) * share)[rank * share :]
            assert mine.tolist() == labels[rank * share : (rank + 1) * share].tolist()
            assert mine.bincount(minlength=4).tolist() == [share // 4] * 4
    assert not torch.equal(labels, minibatch_labels(config, 4, 0, 32))  # a fresh draw each step
    assert not torch.equal(labels, minibatch_labels(config, 3, 1, 32))  # and each epoch


def _whiten_worker(rank: int, world: int, port: int, x: torch.Tensor, mask: torch.Tensor, out: dict) -> None:
    import torch.distributed as dist

    from rl.ppo import masked_whiten

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:

        def total(t: torch.Tensor) -> torch.Tensor:
            t = t.clone()
            dist.all_reduce(t)
            return t

        mine = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        out[rank] = masked_whiten(x[mine], mask[mine], all_reduce=total)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns 2 processes
def test_whitening_over_two_processes_matches_one_process():
    """Two gloo processes, each with half the completions (and different token counts), whiten
    with the global mean and variance: the same numbers as one process holding them all."""
    import torch.multiprocessing as mp

    from rl.ppo import masked_whiten
    from tests.rl.test_train import free_port

    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=g) * 3 + 1
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    mask[:3] *= torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])  # the first process has far fewer tokens
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_whiten_worker, args=(2, free_port(), x, mask, out), nprocs=2, join=True)
        together = torch.cat([out[0], out[1]])
    torch.testing.assert_close(together, masked_whiten(x, mask))
    # Per-process whitening (what a process alone would do) differs: the test has teeth.
    alone = torch.cat([masked_whiten(x[:3], mask[:3]), masked_whiten(x[3:], mask[3:])])
    assert not torch.allclose(alone, together)


def test_bf16_autocast_and_gradient_checkpointing_train(tiny_model, tmp_path):
    """dtype bfloat16 (autocast over fp32 master weights, bf16 reference) with gradient
    checkpointing and accumulation: a step runs and the trained weights stay fp32."""
    from rl.train import train

    config = tiny_config(
        tiny_model, total_steps=1, eval_every=0, dtype="bfloat16", gradient_checkpointing=True, mini_batch_size=4, micro_batch_size=2
    )
    out = train(config, tmp_path / "run", progress=False)
    from runtime.models import load_model

    assert load_model(out / "checkpoints" / "step-000001" / "policy").dtype == torch.float32


class _FSDPAccelerator:
    """What `gathered_for_generation` reads of an Accelerator running FSDP. accelerate itself
    falls back to DistributedType.NO without a GPU (it will not run FSDP on CPU), while torch's
    FSDP2 (`fully_shard`) does run on CPU over gloo: so the FSDP code paths are tested on torch's
    FSDP2 directly, the rest of the loop under accelerate's MULTI_CPU (test_two_processes_with_gloo)."""

    def __init__(self):
        from accelerate.utils import DistributedType

        self.distributed_type = DistributedType.FSDP
        self.device = torch.device("cpu")

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()


def _fsdp_worker(rank: int, port: int, model_path: str, out: dict) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from rl.setup import Models, PolicyCritic, gathered_for_generation, load_critic
    from rl.train import ppo_losses
    from runtime.generation import generate
    from runtime.models import load_model, load_tokenizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        tokenizer = load_tokenizer(model_path)
        module = PolicyCritic(load_model(model_path, dtype=torch.float32), load_critic(model_path))
        prompts = ["Numbers: 3 5 7\nTarget: 22\n", "Numbers: 2 4\nTarget: 8\n"]
        whole = generate(module.policy, tokenizer, prompts, 8, do_sample=False).texts
        for model in (module.policy, module.critic):
            for layer in model.model.layers:
                fully_shard(layer)
        fully_shard(module)
        assert type(next(module.parameters())).__name__ == "DTensor"
        module.eval()
        with gathered_for_generation(module, _FSDPAccelerator()) as inner:
            sharded = generate(inner.policy, tokenizer, prompts, 8, do_sample=False).texts
        module.train()
        config = tiny_config(model_path, entropy_coef=0.01)
        batch = synthetic_batch(module.policy.config.vocab_size)
        loss, _ = ppo_losses(Models(module, tokenizer, None), batch, torch.arange(8), config)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(module.policy.parameters()), 1.0)
        out[rank] = (whole == sharded, bool(torch.isfinite(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns 2 processes (~20 s)
def test_fsdp2_on_two_cpu_processes_generates_and_trains(tiny_model):
    """Under FSDP2 the policy generates through `gathered_for_generation` exactly what the unsharded
    policy generates, and a forward/backward of the PPO losses through the sharded `PolicyCritic` runs."""
    import torch.multiprocessing as mp

    from tests.rl.test_train import free_port

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_fsdp_worker, args=(free_port(), str(tiny_model), out), nprocs=2, join=True)
        assert dict(out) == {0: (True, True), 1: (True, True)}


class _DeepSpeedAccelerator(_FSDPAccelerator):
    """What `gathered_for_generation` reads of an Accelerator under DeepSpeed (which needs GPUs to run)."""

    def __init__(self, stage: int):
        from types import SimpleNamespace

        from accelerate.utils import DistributedType

        super().__init__()
        self.distributed_type = DistributedType.DEEPSPEED
        self.state = SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage))


def test_zero3_rollouts_gather_the_policy_once_with_the_hooks_off(tiny_model, monkeypatch):
    """Under ZeRO-3 a rollout gathers exactly the policy's parameters (not the critic's), once, and takes DeepSpeed's
    fetch hooks off while it generates (TRL's remove_hooks/add_hooks), putting them back after, even on an error."""
    import sys
    from contextlib import contextmanager
    from types import SimpleNamespace

    import trl.models.utils as trl_utils

    from rl.setup import PolicyCritic, gathered_for_generation, gathered_parameters, load_critic, running_sharding
    from runtime.models import load_model

    module = PolicyCritic(load_model(tiny_model, dtype=torch.float32), load_critic(str(tiny_model)))
    events: list[tuple[str, object]] = []

    @contextmanager
    def gathered(params, modifier_rank=None):
        events.append(("gather", {id(p) for p in params}))
        yield

    import importlib.machinery
    import types

    fake = types.ModuleType("deepspeed")  # DeepSpeed needs CUDA to install: a stand-in recording what is gathered
    fake.__spec__ = importlib.machinery.ModuleSpec("deepspeed", None)
    fake.zero = SimpleNamespace(GatheredParameters=gathered)
    fake.DeepSpeedEngine = type("DeepSpeedEngine", (), {})
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    monkeypatch.setattr(trl_utils, "remove_hooks", lambda m: events.append(("remove", m)))
    monkeypatch.setattr(trl_utils, "add_hooks", lambda m: events.append(("add", m)))
    with gathered_for_generation(module, _DeepSpeedAccelerator(3)) as inner:
        assert inner is module and [e[0] for e in events] == ["gather", "remove"]
    assert [e[0] for e in events] == ["gather", "remove", "add"] and events[1][1] is module and events[2][1] is module
    assert events[0][1] == {id(p) for p in module.policy.parameters()}
    assert not events[0][1] & {id(p) for p in module.critic.parameters()}
    with pytest.raises(RuntimeError), gathered_for_generation(module, _DeepSpeedAccelerator(3)):
        raise RuntimeError("generation failed")
    assert events[-1][0] == "add"
    # ZeRO-2 holds whole weights: nothing gathered, no hook touched.
    events.clear()
    with gathered_for_generation(module, _DeepSpeedAccelerator(2)):
        pass
    assert events == []
    assert [running_sharding(_DeepSpeedAccelerator(s)) for s in (2, 3)] == ["zero2", "zero3"]
    assert running_sharding(_FSDPAccelerator()) == "fsdp"
    assert len(gathered_parameters(module, "fsdp")) == len(list(module.parameters()))
    assert gathered_parameters(module, "ddp") == []
