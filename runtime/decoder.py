"""A hand-written incremental decoder for Llama and Qwen2 causal LMs on a CPU (issue 22).

Why: transformers' `model.generate` spends much of a CPU decode step outside the matmuls:
the dynamic KV cache grows by `torch.cat` (every layer's whole cache copied every step),
scaled_dot_product_attention runs its flash kernel for a one-token query, and every row is
computed until the last one stops. Here:

- the KV cache is preallocated (rows x kv_heads x columns x head_dim, in blocks of columns:
  `PagedCache`) and a step writes one column;
- the one-token attention is two batched matmuls over the filled columns (GQA: a kv head's
  query heads are the rows of one matmul, the cache is never repeated);
- q/k/v are one matmul, gate/up one, the residual adds fold into the output matmuls, logits
  are computed for the last position only;
- sampling (temperature) and stopping (any stop token, pad after it) run on whole-batch
  tensors in the loop: no per-step Python depends on the batch size, and the only host sync
  is one count of the rows still running;
- finished rows are dropped from the batch once they are an eighth of it (`Rows`), so a
  long tail of a few rows does not cost full-batch steps;
- the prefill runs identical prompts once (a PPO batch's rollouts of one task) and the token
  prefix all prompts share (a template's "Numbers: ", a chat model's system turn) once
  (`Prompts`), in chunks of ~512 tokens.

Exactness: every step uses the model's own weights (read from its modules when the decoder
is built; LoRA adapters folded in), its RoPE table (the model's `rotary_emb` evaluated at
every position, so rope_theta and rope scaling are transformers'), transformers' positions
for left-padded prompts (count of earlier real tokens) and its operation order (RMSNorm
statistics in float32, `q*cos + rotate_half(q)*sin`, softmax in float32). Only the
summation order of some matmuls differs (float rounding, ~1e-6), so greedy tokens equal
transformers' except at exact near-ties; sampling draws from the same softmax.
`tests/runtime/test_decoder.py` holds both to that.

Supported: `LlamaForCausalLM` / `Qwen2ForCausalLM` in float32 on a CPU (tied or untied head,
GQA, Qwen2's q/k/v biases, Llama's attention/MLP biases, static RoPE types), plain or inside
a PEFT LoRA wrapper. Anything else (`unsupported_reason` says why) goes through
`model.generate` in `runtime.generation`.

Shapes: `B` rows, `A` rows still running, `Lq` prompt columns (left-padded), `T` new tokens,
`Hq`/`Hkv` query/key-value heads, `D` head size, `G = Hq // Hkv`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

#: Architectures whose decoder layers this module re-implements.
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
#: RoPE types whose cos/sin depend on the position only (no rescaling with the sequence length),
#: so one table evaluated by the model's own `rotary_emb` serves every step.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
#: Generation-config fields that add a logits processor or stopping rule `model.generate` would
#: apply and this decoder does not; a model setting any of them keeps the transformers path.
PROCESSOR_FIELDS = (
    "repetition_penalty",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "bad_words_ids",
    "min_length",
    "min_new_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "suppress_tokens",
    "begin_suppress_tokens",
    "sequence_bias",
    "typical_p",
    "min_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "exponential_decay_length_penalty",
    "renormalize_logits",
    "guidance_scale",
    "watermarking_config",
    "stop_strings",
    "max_time",
)


class UnsupportedModel(ValueError):
    """The model (or its state) is outside what `FastDecoder` reproduces exactly."""


@dataclass
class LayerWeights:
    """One decoder layer's weights, as the decode step uses them."""

    input_norm: torch.Tensor
    input_eps: float
    qkv_weight: torch.Tensor
    """(Hq*D + 2*Hkv*D, hidden): q, k and v projections stacked, one matmul."""
    qkv_bias: torch.Tensor | None
    o_weight: torch.Tensor
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor
    post_eps: float
    gate_up_weight: torch.Tensor
    """(2*intermediate, hidden): gate and up projections stacked."""
    gate_up_bias: torch.Tensor | None
    down_weight: torch.Tensor
    down_bias: torch.Tensor | None
    act: Any
    """The model's own activation module (SiLU for both architectures)."""


