"""Prints what a script needs of a greedy reference (../shared/models/reference/*.greedy.json) on
one line: the model's folder name, the prompt as JSON with spaces as U+0001 (so that `read`
keeps it one field; the scripts turn them back and load the JSON), max_new_tokens, and the
model's block count
(0 for an architecture sepal does not run yet).
  reference_fields.py REFERENCE_JSON MODELS_DIR"""
import json
import sys

r = json.load(open(sys.argv[1]))
c = json.load(open(f"{sys.argv[2]}/{r['model']}/config.json"))
blocks = {"LlamaForCausalLM": lambda: c["num_hidden_layers"],
          "BloomForCausalLM": lambda: c.get("n_layer", c.get("num_hidden_layers"))}
arch = (c.get("architectures") or [""])[0]
print(r["model"], json.dumps(r["prompt"]).replace(" ", "\u0001"), r["max_new_tokens"],
      blocks[arch]() if arch in blocks else 0)
