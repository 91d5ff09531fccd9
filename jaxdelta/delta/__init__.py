"""Delta compression of fine-tunes: extract/apply, compressors, canonical sign packing, healing, files.

Main entry points: :func:`compress`, :func:`extract`, :func:`apply_delta`, :func:`make_compressor`,
:func:`heal`, :func:`save_delta`, :func:`load_delta`, :func:`compress_checkpoints`. Packing layout:
:mod:`jaxdelta.delta.packing`. torch is imported only by :mod:`jaxdelta.delta.release`, when called.
"""

from jaxdelta.delta.algebra import (DEFAULT_MODULES, Delta, DeltaError, apply_delta, compress, compressed_keys,
                                    extract)
from jaxdelta.delta.base import METHODS, Compressor, CompressorError, make_compressor
from jaxdelta.delta.fingerprint import base_fingerprint
from jaxdelta.delta.heal import HealConfig, HealingError, HealResult, heal
from jaxdelta.delta.io import BaseMismatchError, DeltaFileError, load_delta, read_delta_metadata, save_delta
from jaxdelta.delta.methods import *  # noqa: F401,F403  (registers every method)
from jaxdelta.delta.stream import compress_checkpoints

__all__ = ["BaseMismatchError", "Compressor", "CompressorError", "DEFAULT_MODULES", "Delta", "DeltaError",
           "DeltaFileError", "HealConfig", "HealResult", "HealingError", "METHODS", "apply_delta",
           "base_fingerprint", "compress", "compress_checkpoints", "compressed_keys", "extract", "heal",
           "load_delta", "make_compressor", "read_delta_metadata", "save_delta"]
