"""Will a PPO config fit the GPUs? Per-GPU memory of every model PPO holds, by arithmetic.

`countdown-lab plan --preset paper-3b --gpus 4 --gpu-memory-gb 80` prints, per GPU, the
weights, gradients, optimiser states and activations of the policy, the critic and the
reference, and the generation peak, for the config's batch sizes and lengths; it exits 0 when
the total fits and 1 with the changes that would make it fit when it does not.

The model's shape comes from its config.json (a local folder) or, for hub ids that cannot be
downloaded here, from `KNOWN_ARCHS`. The numbers are estimates (no allocator, no CUDA context,
no fragmentation: `HEADROOM` of the GPU is kept free for those); each constant says what it assumes.
Pure Python (no torch), so it runs anywhere.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from countdown_env.errors import UsageError
from rl.config import (
    accumulation_steps,
    check_batches,
    gathered_for_rollouts,
    generation_batch,
    keeps_generation_logits,
    micro_size,
    per_process_samples,
)

GB = 1e9
#: Share of each GPU left for the CUDA context, the allocator's fragmentation, NCCL buffers,
#: autocast's bf16 copies of the weights and what these formulas miss.
HEADROOM = 0.10
#: AdamW on fp32 master weights: weights 4 + gradients 4 + two moments 8 = 16 bytes per trained
#: parameter (with `dtype: bfloat16` too: autocast computes in bf16 over fp32 weights; DeepSpeed's
#: bf16 mode splits the same 16 bytes as bf16 weights and gradients plus an fp32 master copy).
WEIGHT_BYTES, GRAD_BYTES, ADAM_BYTES = 4, 4, 8
#: Under DeepSpeed (`zero2`, `zero3`) the shipped accelerate configs (rl/configs/accelerate/zero*.yaml) run its bf16
#: mode: bf16 weights and gradients, and an fp32 master copy beside AdamW's two fp32 moments in the optimiser states.
DS_WEIGHT_BYTES, DS_GRAD_BYTES, DS_ADAM_BYTES = 2, 2, 12
#: Copies of the response logits alive in the policy's backward, in fp32 (`logprobs_from_logits` and
#: `entropy_from_logits` upcast and keep their log-softmax outputs), besides the model's own logits.
LOGIT_FP32_COPIES = 4
#: Characters per token assumed for the prompt (BPE on English and digits averages 3-4).
CHARS_PER_TOKEN = 3
#: LoRA targets (PEFT's "all-linear" on these architectures): q, k, v, o, gate, up, down.
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass(frozen=True)
class Arch:
    """The shapes of a decoder-only transformer (Llama / Qwen2 layout: GQA attention, SwiGLU MLP, RMSNorm)."""

    hidden: int
    layers: int
    vocab: int
    intermediate: int
    heads: int
    kv_heads: int
    tied: bool
    """Input embedding and LM head share their weights."""
    qkv_bias: bool = False
    """Qwen2 has biases on q, k, v."""
    head_dim: int = 0
    """0: hidden // heads."""

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    @property
    def q_dim(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one block."""
        h, i = self.hidden, self.intermediate
        return {"q": (h, self.q_dim), "k": (h, self.kv_dim), "v": (h, self.kv_dim), "o": (self.q_dim, h),
                "gate": (h, i), "up": (h, i), "down": (i, h)}  # fmt: skip

    @property
    def layer_params(self) -> int:
        linear = sum(a * b for a, b in self.linear_shapes().values())
        bias = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        return linear + bias + 2 * self.hidden  # two RMSNorms

    @property
    def backbone_params(self) -> int:
        """Embedding, blocks and final norm: what policy and critic share in shape."""
        return self.vocab * self.hidden + self.layers * self.layer_params + self.hidden

    @property
    def policy_params(self) -> int:
        return self.backbone_params + (0 if self.tied else self.vocab * self.hidden)

    @property
    def critic_params(self) -> int:
        """The backbone with a scalar head (`AutoModelForTokenClassification`, num_labels 1)."""
        return self.backbone_params + self.hidden + 1

    def lora_params(self, r: int) -> int:
        """Trainable LoRA parameters at rank `r` on every linear layer of every block."""
        return self.layers * sum(r * (a + b) for name, (a, b) in self.linear_shapes().items() if name in LORA_TARGETS)

    def activation_elements(self) -> int:
        """Values one block keeps per token for the backward pass: both norms' inputs and outputs,
        q, k, v, the attention output (SDPA/flash: no seq x seq scores), and the SwiGLU's gate,
        up, activation and product."""
        return 5 * self.hidden + self.q_dim + 2 * self.kv_dim + 4 * self.intermediate


#: Shapes of the study's models and their neighbours, from their config.json on the hub.
KNOWN_ARCHS: dict[str, Arch] = {
    "Qwen/Qwen2.5-0.5B": Arch(896, 24, 151936, 4864, 14, 2, tied=True, qkv_bias=True),
    "Qwen/Qwen2.5-1.5B": Arch(1536, 28, 151936, 8960, 12, 2, tied=True, qkv_bias=True),
    "Qwen/Qwen2.5-3B": Arch(2048, 36, 151936, 11008, 16, 2, tied=True, qkv_bias=True),
    "Qwen/Qwen2.5-7B": Arch(3584, 28, 152064, 18944, 28, 4, tied=False, qkv_bias=True),
    "meta-llama/Llama-3.2-1B": Arch(2048, 16, 128256, 8192, 32, 8, tied=True),
    "meta-llama/Llama-3.2-3B": Arch(3072, 28, 128256, 8192, 24, 8, tied=True),
    "meta-llama/Llama-3.1-8B": Arch(4096, 32, 128256, 14336, 32, 8, tied=False),
    "HuggingFaceTB/SmolLM2-135M": Arch(576, 30, 49152, 1536, 9, 3, tied=True),
    "HuggingFaceTB/SmolLM2-360M": Arch(960, 32, 49152, 2560, 15, 5, tied=True),
    "HuggingFaceTB/SmolLM2-1.7B": Arch(2048, 24, 49152, 8192, 32, 32, tied=True),
}
for _name in list(KNOWN_ARCHS):  # the instruct models share their base's shapes
    KNOWN_ARCHS[_name + "-Instruct"] = KNOWN_ARCHS[_name]


def arch_from_config(config: dict[str, Any]) -> Arch:
    """An `Arch` from a transformers config.json (Llama, Qwen2, Mistral and alike)."""
    try:
        return Arch(
            hidden=config["hidden_size"],
            layers=config["num_hidden_layers"],
            vocab=config["vocab_size"],
            intermediate=config["intermediate_size"],
            heads=config["num_attention_heads"],
            kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
            tied=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=config.get("model_type") == "qwen2" or bool(config.get("attention_bias", False)),
            head_dim=config.get("head_dim") or 0,
        )
    except KeyError as err:
        raise UsageError(f"config.json has no {err.args[0]}: not a decoder-only transformer `plan` knows") from None


def arch_of(model: str) -> Arch:
    """The shapes of `model`: a local folder's config.json (a PPO or SFT run directory too), else `KNOWN_ARCHS`."""
    if model and Path(model).expanduser().exists():
        from runtime.models import resolve_model_path

        config = Path(resolve_model_path(model)) / "config.json"
        if not config.exists():
            raise UsageError(f"{model} has no config.json")
        return arch_from_config(json.loads(config.read_text()))
    known = {name.lower(): arch for name, arch in KNOWN_ARCHS.items()}
    if model.lower() in known:
        return known[model.lower()]
    bases = ", ".join(name for name in KNOWN_ARCHS if not name.endswith("-Instruct"))
    raise UsageError(
        f"unknown model {model!r} for plan: give a local model folder (with config.json) or one of {bases} (or their -Instruct)"
    )


def prompt_tokens(config: Any) -> int:
    """An upper estimate of the prompt length: the longest of a few rendered prompts, at `CHARS_PER_TOKEN`."""
    from countdown_env import generate_tasks, render_prompt

    tasks = generate_tasks(16, seed=0, preset=config.task_preset, split="train")
    style = "tinyzero" if config.prompt_style == "chat" else config.prompt_style  # chat: about the same length plus a few markers
    longest = max(len(render_prompt(t, style, config.rules)) for t in tasks)
    return math.ceil(longest / CHARS_PER_TOKEN) + (16 if config.prompt_style == "chat" else 0)


@dataclass(frozen=True)
class Row:
    """One model's (or phase's) bytes per GPU."""

    name: str
    weights: float = 0.0
    gradients: float = 0.0
    optimizer: float = 0.0
    activations: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


@dataclass(frozen=True)
class Plan:
    rows: tuple[Row, ...]
    """policy, critic (gae), reference (when read): static memory and training activations."""
    generation: Row
    """The rollout phase's transient memory (gathered weights, KV cache, kept logits); not alive with training activations."""
    gpus: int
    gpu_memory_gb: float
    summary: str

    @property
    def static(self) -> float:
        return sum(r.weights + r.gradients + r.optimizer for r in self.rows)

    @property
    def peak(self) -> float:
        return self.static + max(sum(r.activations for r in self.rows), self.generation.total)

    @property
    def usable(self) -> float:
        return self.gpu_memory_gb * GB * (1 - HEADROOM)

    @property
    def fits(self) -> bool:
        return self.peak <= self.usable


def plan(config: Any, gpus: int, gpu_memory_gb: float, arch: Arch | None = None, lora_r: int | None = None) -> Plan:
    """Per-GPU memory of a PPO run of `config` on `gpus` GPUs of `gpu_memory_gb` (one process each).

    Sharding (`config.sharding`): `ddp` replicates everything; `zero2` shards gradients and
    optimiser states over the GPUs; `zero3` and `fsdp` shard the weights too, and gather the
    policy whole for generation. The reference is never sharded (a frozen model outside
    `prepare`), in `config.dtype`. LoRA (`lora_r` > 0, the config's `lora_r` when there is one):
    frozen base weights in `config.dtype`, only the adapters trained.
    """
    if gpus < 1 or not math.isfinite(gpu_memory_gb) or gpu_memory_gb <= 0:
        raise UsageError(f"--gpus must be >= 1 and --gpu-memory-gb a number > 0, got {gpus} and {gpu_memory_gb}")
    check_batches(config, gpus)  # what the runner would refuse on this many processes, refused here alike
    arch = arch or arch_of(config.model)
    lora_r = getattr(config, "lora_r", 0) if lora_r is None else lora_r
    act_bytes = 2 if config.dtype == "bfloat16" else 4
    shard_states = gpus if config.sharding in ("zero2", "zero3", "fsdp") else 1
    shard_weights = gpus if config.sharding in ("zero3", "fsdp") else 1
    deepspeed = config.sharding in ("zero2", "zero3")
    w_bytes, g_bytes, a_bytes = (DS_WEIGHT_BYTES, DS_GRAD_BYTES, DS_ADAM_BYTES) if deepspeed else (WEIGHT_BYTES, GRAD_BYTES, ADAM_BYTES)

    seq = prompt_tokens(config) + config.max_new_tokens
    micro, response = micro_size(config, gpus), config.max_new_tokens
    per_token = (
        arch.layers * arch.hidden + arch.activation_elements()
        if config.gradient_checkpointing
        else arch.layers * arch.activation_elements()
    )
    backbone_acts = micro * seq * per_token * act_bytes
    logits = micro * arch.vocab * (seq * act_bytes + response * (act_bytes + 4 * LOGIT_FP32_COPIES))

    def trained(name: str, params: int, activations: float) -> Row:
        if lora_r:
            adapters = arch.lora_params(lora_r)
            base = params * act_bytes / shard_weights  # frozen, in the run's dtype
            return Row(name, base + adapters * w_bytes / shard_weights, adapters * g_bytes / shard_states,
                       adapters * a_bytes / shard_states, activations)  # fmt: skip
        return Row(name, params * w_bytes / shard_weights, params * g_bytes / shard_states,
                   params * a_bytes / shard_states, activations)  # fmt: skip

    rows = [trained("policy", arch.policy_params, backbone_acts + logits)]
    if config.uses_critic:
        rows.append(trained("critic", arch.critic_params, backbone_acts))
    if config.uses_critic or config.kl_coef > 0:
        rows.append(Row("reference", weights=arch.policy_params * act_bytes))
    generation = generation_row(config, arch, gpus, seq, act_bytes)
    return Plan(tuple(rows), generation, gpus, gpu_memory_gb, plan_summary(config, arch, gpus, seq, lora_r))


def generation_row(config: Any, arch: Arch, gpus: int, seq: int, act_bytes: int) -> Row:
    """The rollout phase's transient memory: the KV cache, generate's kept logits (when the log-probs come from
    them) and one step's logits, plus the other GPUs' shards of what `gathered_for_rollouts` gathers."""
    gen_batch = generation_batch(config, gpus)
    kv_cache = gen_batch * seq * arch.layers * 2 * arch.kv_dim * act_bytes
    kept_logits = gen_batch * config.max_new_tokens * arch.vocab * 4 if keeps_generation_logits(config, arch.vocab, gen_batch) else 0
    return Row("generation", weights=gathered_bytes(config, arch, gpus), activations=kv_cache + kept_logits + gen_batch * arch.vocab * 4)


def gathered_bytes(config: Any, arch: Arch, gpus: int) -> float:
    """Bytes a rollout gathers onto each GPU besides its own shard: the models `gathered_for_rollouts` names, in the
    dtype they are held in (ZeRO-3: DeepSpeed's bf16 weights; FSDP: fp32 weights), each missing its 1/gpus share."""
    sizes = {"policy": arch.policy_params, "critic": arch.critic_params}
    names = gathered_for_rollouts(config.sharding, config.uses_critic)
    if getattr(config, "lora_r", 0):
        # The frozen base is held in the run's dtype, the adapters in the trained weights' bytes.
        per = (2 if config.dtype == "bfloat16" else 4) if config.sharding == "fsdp" else DS_WEIGHT_BYTES
        adapters = arch.lora_params(config.lora_r) * (WEIGHT_BYTES if config.sharding == "fsdp" else DS_WEIGHT_BYTES)
        total = sum(sizes[n] * per + adapters for n in names)
    else:
        per = DS_WEIGHT_BYTES if config.sharding == "zero3" else WEIGHT_BYTES
        total = sum(sizes[n] * per for n in names)
    return total * (1 - 1 / gpus)


def plan_summary(config: Any, arch: Arch, gpus: int, seq: int, lora_r: int) -> str:
    """The plan's first line: the model, what shards and how, the sequence and the batches per GPU."""
    per_process, response = per_process_samples(config, gpus), config.max_new_tokens
    steps = config.optimizer_steps
    return (
        f"{config.model or '?'}: policy {arch.policy_params / 1e9:.2f}B parameters"
        + (f", LoRA r={lora_r}: {arch.lora_params(lora_r) / 1e6:.1f}M trained" if lora_r else "")
        + f"; {config.sharding}, {config.dtype}, gradient checkpointing {'on' if config.gradient_checkpointing else 'off'};"
        f" sequences of {seq} tokens (~{seq - response} prompt + {response} response);"
        f" {config.batch_size} completions per step ({per_process} per GPU) in {steps * config.ppo_epochs} optimiser steps per PPO step"
        f" ({config.ppo_epochs} epoch(s) of {steps}), each {config.mini_batch_size} completions: {accumulation_steps(config, gpus)} passes of <= {micro_size(config, gpus)} per GPU"
        f"; generation {generation_batch(config, gpus)} at a time"
    )


def format_plan(p: Plan) -> str:
    """The per-GPU table (GB), the peak and the verdict."""
    head = f"{'per GPU (GB)':<14}{'weights':>9}{'grads':>9}{'optim':>9}{'activ.':>9}{'total':>9}"
    lines = [p.summary, "", head, "-" * len(head)]
    for r in (*p.rows, p.generation):
        lines.append(
            f"{r.name:<14}{r.weights / GB:>9.1f}{r.gradients / GB:>9.1f}{r.optimizer / GB:>9.1f}{r.activations / GB:>9.1f}{r.total / GB:>9.1f}"
        )
    train_acts = sum(r.activations for r in p.rows)
    lines += [
        "-" * len(head),
        f"peak = weights + gradients + optimiser states ({p.static / GB:.1f}) + max(training activations {train_acts / GB:.1f},"
        f" generation {p.generation.total / GB:.1f}) = {p.peak / GB:.1f} GB",
        f"{'fits' if p.fits else 'does NOT fit'}: {p.peak / GB:.1f} GB of {p.gpu_memory_gb:g} GB per GPU "
        f"({p.usable / GB:.1f} usable, {HEADROOM:.0%} kept for the CUDA context and fragmentation) on {p.gpus} GPU(s)",
    ]
    return "\n".join(lines)


def suggestions(config: Any, gpus: int, gpu_memory_gb: float, arch: Arch | None = None, limit: int = 4) -> list[str]:
    """`--set` changes that make `config` fit, fewest first (ZeRO stage, dtype, checkpointing, micro-batch, generation
    batch; then LoRA and the critic-free group baseline, which change what is trained)."""
    arch = arch or arch_of(config.model)
    options: list[dict[str, Any]] = []
    for sharding in ("zero2", "zero3"):
        if sharding != config.sharding:
            options.append({"sharding": sharding})
    if config.dtype != "bfloat16":
        options.append({"dtype": "bfloat16"})
    if not config.gradient_checkpointing:
        options.append({"gradient_checkpointing": True})
    micro = micro_size(config, gpus)
    while micro > 1:
        micro //= 2
        if config.mini_batch_size % micro == 0:
            options.append({"micro_batch_size": micro})
    if config.generation_batch_size == 0 or config.generation_batch_size > 16:
        options.append({"generation_batch_size": 16})
    lora = [{"lora_r": 16}] if not getattr(config, "lora_r", 0) else []
    # Dropping the critic changes the algorithm (GRPO-style group baseline): offered last.
    if config.uses_critic:
        lora.append({"advantage_estimator": "group"})
    found: list[str] = []
    # Singles, then pairs, then triples of options, LoRA and the critic last (they change what is trained).
    for size in (1, 2, 3, 4):
        for combo in itertools.combinations(options + lora, size):
            changes: dict[str, Any] = {}
            for c in combo:
                if set(c) & set(changes):
                    break
                changes |= c
            else:
                r = changes.pop("lora_r", None)
                try:
                    candidate = config.replace(**changes)
                except ValueError:
                    continue
                if plan(candidate, gpus, gpu_memory_gb, arch, lora_r=r).fits:
                    sets = " ".join(
                        f"--set {k}={str(v).lower() if isinstance(v, bool) else v}"
                        for k, v in {**changes, **({"lora_r": r} if r else {})}.items()
                    )
                    found.append(sets + (" (LoRA adapters on policy and critic)" if r else ""))
                    if len(found) >= limit:
                        return found
        if found:
            return found
    return found


def gpus_needed(config: Any, gpu_memory_gb: float, arch: Arch | None = None, most: int = 64) -> int | None:
    """The fewest GPUs of `gpu_memory_gb` on which `config` fits as it is (None: not even `most`)."""
    arch = arch or arch_of(config.model)
    for gpus in range(1, most + 1):
        try:
            if plan(config, gpus, gpu_memory_gb, arch).fits:
                return gpus
        except UsageError:  # the batch does not split over this many processes
            continue
    return None


def advice(config: Any, gpus: int, gpu_memory_gb: float) -> list[str]:
    """What to change when `config` does not fit: `--set` changes, or more GPUs."""
    arch = arch_of(config.model)
    lines = [f"fits with: {fix}" for fix in suggestions(config, gpus, gpu_memory_gb, arch)]
    if not lines:
        lines.append("no change of ZeRO stage, dtype, checkpointing, micro-batch, LoRA or critic fits on this GPU count")
    needed = gpus_needed(config, gpu_memory_gb, arch)
    if needed and needed > gpus:
        lines.append(f"or as configured on {needed} x {gpu_memory_gb:g} GB GPUs (--gpus {needed})")
    return lines


def check_fits(config: Any, gpus: int, gpu_memory_gb: float) -> Plan:
    """The plan, or a UsageError saying what does not fit and what would (for `experiment` before it starts)."""
    p = plan(config, gpus, gpu_memory_gb)
    if not p.fits:
        raise UsageError(
            f"PPO needs {p.peak / GB:.1f} GB per GPU, {gpus} x {gpu_memory_gb:g} GB GPUs give {p.usable / GB:.1f} usable"
            f" (`countdown-lab plan` prints the table); {'; '.join(advice(config, gpus, gpu_memory_gb))}"
        )
    return p
