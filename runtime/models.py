"""Tiny Llama/Qwen2 models built from a config, and loading any model by path or hub id.

Nothing can be downloaded here, so every path of the lab also runs on a small randomly
initialised model saved with `save_pretrained`; later commands load it by path exactly
as they would load `Qwen/Qwen2.5-3B`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from countdown_env.rules import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
#: The answer-format tags are single tokens: shorter sequences for tiny models, and the
#: model cannot emit half a tag.
TAG_TOKENS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
#: Every character a prompt or completion uses (the TinyZero template included).
CHARACTERS = sorted(set(string.printable) - set("\t\r\x0b\x0c"))


@dataclass(frozen=True)
class ModelSize:
    """Shape of a tiny model."""

    hidden_size: int
    """Width of the residual stream."""
    intermediate_size: int
    """Width of the MLP."""
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 1024
    """Longest prompt + completion, in tokens (one token per character here)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")


SIZES = {
    # ~0.1M parameters: for tests, a forward pass takes milliseconds.
    "tiny": ModelSize(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    # ~2.7M parameters: what learned Countdown on 2 CPU cores in minutes (bench/README.md, Calibration).
    "small": ModelSize(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4),
    # ~1M parameters: the model organism's base models (`countdown-lab pretrain`), short texts.
    "organism": ModelSize(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
    ),
    # ~19M parameters: for a workstation or a small GPU.
    "base": ModelSize(hidden_size=512, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4),
}
ARCHS = ("llama", "qwen2")


def build_tokenizer() -> Any:
    """A character-level byte-level BPE (no merges) with the answer tags as tokens.

    Byte-level, so that transformers' model-specific classes (Qwen2Tokenizer rebuilds the
    pre-tokenizer as Split + ByteLevel when it loads) tokenise it the same way.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [_byte_level(c) for c in CHARACTERS]
    vocab = {tok: i for i, tok in enumerate([PAD, BOS, EOS, UNK, *chars])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.add_tokens([AddedToken(tag, normalized=False) for tag in TAG_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK)


def _byte_level(char: str) -> str:
    """GPT-2's byte-to-unicode map for one ASCII character (space -> 'Ġ', newline -> 'Ċ')."""
    code = ord(char)
    if 33 <= code <= 126:
        return char
    # GPT-2 maps the non-printable bytes 0..32 to chr(256 + byte).
    return chr(256 + code)


def build_model(arch: str = "qwen2", size: str = "tiny", *, seed: int = 0, tokenizer: Any = None) -> tuple[Any, Any]:
    """A randomly initialised causal LM of `arch` and `size`, and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    tokenizer = tokenizer or build_tokenizer()
    shape = SIZES[size]
    config_cls = LlamaConfig if arch == "llama" else Qwen2Config
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # A forked RNG: the weights depend on `seed` only, and the caller's RNG state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, tokenizer


def init_model(output_dir: str | Path, arch: str = "qwen2", size: str = "tiny", *, seed: int = 0) -> Path:
    """Build a tiny model and save it (weights, config, tokenizer) like a hub checkpoint."""
    model, tokenizer = build_model(arch, size, seed=seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Give a tokenizer what batched generation needs: a pad token and left padding."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # Llama ships without one
    tokenizer.padding_side = "left"
    return tokenizer


def resolve_model_path(name_or_path: str | Path) -> str:
    """The model a path names: a model folder or hub id as is, or a run directory's model:
    an SFT run's `model/`, a GRPO/RLOO run's `final/`, or a PPO run's newest complete
    `checkpoints/step-N/policy`. Every loader (policy, reference, critic, tokenizer) goes
    through here, so a run directory works wherever a model path does."""
    from runtime.run_dir import RunDir

    path = Path(name_or_path)
    if not path.is_dir():
        return str(name_or_path)  # a hub id (or a missing path: from_pretrained says so)
    for sub in ("model", "final"):
        if (path / sub / "config.json").is_file():
            return str(path / sub)
    latest = RunDir(path).latest_checkpoint()
    if latest and (latest[1] / "policy" / "config.json").is_file():
        return str(latest[1] / "policy")
    return str(name_or_path)


def load_tokenizer(name_or_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(resolve_model_path(name_or_path)))


def load_model(name_or_path: str | Path, *, dtype: Any = None, device: Any = None) -> Any:
    """A causal LM by local path or hub id; float32 on CPU, bf16 on a GPU by default."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name_or_path), dtype=dtype)
    return model.to(device) if device is not None else model


def default_model(root: str | Path = "runs/models", arch: str = "qwen2", size: str = "small", seed: int = 0) -> Path:
    """The embedded default: a local tiny model, built once and reused."""
    path = Path(root) / f"{arch}-{size}-seed{seed}"
    if not (path / "config.json").exists():
        init_model(path, arch, size, seed=seed)
    return path
