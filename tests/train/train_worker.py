"""Shared by the trainer tests and run as a script in subprocesses (simulated devices, several processes).

``python train_worker.py '<json spec>'`` trains the tiny model and prints ``{"losses": [...],
"params": {key: nested list}}`` (params only from process 0).
"""

import json
import sys


SPEC_DEFAULTS = dict(mesh=None, steps=3, batch_size=4, micro_batch_size=2, vocab_size=260, lr=1e-2,
                     coordinator=None, num_processes=None, process_id=None, compare_meshes=None)


def tiny_config(vocab_size=260):
    from jaxdelta.config import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def tiny_params(cfg, seed=0):
    from flax import nnx

    from jaxdelta.models.llama import LlamaForCausalLM
    from jaxdelta.models.params import split_params

    return split_params(LlamaForCausalLM(cfg, rngs=nnx.Rngs(seed)))[1]


def tiny_examples(n=12):
    from jaxdelta.data import tokenize_conversations
    from jaxdelta.tokenizer import build_byte_tokenizer

    tok = build_byte_tokenizer()
    convs = [[{"role": "user", "content": f"What is {i} plus {i}?" + " please" * (i % 4)},
              {"role": "assistant", "content": f"It is {2 * i}."}] for i in range(n)]
    return tokenize_conversations(tok, convs, 128)


def batches_for(examples, batch_size, micro_batch_size, row_multiple=1, seed=0):
    """Every batch padded to 128 tokens: one compiled shape per run."""
    from jaxdelta.data import SFTBatches

    return SFTBatches(examples, batch_size, micro_batch_size=micro_batch_size, max_length=128, pad_id=3,
                      seed=seed, pad_multiple=128, row_multiple=row_multiple)


def run_training(spec, mesh, params=None, cfg=None, **train_kw):
    from jaxdelta.train import TrainConfig, train
    from jaxdelta.train.trainer import data_parallel_size

    cfg = cfg or tiny_config(spec["vocab_size"])
    params = params if params is not None else tiny_params(cfg)
    tc = TrainConfig(learning_rate=spec["lr"], epochs=100, max_steps=spec["steps"], batch_size=spec["batch_size"],
                     micro_batch_size=spec["micro_batch_size"], max_length=128, pad_multiple=128)
    b = batches_for(tiny_examples(), spec["batch_size"], spec["micro_batch_size"], data_parallel_size(mesh))
    return train(cfg, params, b, tc, mesh, progress=False, **train_kw)


def main():
    spec = dict(SPEC_DEFAULTS, **json.loads(sys.argv[1]))
    if spec["coordinator"]:
        from jaxdelta.train.distributed import initialize_distributed

        initialize_distributed(spec["coordinator"], spec["num_processes"], spec["process_id"])
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    from jaxdelta.sharding import make_mesh
    from jaxdelta.checkpoint.hf import _host

    out = {}
    meshes = spec["compare_meshes"] or [spec["mesh"]]
    for m in meshes:
        mesh = make_mesh(m) if m else make_mesh({}, devices=jax.devices()[:1])
        params, hist = run_training(spec, mesh)
        host = {k: _host(v).tolist() for k, v in params.items()}
        specs = {k: str(v.sharding.spec) for k, v in params.items()}
        out[json.dumps(m)] = {"losses": [h["loss"] for h in hist], "params": host, "specs": specs}
    if jax.process_index() == 0:
        print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
