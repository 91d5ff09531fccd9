"""The jaxdelta command line: help, version, generate, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from flax import nnx

import jaxdelta
from jaxdelta.cli import main
from jaxdelta.config import LlamaConfig
from jaxdelta.models.llama import LlamaForCausalLM

TINY = LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, byte_tokenizer):
    path = tmp_path_factory.mktemp("cli")
    model = LlamaForCausalLM(TINY, rngs=nnx.Rngs(0))
    jaxdelta.save_model(model, path)
    byte_tokenizer.save_pretrained(path)
    return model, path


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


def test_help_and_version():
    r = subprocess.run([sys.executable, "-m", "jaxdelta.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "generate" in r.stdout and "demo" in r.stdout
    r = subprocess.run([sys.executable, "-m", "jaxdelta.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"jaxdelta {jaxdelta.__version__}"


def test_generate_prints_what_the_api_returns(model_dir, capsys, byte_tokenizer):
    model, path = model_dir
    rc = main(["generate", "--model", str(path), "--prompt", "Hello", "--prompt", "Bye", "--max-new-tokens", "8",
               "--json"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    expected = jaxdelta.generate(model, byte_tokenizer, ["Hello", "Bye"], max_new_tokens=8)
    assert [x["completion"] for x in lines] == expected
    rc = main(["generate", "--model", str(path), "--prompt", "Hi", "--chat", "--max-new-tokens", "4",
               "--temperature", "0.8", "--top-p", "0.9", "--seed", "2"])
    assert rc == 0


def test_missing_model_path(capsys):
    assert main(["generate", "--model", "/no/such/dir", "--prompt", "x"]) == 2
    assert _error_line(capsys) == "jaxdelta: error: /no/such/dir: no such file or directory"


def test_unsupported_architecture(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["FalconForCausalLM"], "model_type": "falcon"}))
    assert main(["generate", "--model", str(tmp_path), "--prompt", "x"]) == 2
    line = _error_line(capsys)
    assert "'falcon' is not supported; jaxdelta supports LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM" in line


def test_pickle_only_checkpoint(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(TINY.to_hf_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    assert main(["generate", "--model", str(tmp_path), "--prompt", "x"]) == 2
    assert "only pickle checkpoints (pytorch_model.bin); jaxdelta never loads pickle" in _error_line(capsys)


def test_missing_and_misshaped_tensors(model_dir, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    _, path = model_dir
    t = load_file(str(path / "model.safetensors"))
    t.pop("model.layers.0.mlp.down_proj.weight")
    t["model.layers.1.self_attn.q_proj.weight"] = t["model.layers.1.self_attn.q_proj.weight"][:16]
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    save_file(t, str(tmp_path / "model.safetensors"))
    assert main(["generate", "--model", str(tmp_path), "--prompt", "x"]) == 2
    assert "lacks 1 tensor(s) the config needs: model.layers.0.mlp.down_proj.weight" in _error_line(capsys)
    t["model.layers.0.mlp.down_proj.weight"] = t["model.layers.0.mlp.up_proj.weight"].T.copy()
    save_file(t, str(tmp_path / "model.safetensors"))
    assert main(["generate", "--model", str(tmp_path), "--prompt", "x"]) == 2
    assert "tensor model.layers.1.self_attn.q_proj.weight has shape (16, 32), the config needs (32, 32)" in \
        _error_line(capsys)


def test_prompt_longer_than_context(model_dir, capsys):
    _, path = model_dir
    assert main(["generate", "--model", str(path), "--prompt", "y" * 80]) == 2
    assert _error_line(capsys) == ("jaxdelta: error: prompt of 81 tokens is longer than the model's context of "
                                   "64 tokens")


def test_bad_dtype(model_dir, capsys):
    _, path = model_dir
    assert main(["generate", "--model", str(path), "--prompt", "x", "--dtype", "int3"]) == 2
    assert _error_line(capsys).startswith("jaxdelta: error: unknown dtype 'int3'; use one of float32")


def test_console_script_runs_a_subprocess_error_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "jaxdelta.cli", "generate", "--model", str(tmp_path / "x"),
                        "--prompt", "hi"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().endswith("no such file or directory")


def test_selfcheck_runs_and_matches_transformers(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["selfcheck", "--out", str(tmp_path), "--max-new-tokens", "8"]) == 0
    report = json.loads((tmp_path / "selfcheck.json").read_text())
    assert report["transformers"]["identical_tokens"] is True
    assert (tmp_path / "random-llama" / "model.safetensors").exists()
