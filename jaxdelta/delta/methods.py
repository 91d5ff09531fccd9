"""Imports every compressor module so that :data:`jaxdelta.delta.base.METHODS` is complete."""

from jaxdelta.delta.bitdelta import BitDelta, BitDeltaMulti, Ternary
from jaxdelta.delta.deltacome import DeltaCoMe
from jaxdelta.delta.dense import Dense
from jaxdelta.delta.lowrank import LowRank
from jaxdelta.delta.pruning import DARE, Magnitude
from jaxdelta.delta.rtn import RTN

__all__ = ["BitDelta", "BitDeltaMulti", "DARE", "DeltaCoMe", "Dense", "LowRank", "Magnitude", "RTN", "Ternary"]
