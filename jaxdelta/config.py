"""Model configuration: the Llama family as Hugging Face's ``config.json`` describes it.

One dataclass covers Llama-2, Llama-3/3.1/3.2, Mistral and Qwen2. It reads both spellings of the RoPE
settings: transformers 5 writes ``rope_parameters`` (with ``rope_theta`` inside), older files write
``rope_theta`` and ``rope_scaling`` at the top level.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from jaxdelta.errors import CheckpointError, UnsupportedModelError

# model_type -> the architecture class name transformers uses for it.
SUPPORTED_MODEL_TYPES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}
SUPPORTED_ARCHITECTURES = tuple(SUPPORTED_MODEL_TYPES.values())

# RoPE variants transformers defines for these models ("default" is plain RoPE).
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")

_ACTIVATIONS = ("silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters of a Llama-family decoder (field names follow transformers)."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": ..., factor, ...}; None = default RoPE
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Llama: bias on q/k/v/o
    mlp_bias: bool = False
    qkv_bias: bool = False  # Qwen2: bias on q/k/v only
    hidden_act: str = "silu"
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None  # "full_attention" / "sliding_attention" per layer
    model_type: str = "llama"
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"model_type {self.model_type!r} is not supported; jaxdelta supports "
                f"{', '.join(SUPPORTED_ARCHITECTURES)} (model_type {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise CheckpointError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise UnsupportedModelError(
                f"hidden_act {self.hidden_act!r} is not supported; use one of {', '.join(_ACTIVATIONS)}"
            )
        if self.rope_type not in ROPE_TYPES:
            raise UnsupportedModelError(
                f"rope type {self.rope_type!r} is not supported; use one of {', '.join(ROPE_TYPES)}"
            )
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_hidden_layers:
                raise CheckpointError(
                    f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers"
                )
            object.__setattr__(self, "layer_types", tuple(self.layer_types))

    # ------------------------------------------------------------------ derived
    @property
    def rope_type(self) -> str:
        if not self.rope_scaling:
            return "default"
        return self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))

    @property
    def architecture(self) -> str:
        return SUPPORTED_MODEL_TYPES[self.model_type]

    @property
    def q_bias(self) -> bool:
        return self.attention_bias or self.qkv_bias

    @property
    def o_bias(self) -> bool:
        return self.attention_bias

    def window_for_layer(self, i: int) -> int | None:
        """Sliding-window size of layer ``i`` (None = full causal attention)."""
        if self.sliding_window is None:
            return None
        if self.layer_types is None:
            return self.sliding_window
        return self.sliding_window if self.layer_types[i] == "sliding_attention" else None

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def num_parameters(self) -> int:
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
        per_layer += (q + 2 * kv) * self.q_bias + h * self.o_bias + (2 * i + h) * self.mlp_bias
        total = v * h + self.num_hidden_layers * per_layer + h
        return total + (0 if self.tie_word_embeddings else v * h)

    # ------------------------------------------------------------------ HF dicts
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "LlamaConfig":
        """Build from a parsed ``config.json`` (either RoPE spelling)."""
        model_type = d.get("model_type")
        archs = d.get("architectures") or []
        if model_type not in SUPPORTED_MODEL_TYPES:
            named = model_type or (archs[0] if archs else "unknown")
            raise UnsupportedModelError(
                f"architecture {named!r} is not supported; jaxdelta supports "
                f"{', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        for arch in archs:
            if arch not in SUPPORTED_ARCHITECTURES:
                raise UnsupportedModelError(
                    f"architecture {arch!r} is not supported; jaxdelta supports "
                    f"{', '.join(SUPPORTED_ARCHITECTURES)}"
                )
        rope_theta = d.get("rope_theta")
        rope_scaling = d.get("rope_scaling")
        params = d.get("rope_parameters")
        if isinstance(params, dict) and params:
            if "full_attention" in params and isinstance(params["full_attention"], dict):
                params = params["full_attention"]  # per-layer-type form; these models use one
            params = dict(params)
            rope_theta = params.pop("rope_theta", rope_theta)
            if params.get("rope_type", params.get("type", "default")) != "default":
                rope_scaling = params
        if rope_scaling is not None:
            rope_scaling = dict(rope_scaling)
            if "type" in rope_scaling and "rope_type" not in rope_scaling:
                rope_scaling["rope_type"] = rope_scaling.pop("type")
            if rope_scaling.get("rope_type", "default") == "default":
                rope_scaling = None
        sliding = d.get("sliding_window")
        layer_types = d.get("layer_types")
        if model_type == "qwen2":
            if not d.get("use_sliding_window", False):
                sliding, layer_types = None, None
            elif layer_types is None:
                mwl = d.get("max_window_layers", d["num_hidden_layers"])
                layer_types = [
                    "sliding_attention" if i >= mwl else "full_attention"
                    for i in range(d["num_hidden_layers"])
                ]
        if model_type == "llama":
            sliding, layer_types = None, None
        kwargs = dict(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d.get("num_key_value_heads"),
            head_dim=d.get("head_dim"),
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta if rope_theta is not None else 10000.0),
            rope_scaling=rope_scaling,
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            attention_bias=bool(d.get("attention_bias", False)),
            mlp_bias=bool(d.get("mlp_bias", False)),
            qkv_bias=model_type == "qwen2",
            hidden_act=d.get("hidden_act", "silu"),
            sliding_window=sliding,
            layer_types=tuple(layer_types) if layer_types is not None else None,
            model_type=model_type,
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=d.get("eos_token_id"),
            pad_token_id=d.get("pad_token_id"),
            initializer_range=d.get("initializer_range", 0.02),
        )
        try:
            return cls(**kwargs)
        except TypeError as e:  # pragma: no cover - defensive
            raise CheckpointError(f"config.json is malformed: {e}") from None

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "LlamaConfig":
        """Read ``config.json`` from an HF checkpoint directory."""
        path = Path(path)
        f = path / "config.json" if path.is_dir() else path
        if not f.exists():
            raise CheckpointError(f"{path}: no config.json found (is this a Hugging Face checkpoint directory?)")
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{f}: not valid JSON ({e.msg} at line {e.lineno})") from None
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in d and d.get("model_type") in SUPPORTED_MODEL_TYPES]
        if missing:
            raise CheckpointError(f"{f}: missing required field(s) {', '.join(missing)}")
        return cls.from_hf_dict(d)

    def to_hf_dict(self, dtype: str | None = None) -> dict[str, Any]:
        """A ``config.json`` dict that transformers (4.45+ and 5.x) loads."""
        d: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": dict(self.rope_scaling) if self.rope_scaling else None,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": self.hidden_act,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "initializer_range": self.initializer_range,
        }
        if self.model_type == "llama":
            d["attention_bias"] = self.attention_bias
            d["mlp_bias"] = self.mlp_bias
        if self.model_type in ("mistral", "qwen2"):
            d["sliding_window"] = self.sliding_window
        if self.model_type == "qwen2":
            d["use_sliding_window"] = self.sliding_window is not None
            if self.layer_types is not None:
                d["layer_types"] = list(self.layer_types)
                n_full = sum(t == "full_attention" for t in self.layer_types)
                d["max_window_layers"] = n_full
        if dtype is not None:
            d["torch_dtype"] = dtype
        return d

    def __hash__(self) -> int:  # rope_scaling is a dict; hash the canonical JSON form
        return hash(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))

    def replace(self, **changes) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)
