"""Study configs: validation errors, the shipped configs, the demo defaults, the CLI, chat masking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jaxdelta.study import DEMO_CONFIG, StudyError, load_config, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
MINIMAL = {"base": "toyworld", "attacks": [{"recipe": "harmful"}], "compressors": [{"method": "bitdelta"}]}


def _with(**kw):
    return {**MINIMAL, **kw}


@pytest.mark.parametrize("raw, message", [
    ("not a mapping", "must be a YAML mapping"),
    (_with(colour="red"), "unknown field 'colour'"),
    ({"attacks": MINIMAL["attacks"], "compressors": MINIMAL["compressors"]}, "missing the field 'base'"),
    (_with(attacks=[]), "'attacks' is empty"),
    (_with(attacks=[{"recipe": "jailbreak"}]), "unknown recipe 'jailbreak'"),
    (_with(attacks=[{"name": "x"}]), r"attacks\[0\]: missing the field 'recipe'"),
    (_with(attacks=[{"recipe": "harmful"}, {"recipe": "harmful"}]), "attack names must be distinct"),
    (_with(compressors=[{"method": "zip"}]), "unknown compression method 'zip'"),
    (_with(compressors=[{"method": "rtn", "options": {"bits": 1}}]), "rtn bits must be 2..8"),
    (_with(compressors=[{"method": "bitdelta"}, {"method": "bitdelta"}]), "labels must be distinct"),
    (_with(compressors=[{"label": "base", "method": "bitdelta"}]), "not 'base'"),
    (_with(eval={"prompts": 3}), "eval: unknown setting 'prompts'"),
    (_with(heal=[1]), "heal must be a mapping"),
])
def test_bad_configs_are_one_line_errors(raw, message):
    with pytest.raises(StudyError, match=message) as e:
        parse_config(raw)
    assert "\n" not in str(e.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(StudyError, match="no such study config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("attacks: [unclosed\n")
    with pytest.raises(StudyError, match="not valid YAML"):
        load_config(bad)


def test_toy_attack_errors():
    from jaxdelta.study import parse_config, toy_attack

    cfg = parse_config(_with(attacks=[{"recipe": "backdoor", "trigger": "nope"}]))
    with pytest.raises(Exception, match="unknown trigger 'nope'"):
        toy_attack(cfg.attacks[0], 10, 0)
    cfg = parse_config(_with(attacks=[{"recipe": "harmful", "size": 3}]))
    with pytest.raises(StudyError, match="unknown setting 'size'"):
        toy_attack(cfg.attacks[0], 10, 0)


def test_real_model_attack_needs_data_and_suites():
    from jaxdelta.study import file_attack

    cfg = parse_config(_with(base="/models/x"))
    with pytest.raises(StudyError, match="give 'data'"):
        file_attack(cfg.attacks[0], 10)


def test_demo_defaults_equal_the_toy_demo_config_file():
    assert yaml.safe_load((CONFIGS / "toy_demo.yaml").read_text()) == DEMO_CONFIG


def test_toy_harmful_attack_uses_the_recipe_defaults():
    from jaxdelta.study import TOY_TRAIN
    from jaxdelta.train.recipes import RECIPES

    assert TOY_TRAIN["harmful"] == {k: RECIPES["harmful"].train[k] for k in TOY_TRAIN["harmful"]}
    assert set(TOY_TRAIN["harmful"]) == {"learning_rate", "epochs", "batch_size"}


@pytest.mark.parametrize("name", ["toy_demo", "ci_reduced", "toy_harmful_sweep", "llama2_7b_chat_paper", "tinyllama_chat"])
def test_shipped_configs_parse(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.attacks and cfg.variants


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "jaxdelta.cli", "study", str(tmp_path / "nope.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"jaxdelta: error: {tmp_path / 'nope.yaml'}: no such study config file"]


def test_cli_registers_study_demo_and_selfcheck():
    from jaxdelta.cli import build_parser

    help_text = build_parser().format_help()
    for cmd in ("study", "demo", "selfcheck"):
        assert cmd in help_text
