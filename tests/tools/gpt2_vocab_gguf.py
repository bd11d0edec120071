"""Writes a vocabulary-only GGUF file of the `gpt2` kind (as llama.cpp's convert scripts do for
byte-level BPE tokenizers) from GPT-2's encoder.json and vocab.bpe.
  gpt2_vocab_gguf.py ENCODER_JSON VOCAB_BPE OUT.gguf"""
import json
import struct
import sys

encoder = json.load(open(sys.argv[1], encoding="utf-8"))
merges = [line for line in open(sys.argv[2], encoding="utf-8").read().split("\n")[1:] if line]
tokens = sorted(encoder, key=encoder.get)
assert [encoder[t] for t in tokens] == list(range(len(tokens)))


def s(x):
    b = x.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


meta = []


def kv(key, type_, value):
    meta.append(s(key) + struct.pack("<I", type_) + value)


kv("general.architecture", 8, s("gpt2"))
kv("tokenizer.ggml.model", 8, s("gpt2"))
kv("tokenizer.ggml.pre", 8, s("gpt-2"))
kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(tokens)) + b"".join(s(t) for t in tokens))
types = [3 if t == "<|endoftext|>" else 1 for t in tokens]
kv("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(types)) + b"".join(struct.pack("<i", t) for t in types))
kv("tokenizer.ggml.merges", 9, struct.pack("<IQ", 8, len(merges)) + b"".join(s(m) for m in merges))
kv("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", encoder["<|endoftext|>"]))
kv("tokenizer.ggml.add_bos_token", 7, b"\x00")
head = b"GGUF" + struct.pack("<IQQ", 3, 0, len(meta)) + b"".join(meta)
open(sys.argv[3], "wb").write(head + b"\0" * ((-len(head)) % 32))
