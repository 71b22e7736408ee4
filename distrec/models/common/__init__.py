"""Blocks shared by more than one model (sequence data adapter for DisMIR and MDGR)."""

from distrec.models.common.sequence_data import (
    SequenceData,
    SequenceDataOptions,
    build_sequence_data,
)

__all__ = ["SequenceData", "SequenceDataOptions", "build_sequence_data"]
