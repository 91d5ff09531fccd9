"""jaxdelta: security of compressed fine-tunes, in JAX.

Public API of the foundation: :func:`load_model`, :func:`save_model`, :func:`load_tokenizer`,
:func:`generate`, :class:`LlamaConfig`, :class:`LlamaForCausalLM`.
"""

from importlib.metadata import PackageNotFoundError, version

from jaxdelta.checkpoint.hf import load_model, save_model
from jaxdelta.config import SUPPORTED_ARCHITECTURES, LlamaConfig
from jaxdelta.errors import JaxDeltaError
from jaxdelta.eval.generate import generate
from jaxdelta.models.llama import LlamaForCausalLM
from jaxdelta.tokenizer import load_tokenizer

try:
    __version__ = version("jaxdelta")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["JaxDeltaError", "LlamaConfig", "LlamaForCausalLM", "SUPPORTED_ARCHITECTURES", "__version__",
           "generate", "load_model", "load_tokenizer", "save_model"]
