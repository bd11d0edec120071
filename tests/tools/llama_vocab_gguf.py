"""Writes a vocabulary-only GGUF file of the `llama` kind (SentencePiece BPE: tokens, scores and
token types, as llama.cpp's convert scripts do) from the LLaMA vocabulary and merges that the npm
package llama-tokenizer-js carries (dumped to JSON by run_llama_gguf_test.sh). SentencePiece BPE
merges the adjacent pair whose concatenation scores highest; Hugging Face's merge list is that
order, so a piece's score here is minus the rank of the first merge that makes it. Byte pieces
<0xNN> are BYTE tokens, <unk> UNKNOWN, <s> and </s> CONTROL.
  llama_vocab_gguf.py VOCAB_JSON OUT.gguf"""
import json
import struct
import sys

data = json.load(open(sys.argv[1], encoding="utf-8"))
vocab, merges = data["vocab"], data["merges"]
assert len(vocab) == 32000 and vocab[:3] == ["<unk>", "<s>", "</s>"], "not the LLaMA vocabulary"
rank = {}
for r, merge in enumerate(merges):
    left, right = merge.split(" ")
    rank.setdefault(left + right, r)
scores, types = [], []
for i, token in enumerate(vocab):
    if i == 0:
        types.append(2)
    elif i in (1, 2):
        types.append(3)
    elif token.startswith("<0x") and len(token) == 6:
        types.append(6)
    else:
        types.append(1)
    scores.append(-float(rank.get(token, 10**9)) if types[-1] == 1 else 0.0)


def s(x):
    b = x.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


meta = []


def kv(key, type_, value):
    meta.append(s(key) + struct.pack("<I", type_) + value)


kv("general.architecture", 8, s("llama"))
kv("tokenizer.ggml.model", 8, s("llama"))
kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(vocab)) + b"".join(s(t) for t in vocab))
kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, len(scores)) + b"".join(struct.pack("<f", x) for x in scores))
kv("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, len(types)) + b"".join(struct.pack("<i", t) for t in types))
kv("tokenizer.ggml.bos_token_id", 4, struct.pack("<I", 1))
kv("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", 2))
kv("tokenizer.ggml.unknown_token_id", 4, struct.pack("<I", 0))
head = b"GGUF" + struct.pack("<IQQ", 3, 0, len(meta)) + b"".join(meta)
open(sys.argv[2], "wb").write(head + b"\0" * ((-len(head)) % 32))