@dataclass
class Decoded:
    """What one batch's decoding returns."""

    tokens: torch.Tensor
    """(B, T) new tokens; `pad` after a row's stop token; T = steps until every row stopped."""
    logprobs: torch.Tensor | None
    """(B, T) log-softmax(logits / temperature) of each new token, when asked for."""


def causal_lm(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (LoRA layers stay in place), else `model`."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) and hasattr(model, "peft_config") else model


def unsupported_reason(model: Any) -> str | None:
    """Why `FastDecoder` cannot decode `model` exactly, or None when it can."""
    lm = causal_lm(model)
    name = type(lm).__name__
    if name not in SUPPORTED_ARCHITECTURES:
        return f"architecture {name} (fast decoder: {', '.join(SUPPORTED_ARCHITECTURES)})"
    parameter = next(lm.parameters())
    if parameter.device.type != "cpu":
        return f"device {parameter.device} (the fast decoder is for CPUs; model.generate serves GPUs)"
    if parameter.dtype != torch.float32:
        return f"dtype {parameter.dtype} (transformers upcasts some steps of half-precision models; float32 only)"
    if torch.is_autocast_enabled("cpu"):
        return "CPU autocast is on (the fast decoder computes in the weights' dtype)"
    config = lm.config
    if getattr(config, "use_sliding_window", False) or "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "sliding-window attention"
    if lm.training and getattr(config, "attention_dropout", 0.0):
        return "attention dropout in training mode"
    rope_type = getattr(lm.model.rotary_emb, "rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        return f"RoPE type {rope_type!r} (its table depends on the sequence length)"
    return _processor_reason(lm) or _modules_reason(lm)


def _processor_reason(lm: Any) -> str | None:
    """A generation-config setting `model.generate` would apply that this decoder does not, if any."""
    from transformers import GenerationConfig

    defaults = GenerationConfig()
    config = getattr(lm, "generation_config", None) or defaults
    for field in PROCESSOR_FIELDS:
        if getattr(config, field, None) != getattr(defaults, field, None):
            return f"generation_config.{field}={getattr(config, field)!r}"
    return None


def _modules_reason(lm: Any) -> str | None:
    """Whether every linear layer and the embedding are plain (or vanilla LoRA) modules."""
    if type(lm.model.embed_tokens) is not nn.Embedding:
        return f"embedding {type(lm.model.embed_tokens).__name__}"
    linears = [lm.lm_head]
    for layer in lm.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        linears += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    for module in linears:
        try:
            linear_weights(module)
        except UnsupportedModel as error:
            return str(error)
    return None


def linear_weights(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of what `module(x)` computes: a plain `nn.Linear`, or a PEFT LoRA `Linear`
    whose active vanilla adapters are folded in (W + B @ A * scaling, PEFT's own `get_delta_weight`)."""
    if type(module) is nn.Linear:
        return module.weight, module.bias
    base = getattr(module, "base_layer", None)
    if base is None or type(base) is not nn.Linear or not hasattr(module, "get_delta_weight"):
        raise UnsupportedModel(f"layer {type(module).__name__}")
    if module.disable_adapters or module.merged:
        if module.disable_adapters and module.merged:
            raise UnsupportedModel("a LoRA layer merged with its adapters disabled")
        return base.weight, base.bias  # merged: the base weight already holds the adapters
    weight = base.weight
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        variant = name in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(name, False)
        if variant or getattr(module, "lora_bias", {}).get(name, False):
            raise UnsupportedModel(f"LoRA adapter {name!r} is a variant (DoRA, bias, ...)")
        dropout = module.lora_dropout[name]
        if module.training and not isinstance(dropout, nn.Identity) and getattr(dropout, "p", 0.0) > 0:
            raise UnsupportedModel(f"LoRA dropout of adapter {name!r} in training mode")
        weight = weight + module.get_delta_weight(name)
    return weight, base.bias


def _stack(parts: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weights (and biases, zeros where a part has none) of several linears as one linear."""
    weight = torch.cat([w for w, _ in parts]).contiguous()
    if all(b is None for _, b in parts):
        return weight, None
    biases = [b if b is not None else w.new_zeros(w.shape[0]) for w, b in parts]
    return weight, torch.cat(biases)


def layer_weights(layer: nn.Module) -> LayerWeights:
    """The decode step's view of one `LlamaDecoderLayer` / `Qwen2DecoderLayer` (weights read from its modules)."""
    attn, mlp = layer.self_attn, layer.mlp
    qkv_weight, qkv_bias = _stack([linear_weights(attn.q_proj), linear_weights(attn.k_proj), linear_weights(attn.v_proj)])
    gate_up_weight, gate_up_bias = _stack([linear_weights(mlp.gate_proj), linear_weights(mlp.up_proj)])
    o_weight, o_bias = linear_weights(attn.o_proj)
    down_weight, down_bias = linear_weights(mlp.down_proj)
    return LayerWeights(
        input_norm=layer.input_layernorm.weight,
        input_eps=layer.input_layernorm.variance_epsilon,
        qkv_weight=qkv_weight,
        qkv_bias=qkv_bias,
        o_weight=o_weight,
        o_bias=o_bias,
        post_norm=layer.post_attention_layernorm.weight,
        post_eps=layer.post_attention_layernorm.variance_epsilon,
        gate_up_weight=gate_up_weight,
        gate_up_bias=gate_up_bias,
        down_weight=down_weight,
        down_bias=down_bias,
        act=mlp.act_fn,
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Llama/Qwen2 RMSNorm, operation for operation (float32 statistics). The
    prefill uses it: `F.rms_norm`'s fused CPU kernel gives the same bits but is ~10x slower on
    thousands of rows; the decode step (a few hundred rows at most) uses the fused kernel."""
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """RoPE as transformers applies it, `x*cos + rotate_half(x)*sin`, with the sign of
    rotate_half folded into `signed_sin` (-sin on the first half): the same products, bit
    for bit (negation is exact), in one `roll` instead of a slice, a negation and a cat."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


def sample(probs: torch.Tensor) -> torch.Tensor:
    """One token per row drawn from `probs` (B, V) by inverting the CDF with one uniform per row.

    The same distribution `torch.multinomial` draws from (which spends V exponential draws
    per row: 17 ms a step for SmolLM2's 49k vocabulary at batch 16); the cumulative sum is
    in float64 so the rounding of 49k partial sums does not move any token's share."""
    cdf = probs.to(torch.float64).cumsum(-1)
    u = torch.rand(probs.shape[0], 1, dtype=torch.float64) * cdf[:, -1:]
    # right=True: the first token whose CDF exceeds u, so a zero-probability token (flat CDF) is never drawn.
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(probs.shape[1] - 1)


class PagedCache:
    """Keys and values of every layer, preallocated in blocks of `block` columns:
    `keys[layer][j]` is (A, Hkv, block, D) and holds columns j*block .. (j+1)*block-1.

    Blocks rather than one (A, Hkv, Lq+T, D) tensor: the one-token attention streams the
    filled columns of every row and head from memory, and it does so about 1.7x faster when
    they are packed (measured: 128 rows, 4 layers, 60 of 253 columns filled) than when each
    row's few filled columns sit in a mostly empty stretch of its own.
    """

    def __init__(self, keys: list[list[torch.Tensor]], values: list[list[torch.Tensor]], block: int) -> None:
        self.keys, self.values, self.block = keys, values, block

    @classmethod
    def allocate(cls, layers: int, rows: int, kv_heads: int, columns: int, head_dim: int, dtype: torch.dtype) -> PagedCache:
        """Room for `columns` columns (untouched blocks cost no memory until written)."""
        block = 64 * -(-columns // 256)  # at most about 4 blocks: few matmuls per layer at any length
        count = -(-columns // block)

        def blocks() -> list[torch.Tensor]:
            return [torch.empty(rows, kv_heads, block, head_dim, dtype=dtype) for _ in range(count)]

        return cls([blocks() for _ in range(layers)], [blocks() for _ in range(layers)], block)

    def spans(self, columns: int) -> list[tuple[int, int]]:
        """(block, filled columns of it) covering columns 0..columns-1."""
        return [(j, min(self.block, columns - j * self.block)) for j in range(-(-columns // self.block))]

    def write(self, layer: int, column: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store one (A, Hkv, D) key and value at `column`."""
        j, offset = divmod(column, self.block)
        self.keys[layer][j][:, :, offset] = key
        self.values[layer][j][:, :, offset] = value

    def write_prompt(self, layer: int, rows: slice, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store (b, Hkv, Lq, D) keys and values of `rows` in columns 0..Lq-1."""
        for j, filled in self.spans(keys.shape[2]):
            start = j * self.block
            self.keys[layer][j][rows, :, :filled] = keys[:, :, start : start + filled]
            self.values[layer][j][rows, :, :filled] = values[:, :, start : start + filled]

    def attend(self, layer: int, query: torch.Tensor, bias: torch.Tensor, scaling: float) -> torch.Tensor:
        """softmax(query @ K^T * scaling + bias) @ V over the `bias.shape[-1]` filled columns,
        for (A, Hkv, G, D) queries (a kv head's G query heads are the rows of one matmul:
        GQA without repeating the cache). Returns (A, Hkv, G, D)."""
        keys, values = self.keys[layer], self.values[layer]
        spans = self.spans(bias.shape[-1])
        parts = [torch.matmul(query, keys[j][:, :, :filled].transpose(-1, -2)) for j, filled in spans]
        scores = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        weights = torch.softmax(torch.add(bias, scores, alpha=scaling), dim=-1, dtype=torch.float32).to(query.dtype)
        out = torch.matmul(weights[..., : spans[0][1]], values[0][:, :, : spans[0][1]])
        for j, filled in spans[1:]:
            start = j * self.block
            out += torch.matmul(weights[..., start : start + filled], values[j][:, :, :filled])
        return out

    def select(self, index: torch.Tensor, columns: int) -> PagedCache:
        """The rows `index` (any order, repeats allowed) in fresh blocks; only columns 0..columns-1 are copied."""
        filled = dict(self.spans(columns))

        def pick(blocks: list[torch.Tensor]) -> list[torch.Tensor]:
            out = [b.new_empty((len(index), *b.shape[1:])) for b in blocks]
            for j, count in filled.items():
                out[j][:, :, :count] = blocks[j][:, :, :count].index_select(0, index)
            return out

        return PagedCache([pick(k) for k in self.keys], [pick(v) for v in self.values], self.block)

    def compact(self, holes: torch.Tensor, movers: torch.Tensor, keep: int, columns: int) -> PagedCache:
        """The first `keep` rows of the same blocks, after rows `movers` were copied into rows
        `holes`: only as many rows move as there are holes (fresh blocks would also cost a page
        fault per 4 KB touched, about 10% of a decode on the organism base)."""
        filled = dict(self.spans(columns))

        def pack(blocks: list[torch.Tensor]) -> list[torch.Tensor]:
            for j, count in filled.items():
                blocks[j][holes, :, :count] = blocks[j][movers, :, :count]
            return [b[:keep] for b in blocks]

        return PagedCache([pack(k) for k in self.keys], [pack(v) for v in self.values], self.block)


@dataclass
class Rows:
    """The rows still decoded and what the loop keeps per row; finished rows are dropped
    (`drop_finished`) once enough of them accumulate, so they stop costing matmuls and cache reads."""

    index: torch.Tensor
    """(A,) each active row's index in the batch."""
    cache: PagedCache
    bias: torch.Tensor
    """(A, 1, 1, Lq+T) additive attention mask: the dtype's minimum on the prompt's padding, else 0
    (every generated column is attended to: transformers extends the mask with ones)."""
    position: torch.Tensor
    """(A,) RoPE position of the last token fed or chosen (the next step feeds position + 1)."""
    token: torch.Tensor
    """(A,) the last chosen token (the next step's input)."""
    alive: torch.Tensor
    """(A,) bool: no stop token yet."""

    def drop_finished(self, columns: int) -> Rows:
        """Only the alive rows, packed at the front of the same buffers (their order changes:
        `index` follows them). The last alive rows fill the holes the finished ones leave
        in front, so a compaction copies as many rows as have finished, not all that remain."""
        keep = int(self.alive.sum())
        holes = (~self.alive[:keep]).nonzero().squeeze(1)
        movers = self.alive[keep:].nonzero().squeeze(1) + keep

        def pack(values: torch.Tensor) -> torch.Tensor:
            values[holes] = values[movers]
            return values[:keep]

        return Rows(
            index=pack(self.index),
            cache=self.cache.compact(holes, movers, keep, columns),
            bias=pack(self.bias),
            position=pack(self.position),
            token=pack(self.token),
            alive=torch.ones(keep, dtype=torch.bool),
        )


@dataclass
class Prompts:
    """The prompt batch as the prefill runs it: identical prompts once (a PPO batch repeats
    each task's prompt for its rollouts), and the token prefix every prompt starts with (a
    template's opening: "Numbers: ", a chat model's system turn) once for all rows.

    Cache column layout: the shared prefix in columns 0..P-1, then each prompt's remaining
    tokens left-padded in columns P..Lq-1. Attention ignores column order, RoPE positions are
    `generate`'s (count of earlier real tokens), so this computes what transformers does.
    """

    prefix: torch.Tensor
    """(1, P) the shared first tokens (P may be 0)."""
    rest: torch.Tensor
    """(U, Lq-P) the unique prompts' remaining tokens, left-padded."""
    rest_mask: torch.Tensor
    """(U, Lq-P) 1 on real tokens."""
    inverse: torch.Tensor | None
    """(B,) which unique prompt each row is, or None when all B are distinct."""
    lengths: torch.Tensor
    """(U,) real tokens per unique prompt."""

    @classmethod
    def plan(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor, min_prefix: int = 2) -> Prompts:
        """Split a left-padded batch into unique prompts, their shared prefix and the rest."""
        batch, length = input_ids.shape
        if not bool((attention_mask[:, 1:] >= attention_mask[:, :-1]).all()):
            raise ValueError("fast decoder: prompts must be left-padded")
        inverse = None
        unique, index = torch.unique(torch.cat([input_ids, attention_mask.long()], 1), dim=0, return_inverse=True)
        if len(unique) < batch:
            input_ids, attention_mask, inverse = unique[:, :length], unique[:, length:], index
        lengths = attention_mask.sum(1)
        # Left-aligned real tokens (row b's j-th token at column j): compare rows column by column.
        starts = (length - lengths).unsqueeze(1)
        aligned = input_ids.gather(1, (starts + torch.arange(length)).clamp_max(length - 1))
        limit = int(lengths.min()) - 1  # every prompt keeps at least one token after the prefix
        shared = (aligned == aligned[:1]).all(0)[: max(limit, 0)].long().cumprod(0).sum()
        prefix = int(shared) if len(input_ids) > 1 and int(shared) >= min_prefix else 0
        # Row b's real tokens sit in columns length-lengths[b]..; dropping its first `prefix` of
        # them leaves columns P.. of the input, left-padded by the same mask shifted by P.
        return cls(aligned[:1, :prefix], input_ids[:, prefix:], attention_mask[:, : length - prefix], inverse, lengths)


class FastDecoder:
    """Greedy or temperature sampling of a Llama/Qwen2 model with a preallocated KV cache.

    Built once per `generate` call (the weights are read then: fused copies of the projections,
    LoRA folded in), used for any number of batches. `decode` runs under inference mode.
    """

    #: Drop finished rows once they are this share of the active ones (a compaction copies the
    #: filled cache of as many rows as finished: cheap next to the steps it saves).
    COMPACT_SHARE = 1 / 8
    #: Prompt rows are prefilled in chunks of about this many tokens: the MLP's (tokens x
    #: intermediate) temporaries then stay in cache (one 2560-token pass spent more time in
    #: SiLU and the gate product than in their matmuls).
    PREFILL_TOKENS = 512

    def __init__(self, model: Any) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise UnsupportedModel(f"fast decoder: unsupported {reason}")
        self.model = causal_lm(model)
        inner = self.model.model
        attn = inner.layers[0].self_attn
        config = self.model.config
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = attn.head_dim
        self.scaling = attn.scaling
        with torch.inference_mode():
            self.layers = [layer_weights(layer) for layer in inner.layers]
            self.embed = inner.embed_tokens.weight
            self.final_norm = inner.norm.weight
            self.final_eps = inner.norm.variance_epsilon
            self.lm_head, self.lm_head_bias = linear_weights(self.model.lm_head)
        self.dtype = self.embed.dtype
        self.hidden_size = self.embed.shape[1]
        self.cos = self.signed_sin = torch.empty(0)

    # ---- the whole loop -------------------------------------------------------------------
    @torch.inference_mode()
    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        *,
        eos_token_ids: Sequence[int],
        pad_token_id: int,
        do_sample: bool,
        temperature: float = 1.0,
        return_logprobs: bool = False,
    ) -> Decoded:
        """New tokens for a left-padded batch, as `model.generate` gives them (stop at any of
        `eos_token_ids`, `pad_token_id` after it, stop when every row has stopped)."""
        batch, prompt_len = input_ids.shape
        rows, logits = self._prefill(input_ids, attention_mask, max_new_tokens)
        eos = torch.tensor(list(eos_token_ids), dtype=torch.long)
        tokens = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long)
        logprobs = torch.zeros(batch, max_new_tokens, dtype=torch.float32) if return_logprobs else None
        steps = max_new_tokens
        for step in range(max_new_tokens):
            if step:
                logits = self._logits(self._step(rows, prompt_len + step - 1))
            chosen, chosen_logprobs = choose(logits, do_sample, temperature, return_logprobs)
            chosen = torch.where(rows.alive, chosen, pad_token_id)
            tokens[rows.index, step] = chosen
            if logprobs is not None:
                logprobs[rows.index, step] = chosen_logprobs
            rows.alive &= ~torch.isin(chosen, eos)
            rows.token = chosen
            # One sum per step is the only host sync: on a CPU it costs a B-element reduction.
            alive = int(rows.alive.sum())
            if alive == 0:
                steps = step + 1
                break
            if len(rows.alive) - alive >= self.COMPACT_SHARE * len(rows.alive):
                rows = rows.drop_finished(prompt_len + step)
        return Decoded(tokens[:, :steps], logprobs[:, :steps] if logprobs is not None else None)

    # ---- prefill --------------------------------------------------------------------------
    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> tuple[Rows, torch.Tensor]:
        """Run the prompts through the model (`Prompts`: unique prompts, shared prefix once),
        filling a cache with room for `max_new_tokens` more columns. Returns the rows and the
        last prompt position's (B, V) float32 logits."""
        batch, prompt_len = input_ids.shape
        plan = Prompts.plan(input_ids, attention_mask)
        unique, prefix_len = len(plan.rest), plan.prefix.shape[1]
        columns = prompt_len + max_new_tokens
        self.cos, self.signed_sin = self._rope_tables(int(plan.lengths.max()) + max_new_tokens)
        cache = PagedCache.allocate(len(self.layers), unique, self.num_kv_heads, columns, self.head_dim, self.dtype)
        prefix = self._prompt_pass(plan.prefix, torch.arange(prefix_len).unsqueeze(0), None, None, logits=False)[0] if prefix_len else None
        rest_positions = (prefix_len + plan.rest_mask.cumsum(-1) - 1).masked_fill(plan.rest_mask == 0, 0)
        bias = torch.zeros(unique, 1, 1, columns, dtype=self.dtype)
        bias[:, 0, 0, prefix_len:prompt_len].masked_fill_(plan.rest_mask == 0, torch.finfo(self.dtype).min)
        logits = torch.empty(unique, self.lm_head.shape[0], dtype=torch.float32)
        chunk = max(1, self.PREFILL_TOKENS // plan.rest.shape[1])
        for start in range(0, unique, chunk):
            part = slice(start, start + chunk)
            kv, logits[part] = self._prompt_pass(plan.rest[part], rest_positions[part], bias[part, ..., :prompt_len], prefix, logits=True)
            for layer, (keys, values) in enumerate(kv):
                cache.write_prompt(layer, part, keys, values)
        position, token = plan.lengths.clamp_min(1) - 1, plan.rest[:, -1]
        if plan.inverse is not None:  # repeated prompts: every row gets its prompt's cache
            inverse = plan.inverse
            cache, bias, logits, position, token = (
                cache.select(inverse, prompt_len),
                bias[inverse],
                logits[inverse],
                position[inverse],
                token[inverse],
            )
        rows = Rows(torch.arange(len(bias)), cache, bias, position, token, torch.ones(len(bias), dtype=torch.bool))
        return rows, logits

    def _prompt_pass(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        key_bias: torch.Tensor | None,
        prefix: list[tuple[torch.Tensor, torch.Tensor]] | None,
        *,
        logits: bool,
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]:
        """The forward pass of (b, L) prompt tokens after an optional shared `prefix` (its
        per-layer (1, Hkv, P, D) keys/values). `key_bias` (b, 1, 1, P+L) masks padding.
        Returns every layer's (b, Hkv, P+L, D) keys/values (zeros on padding) and, with
        `logits`, the last position's (b, V) logits. The last layer runs attention and MLP
        for the last position only (nothing reads the others), or not at all without `logits`."""
        rows, length = input_ids.shape
        prefix_len = prefix[0][0].shape[2] if prefix else 0
        hidden = F.embedding(input_ids, self.embed)
        cos, signed_sin = self.cos[positions].unsqueeze(2), self.signed_sin[positions].unsqueeze(2)
        # Query i sits in column P + i and sees columns 0..P+i.
        mask = torch.full((length, prefix_len + length), torch.finfo(self.dtype).min, dtype=self.dtype).triu(prefix_len + 1)
        mask = (mask if key_bias is None else key_bias + mask).view(-1, 1, 1, length, prefix_len + length)
        keep = None if key_bias is None else (key_bias[:, :, :, prefix_len:] == 0).transpose(2, 3)  # (b, 1, L, 1)
        q_width, kv_width = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        kv = []
        for index, layer in enumerate(self.layers):
            last = index == len(self.layers) - 1
            qkv = F.linear(rms_norm(hidden, layer.input_norm, layer.input_eps), layer.qkv_weight, layer.qkv_bias)
            qk = rotate(qkv[..., : q_width + kv_width].view(rows, length, -1, self.head_dim), cos, signed_sin)
            keys = qk[:, :, self.num_heads :].transpose(1, 2)
            values = qkv[..., q_width + kv_width :].view(rows, length, -1, self.head_dim).transpose(1, 2)
            if keep is not None:  # 0 * NaN is NaN: padding holds zeros, whatever its queries computed
                keys, values = torch.where(keep, keys, 0.0), torch.where(keep, values, 0.0)
            if prefix:
                prefix_keys, prefix_values = prefix[index]
                keys = torch.cat([prefix_keys.expand(rows, -1, -1, -1), keys], dim=2)
                values = torch.cat([prefix_values.expand(rows, -1, -1, -1), values], dim=2)
            kv.append((keys, values))
            if last and not logits:
                return kv, None
            queries, residual = (qk[:, -1:], hidden[:, -1:]) if last else (qk, hidden)
            attended = self._prompt_attention(queries[:, :, : self.num_heads], keys, values, mask[..., -1:, :] if last else mask)
            hidden = residual + F.linear(attended, layer.o_weight, layer.o_bias)
            normed = rms_norm(hidden, layer.post_norm, layer.post_eps)
            gate, up = F.linear(normed, layer.gate_up_weight, layer.gate_up_bias).chunk(2, dim=-1)
            hidden = hidden + F.linear(layer.act(gate) * up, layer.down_weight, layer.down_bias)
        return kv, self._logits(rms_norm(hidden[:, -1], self.final_norm, self.final_eps))

    def _prompt_attention(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """softmax(q @ K^T * scale + mask) @ V for (b, Lx, Hq, D) queries over (b, Hkv, Lk, D)
        keys/values; `mask` (b or 1, 1, 1, Lx, Lk). Returns (b, Lx, Hq*D)."""
        rows, length, _, dim = queries.shape
        groups = self.num_heads // self.num_kv_heads
        # (b, Hkv, G*Lx, D): a kv head's G query heads and Lx positions are the rows of one matmul.
        q = queries.reshape(rows, length, self.num_kv_heads, groups, dim).permute(0, 2, 3, 1, 4).reshape(rows, self.num_kv_heads, -1, dim)
        scores = torch.matmul(q, keys.transpose(-1, -2)).view(rows, self.num_kv_heads, groups, length, -1)
        weights = torch.softmax(torch.add(mask, scores, alpha=self.scaling), dim=-1, dtype=torch.float32).to(self.dtype)
        out = torch.matmul(weights.view(rows, self.num_kv_heads, groups * length, -1), values)
        return out.view(rows, self.num_kv_heads, groups, length, dim).permute(0, 3, 1, 2, 4).reshape(rows, length, -1)

    def _rope_tables(self, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions, D) cos and sign-folded sin (`rotate`) of positions 0..positions-1, from
        the model's own `rotary_emb` (its theta, scaling and attention factor)."""
        cos, sin = self.model.model.rotary_emb(self.embed[:1].unsqueeze(0), torch.arange(positions).unsqueeze(0))
        half = self.head_dim // 2
        return cos[0], torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)

    # ---- one decode step --------------------------------------------------------------------
    def _step(self, rows: Rows, column: int) -> torch.Tensor:
        """The final normed hidden state (A, hidden) after feeding `rows.token` at cache `column`."""
        rows.position += 1
        hidden = F.embedding(rows.token, self.embed)
        # (A, 1, D): one position per row, shared by its heads.
        cos, signed_sin = self.cos[rows.position].unsqueeze(1), self.signed_sin[rows.position].unsqueeze(1)
        bias = rows.bias[..., : column + 1]
        shape = (self.hidden_size,)
        q_width, kv_width = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        batch = hidden.shape[0]
        for index, layer in enumerate(self.layers):
            qkv = linear(F.rms_norm(hidden, shape, layer.input_norm, layer.input_eps), layer.qkv_weight, layer.qkv_bias)
            # q and k rotate together: one (A, Hq+Hkv, D) RoPE instead of two.
            qk = rotate(qkv[:, : q_width + kv_width].view(batch, -1, self.head_dim), cos, signed_sin)
            rows.cache.write(index, column, qk[:, self.num_heads :], qkv[:, q_width + kv_width :].view(batch, -1, self.head_dim))
            query = qk[:, : self.num_heads].view(batch, self.num_kv_heads, -1, self.head_dim)
            attended = rows.cache.attend(index, query, bias, self.scaling).view(batch, q_width)
            hidden = _linear_add(hidden, attended, layer.o_weight, layer.o_bias)
            normed = F.rms_norm(hidden, shape, layer.post_norm, layer.post_eps)
            gate, up = linear(normed, layer.gate_up_weight, layer.gate_up_bias).chunk(2, dim=-1)
            hidden = _linear_add(hidden, layer.act(gate) * up, layer.down_weight, layer.down_bias)
        return F.rms_norm(hidden, shape, self.final_norm, self.final_eps)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(A, V) float32 logits of the last position only."""
        return linear(hidden, self.lm_head, self.lm_head_bias).to(torch.float32)


#: A decode step's matmuls have few rows (the batch); MKL runs those up to 1.5x faster when a
#: wide weight is cut into blocks of this many output rows (measured at batch 16: SmolLM2's
#: 49k-row head 35 -> 23 ms, its 3072-row gate/up 1.32 -> 1.10 ms), as a block then fits the L2 cache.
LINEAR_BLOCK = 512
#: Below this many input rows a matmul with a weight of more than 2 blocks is cut.
LINEAR_BLOCK_ROWS = 64


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) for (A, in) `x`; with few rows and a wide weight, computed in
    blocks of `LINEAR_BLOCK` output columns (the same dot products, written into one output)."""
    if x.shape[0] > LINEAR_BLOCK_ROWS or weight.shape[0] <= 2 * LINEAR_BLOCK:
        return F.linear(x, weight, bias)
    out = x.new_empty(x.shape[0], weight.shape[0])
    for start in range(0, weight.shape[0], LINEAR_BLOCK):
        block = slice(start, start + LINEAR_BLOCK)
        if bias is None:
            torch.mm(x, weight[block].t(), out=out[:, block])
        else:
            torch.addmm(bias[block], x, weight[block].t(), out=out[:, block])
    return out


def _linear_add(residual: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """residual + x @ weight^T (+ bias), the residual add folded into the matmul when there is no bias."""
    if bias is None:
        return torch.addmm(residual, x, weight.t())
    return residual + F.linear(x, weight, bias)


def choose(logits: torch.Tensor, do_sample: bool, temperature: float, with_logprobs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The next token of each row as `generate` picks it (argmax, or a draw from
    softmax(logits / temperature)), and its log-softmax(logits / temperature) when asked."""
    if do_sample:
        scores = logits / temperature if temperature != 1.0 else logits  # transformers skips T == 1 too
        chosen = sample(torch.softmax(scores, dim=-1))
    else:
        chosen = torch.argmax(logits, dim=-1)
    if not with_logprobs:
        return chosen, None
    return chosen, torch.log_softmax(logits / temperature, dim=-1).gather(1, chosen.unsqueeze(1)).squeeze(1)
