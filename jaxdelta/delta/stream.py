"""Streaming compression of a base/fine-tuned checkpoint pair, one tensor at a time.

Host memory stays at one base tensor + one fine-tuned tensor + the output (encodings and carried
tensors), far below two models; the base fingerprint is computed in the same pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import safe_open

from jaxdelta.checkpoint.hf import _check_dir, weight_files
from jaxdelta.config import LlamaConfig
from jaxdelta.delta.algebra import DEFAULT_MODULES, Delta, DeltaError, _canonical_json, compressed_keys
from jaxdelta.delta.base import Compressor, make_compressor
from jaxdelta.delta.fingerprint import Fingerprinter
from jaxdelta.errors import CheckpointError


class _Reader:
    """Lazy per-tensor reader over an HF checkpoint directory's safetensors files."""

    def __init__(self, path: Path):
        self.path = path
        self.files = weight_files(path)
        self._handles = {}

    def shape(self, key) -> tuple[int, ...]:
        return tuple(self._handle(key).get_slice(key).get_shape())

    def get(self, key) -> np.ndarray:
        return self._handle(key).get_tensor(key)

    def _handle(self, key):
        if key not in self.files:
            raise CheckpointError(f"{self.path}: checkpoint lacks tensor {key}")
        f = self.files[key]
        if f not in self._handles:
            self._handles[f] = safe_open(str(f), framework="np").__enter__()
        return self._handles[f]

    def close(self):
        for h in self._handles.values():
            h.__exit__(None, None, None)
        self._handles.clear()


def compress_checkpoints(base_dir: str | Path, finetuned_dir: str | Path, compressor: Compressor | str, *,
                         modules=DEFAULT_MODULES, compress_embeddings: bool = False, progress: bool = True
                         ) -> tuple[LlamaConfig, Delta]:
    """Compress ``finetuned - base`` from two HF checkpoint directories, streaming tensor by tensor.

    Returns ``(config, delta)``; carried tensors keep the fine-tuned file's dtype and the delta carries
    the base fingerprint.
    """
    from jaxdelta.models.params import abstract_params

    if isinstance(compressor, str):
        compressor = make_compressor(compressor)
    base_dir, finetuned_dir = _check_dir(base_dir), _check_dir(finetuned_dir)
    config = LlamaConfig.from_pretrained(base_dir)
    ft_config = LlamaConfig.from_pretrained(finetuned_dir)
    _, abstract = abstract_params(config, "float32")
    _, ft_abstract = abstract_params(ft_config, "float32")
    if {k: v.shape for k, v in abstract.items()} != {k: v.shape for k, v in ft_abstract.items()}:
        raise DeltaError(f"{base_dir} and {finetuned_dir} have different architectures (parameter names or "
                         "shapes differ); a delta needs a fine-tune of this base")
    keys = sorted(abstract)
    comp_keys = set(compressed_keys(keys, modules, compress_embeddings))
    base, ft = _Reader(base_dir), _Reader(finetuned_dir)
    fp = Fingerprinter()
    encoded, carried, shapes = {}, {}, []
    it = keys
    if progress:
        from rich.progress import track

        it = track(keys, description=f"compressing ({compressor.name})")
    try:
        for k in it:
            want = tuple(abstract[k].shape)
            for r in (base, ft):
                if r.shape(k) != want:
                    raise CheckpointError(f"{r.path}: tensor {k} has shape {r.shape(k)}, the config needs {want}")
            b = base.get(k)
            fp.update(k, b)
            f = ft.get(k)
            if k in comp_keys:
                d = f.astype(np.float32) - b.astype(np.float32)
                del b, f
                encoded[k] = compressor.encode(d, k)
                shapes.append((k, want))
            else:
                carried[k] = f
    finally:
        base.close()
        ft.close()
    return config, Delta(encoded=encoded, carried=carried, method=compressor.name,
                         params_json=_canonical_json(compressor.params()), shapes=tuple(shapes),
                         base_fingerprint=fp.hexdigest())
