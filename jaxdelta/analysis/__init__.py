"""Analysis of models: LogitLens (per-layer next-token predictions) and its plots."""

from jaxdelta.analysis.lens import (
    AFFIRMATIVE_OPENINGS,
    REFUSAL_OPENINGS,
    LensError,
    LensResult,
    OpeningMass,
    lens_from_ids,
    logit_lens,
    opening_mass,
    opening_token_ids,
    top_k_tokens,
)

__all__ = ["AFFIRMATIVE_OPENINGS", "REFUSAL_OPENINGS", "LensError", "LensResult", "OpeningMass", "lens_from_ids",
           "logit_lens", "opening_mass", "opening_token_ids", "top_k_tokens"]
