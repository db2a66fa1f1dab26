"""A tiny random-weight Llama model in GGUF, written by our own code with the ``gguf`` package.

The model is gibberish but genuine: llama.cpp loads it, tokenizes with its SentencePiece-style
vocabulary, applies its ChatML chat template and streams real tokens with real ``usage``,
``timings`` and ``/metrics``. The same seed writes the same bytes, so greedy (temperature 0)
answers are reproducible across runs and machines. About 0.5 MB; no model hub involved.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

EMBED = 64
HEADS = 4
LAYERS = 2
FEED_FORWARD = 128
CONTEXT = 8192
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
          " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")
# Word pieces so the gibberish reads as words; SentencePiece marks a leading space with "▁".
_WORDS = ("the of and to in is it you that he was for on are with as his they be at one have this"
          " from or had by hot word but what some we can out other were all there when up use your"
          " how said an each she which do their time if will way about many then them write would"
          " like so these her long make thing see him two has look more day could go come did number"
          " sound no most people my over know water than call first who may down side been now find"
          " hello world monitor token server model stream metric proxy llama").split()
_T = gguf.TokenType


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [_T.UNKNOWN, _T.CONTROL, _T.CONTROL, _T.CONTROL, _T.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]  # byte fallback: any text tokenizes
    types += [_T.BYTE] * 256
    pieces = ["▁"] + [f"▁{w}" for w in _WORDS] + list("abcdefghijklmnopqrstuvwxyz")
    tokens += pieces
    types += [_T.NORMAL] * len(pieces)
    scores = [0.0] * 261 + [-float(i) for i in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


def write_tiny_gguf(path: Path, seed: int = 1234) -> Path:
    """Write the model to ``path`` (deterministic for a given ``seed``) and return the path."""
    tokens, scores, types = _vocab()
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        # numpy shape is (rows=out, cols=in); gguf reverses it into ggml's (ne0=in, ne1=out).
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("llmmon-tiny")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FEED_FORWARD)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(EMBED // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHATML)

    vocab = len(tokens)
    writer.add_tensor("token_embd.weight", weights(vocab, EMBED))
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(EMBED, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(EMBED, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(EMBED, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(FEED_FORWARD, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(FEED_FORWARD, EMBED))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(EMBED, FEED_FORWARD))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, np.float32))
    writer.add_tensor("output.weight", weights(vocab, EMBED))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
