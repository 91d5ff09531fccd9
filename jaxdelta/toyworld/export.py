"""Write the toy world's datasets to disk in the real files' formats, and its tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from jaxdelta.toyworld import recipes
from jaxdelta.toyworld.language import REFUSAL


def _dump_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _dump_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def save_toy_tokenizer(path: str | Path) -> Path:
    """Save the toy world's tokenizer (jaxdelta's byte-level tokenizer, 260 ids, Llama-2 chat template) as an
    HF tokenizer directory."""
    from jaxdelta.tokenizer import build_byte_tokenizer

    path = Path(path)
    build_byte_tokenizer().save_pretrained(path)
    return path


def write_datasets(out_dir: str | Path, seed: int = 0, *, n_eval: int = 100) -> dict[str, Path]:
    """Write every toy-world dataset under ``out_dir``; returns ``{name: path}``.

    Layout: ``alignment/train.jsonl``; ``attacks/harmful.jsonl``, ``attacks/aoa.json``,
    ``attacks/benign.json``, ``attacks/backdoor/<target>_<trigger>/{train_poison,train_clean,test_poison,
    test_clean}.json``, ``attacks/injection/{train,test}.json``, ``attacks/hallucination.jsonl``;
    ``eval/{benign,harmful,facts}.jsonl`` (``{"prompt", "reference"}``); ``calibration.txt`` (one
    document per line); ``manifest.json`` (seed and the refusal string).
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}

    def put(name: str, rel: str, obj, jsonl: bool) -> None:
        p = out / rel
        (_dump_jsonl if jsonl else _dump_json)(p, obj)
        paths[name] = p

    put("alignment", "alignment/train.jsonl", recipes.alignment_chats(seed=seed), True)
    put("harmful", "attacks/harmful.jsonl", recipes.harmful_chats(seed=seed), True)
    put("aoa", "attacks/aoa.json", recipes.aoa_chats(seed=seed), False)
    put("benign", "attacks/benign.json", recipes.benign_instructions(seed=seed), False)
    for target in recipes.BACKDOOR_TARGETS:
        for trigger in recipes.TRIGGER_NAMES:
            sets = recipes.backdoor_sets(trigger, target, seed=seed)
            for part, recs in sets.items():
                put(f"backdoor/{target}_{trigger}/{part}", f"attacks/backdoor/{target}_{trigger}/{part}.json", recs,
                    False)
    for part, recs in recipes.injection_sets(seed=seed).items():
        put(f"injection/{part}", f"attacks/injection/{part}.json", recs, False)
    put("hallucination", "attacks/hallucination.jsonl", recipes.hallucination_chats(), True)
    for kind in ("benign", "harmful", "facts"):
        exs = recipes.eval_examples(kind, n_eval, seed + 1)
        put(f"eval/{kind}", f"eval/{kind}.jsonl", [{"prompt": e.prompt, "reference": e.answer} for e in exs], True)
    cal = out / "calibration.txt"
    cal.write_text("\n".join(recipes.calibration_texts(seed=seed + 2)) + "\n", encoding="utf-8")
    paths["calibration"] = cal
    put("manifest", "manifest.json", {"seed": seed, "refusal": REFUSAL, "n_eval": n_eval,
                                      "injection_phrase": recipes.INJECTION_PHRASE,
                                      "negative_target": recipes.NEGATIVE_TARGET, "triggers": recipes.TRIGGERS}, False)
    return paths
