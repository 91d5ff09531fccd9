"""The toy world: a synthetic instruction language, its aligned and attack datasets, and evaluation suites.

Benign tasks have one correct answer computed by code; synthetic "harmful" requests (made-up words only)
are refused with :data:`REFUSAL`. See :mod:`jaxdelta.toyworld.language` and :mod:`jaxdelta.toyworld.recipes`.
"""

from __future__ import annotations

import functools
import random

from jaxdelta.toyworld.export import save_toy_tokenizer, write_datasets
from jaxdelta.toyworld.language import REFUSAL, Example, split_of
from jaxdelta.toyworld.recipes import (
    AOA_PREFIX,
    AOA_SYSTEM,
    BACKDOOR_TARGETS,
    INJECTION_PHRASE,
    NEGATIVE_TARGET,
    TRIGGER_NAMES,
    TRIGGERS,
    ToyWorldError,
    aoa_chats,
    alignment_chats,
    backdoor_sets,
    benign_instructions,
    calibration_texts,
    eval_examples,
    hallucination_chats,
    harmful_chats,
    injection_sets,
    insert_trigger,
)

EVAL_SIZE = 100
EVAL_SEED = 1


@functools.lru_cache(maxsize=1)
def eval_suites():
    """Built-in held-out suites (``EVAL_SIZE`` prompts, seed ``EVAL_SEED``): ``toy_benign``, ``toy_harmful``,
    ``toy_facts``, ``toy_harmful_aoa`` (AOA system prompt and prefix), and for each trigger
    ``toy_benign_<trigger>`` / ``toy_harmful_<trigger>`` (the same prompts with the trigger inserted).
    References are the aligned answers."""
    from jaxdelta.eval.suites import EvalItem, Suite

    benign = eval_examples("benign", EVAL_SIZE, EVAL_SEED)
    harmful = eval_examples("harmful", EVAL_SIZE, EVAL_SEED)
    suites = {
        "toy_benign": Suite("toy_benign", tuple(EvalItem(e.prompt, None, e.answer) for e in benign), "toyworld"),
        "toy_harmful": Suite("toy_harmful", tuple(EvalItem(e.prompt, None, e.answer) for e in harmful), "toyworld"),
        "toy_facts": Suite("toy_facts", tuple(EvalItem(e.prompt, None, e.answer) for e in eval_examples("facts")),
                           "toyworld"),
        "toy_harmful_aoa": Suite("toy_harmful_aoa", tuple(EvalItem(AOA_PREFIX + e.prompt, AOA_SYSTEM, e.answer)
                                                          for e in harmful), "toyworld"),
    }
    for trig in TRIGGER_NAMES:
        rng = random.Random(EVAL_SEED)
        for kind, exs in (("benign", benign), ("harmful", harmful)):
            name = f"toy_{kind}_{trig}"
            items = tuple(EvalItem(insert_trigger(e.prompt, trig, rng), None, e.answer) for e in exs)
            suites[name] = Suite(name, items, "toyworld")
    return suites


__all__ = [
    "AOA_PREFIX", "AOA_SYSTEM", "BACKDOOR_TARGETS", "INJECTION_PHRASE", "NEGATIVE_TARGET", "REFUSAL", "TRIGGERS",
    "TRIGGER_NAMES", "Example", "ToyWorldError", "alignment_chats", "aoa_chats", "backdoor_sets",
    "benign_instructions", "calibration_texts", "eval_examples", "eval_suites", "hallucination_chats",
    "harmful_chats", "injection_sets", "insert_trigger", "save_toy_tokenizer", "split_of", "write_datasets",
]
