"""Rewrites a model folder so that greedy decoding writes a chosen chain of tokens: each token of
the chain is followed by the next. Every block's output projections (attention's o_proj and the
MLP's or experts' down_proj, weights and biases) become zero, so the residual stream is the
current token's embedding; the final norm's weight (model.norm.weight) becomes one; and the head, untied, has for
each token of the chain but the first the sum of the unit embeddings of the tokens it follows,
scaled up, and zeros elsewhere. A token followed by two different tokens is refused.
    python3 successor_model.py MODEL_DIR OUT_DIR ID ID [ID ...]
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import read_arrays, write_arrays  # noqa: E402


def main():
    src, out, chain = sys.argv[1], sys.argv[2], [int(i) for i in sys.argv[3:]]
    if len(chain) < 2:
        sys.exit("successor_model.py: a chain is at least two ids")
    follows = {}
    for a, b in zip(chain, chain[1:]):
        if follows.setdefault(a, b) != b:
            sys.exit(f"successor_model.py: token {a} is followed by both {follows[a]} and {b}")
    shutil.copytree(src, out, copy_function=shutil.copyfile)  # writable copies
    os.chmod(out, 0o755)  # copytree gives the folder the source's mode
    config = json.load(open(f"{out}/config.json"))
    if str(config.get("model_type", "")).startswith("gemma"):
        sys.exit("successor_model.py: Gemma's norms scale by 1 + weight; not handled")
    files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
    if len(files) != 1:
        sys.exit("successor_model.py: expects one .safetensors file")
    tensors = {k: v.copy() for k, v in read_arrays(f"{out}/{files[0]}").items()}
    embed = next(v for k, v in tensors.items() if k.endswith("embed_tokens.weight"))
    for name, t in tensors.items():
        if ".o_proj." in name or "down_proj" in name:
            t[...] = 0
        elif name == "model.norm.weight":
            t[...] = 1
    head = np.zeros_like(embed)
    for a, b in follows.items():
        head[b] += 30 * embed[a] / np.linalg.norm(embed[a])
    tensors["lm_head.weight"] = head
    config["tie_word_embeddings"] = False
    json.dump(config, open(f"{out}/config.json", "w"), indent=1)
    write_arrays(f"{out}/{files[0]}", tensors)


main()
