#!/usr/bin/env python3
"""Writes a tiny llama-architecture model as GGUF, from seeded random weights, for the real generative server the
tests run (llama-cpp-python's OpenAI-compatible server). It generates nonsense quickly: what the tests measure is a
real server's streaming, batching and usage, not the text.

A SentencePiece-style vocabulary of distinct tokens: unknown, begin and end of sequence, the 256 byte tokens
(llama.cpp needs them to encode any text), 71 words and every shorter start of them ("\u2581", "\u2581t", "\u2581th"
for "\u2581the"): llama.cpp builds a word from its characters by merging pairs that are tokens, so without the starts
it could only spell a prompt in bytes. 4 layers of width 256, 4 heads, feed-forward 512, float32:
about 11 MB. Beside the model it writes the same vocabulary as Hugging Face's tokenizer.json (a Unigram model with
byte fallback behind a Metaspace pre-tokenizer, as SentencePiece models are converted), so a test can count the
model's tokens as the server does. Usage: tiny_model.py OUT.gguf [SEED]
"""
import json
import pathlib
import sys

import gguf
import numpy as np

WORDS = (
    "the a of to and in is it that for on with as was at by be this from or an are not have but they one all were "
    "we when there can more if out so what up its about into than them only other new some could time these two may "
    "then do first any like my now over such our man me even most made after also did many before must through back "
    "years where"
).split()


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
    embedding, layers, heads, feed_forward, context = 256, 4, 4, 512, 2048
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{byte:02X}>".encode() for byte in range(256)]
    words = ["\u2581" + word for word in dict.fromkeys(WORDS)]
    starts = [word[:length] for word in words for length in range(1, len(word))]
    tokens += [piece.encode() for piece in dict.fromkeys(words + starts)]
    assert len(tokens) == len(set(tokens)), "llama.cpp aborts on a vocabulary with duplicate tokens"
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (len(tokens) - 259)
    scores = [0.0] * 259 + [-float(rank) for rank in range(len(tokens) - 259)]

    writer = gguf.GGUFWriter(out, "llama")
    writer.add_name("plateau-tiny-random")
    writer.add_context_length(context)
    writer.add_embedding_length(embedding)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(embedding // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    def weights(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    vocabulary = len(tokens)
    writer.add_tensor("token_embd.weight", weights(vocabulary, embedding))
    writer.add_tensor("output_norm.weight", np.ones(embedding, dtype=np.float32))
    writer.add_tensor("output.weight", weights(vocabulary, embedding))
    for layer in range(layers):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(embedding, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(embedding, embedding))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(embedding, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(feed_forward, embedding))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(feed_forward, embedding))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(embedding, feed_forward))
    write_tokenizer_json(pathlib.Path(out).with_name("tokenizer.json"), tokens, scores)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_tokenizer_json(path, tokens, scores):
    """The vocabulary as tokenizer.json: spaces become "\u2581" and start each word's piece, words are the
    vocabulary's, and anything else falls back to byte tokens, as llama.cpp's tokenizer does for this vocabulary."""
    vocab = [[token.decode(), score] for token, score in zip(tokens, scores)]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "Unigram", "unk_id": 0, "vocab": vocab, "byte_fallback": True},
    }
    path.write_text(json.dumps(tokenizer))


if __name__ == "__main__":
    main()
