// The tokenizer of a GGUF file's metadata. A `llama` vocabulary (tokenizer.ggml.tokens, .scores,
// .token_type) is a SentencePiece BPE model's pieces: it becomes that model's ModelProto, written
// here in protobuf's wire format (the fields of sentencepiece_model.proto that SentencePiece
// reads for BPE), and SentencePiece itself encodes. As llama.cpp does: the dummy space prefix as
// tokenizer.ggml.add_space_prefix says (default on), whitespace kept as it is, byte fallback when
// the vocabulary has all 256 byte pieces, and control, user-defined and unknown pieces matched
// where the text writes them (llama.cpp's parse_special; what Hugging Face does with added
// tokens): a chat template's "<start_of_turn>" is its one token. A `gpt2` vocabulary (byte-level BPE with merges) becomes
// the tokenizer.json Hugging Face would hold for it, with the pre-tokenizer tokenizer.ggml.pre
// names (GPT-2's, or Llama 3's "llama-bpe"), and model/hf_tokenizer.cc encodes.
#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "model/gguf_model.h"

namespace sepal {
namespace {

// Protobuf's wire format, as much of it as a ModelProto needs.
class Proto {
 public:
  void varint_field(int field, std::uint64_t v) {
    key(field, 0);
    varint(v);
  }
  void float_field(int field, float v) {
    key(field, 5);
    char b[4];
    std::memcpy(b, &v, 4);
    out_.append(b, 4);
  }
  void bytes_field(int field, const std::string& v) {
    key(field, 2);
    varint(v.size());
    out_ += v;
  }
  const std::string& bytes() const { return out_; }

 private:
  void key(int field, int wire_type) { varint(static_cast<std::uint64_t>(field) << 3 | static_cast<std::uint64_t>(wire_type)); }
  void varint(std::uint64_t v) {
    while (v >= 0x80) {
      out_ += static_cast<char>((v & 0x7F) | 0x80);
      v >>= 7;
    }
    out_ += static_cast<char>(v);
  }
  std::string out_;
};

// SentencePiece's piece types, which GGUF's token types follow.
enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

std::int64_t optional_id(const GgufFile& file, const std::string& key, std::int64_t vocab, std::int64_t fallback) {
  const auto id = file.integer(key);
  if (!id) return fallback;
  if (*id >= vocab && *id != 0xFFFFFFFF) fail(file.where(), ": ", key, " ", *id, " is outside the vocabulary of ", vocab);
  return *id >= vocab ? -1 : *id;  // llama.cpp writes 2^32 - 1 for "none"
}

// A `gpt2` vocabulary (byte-level BPE: tokens, merges, and the pre-tokenizer llama.cpp names in
// tokenizer.ggml.pre) as the tokenizer.json Hugging Face would write for it; control and
// user-defined tokens are added tokens, matched before the model.
std::unique_ptr<Tokenizer> gpt2_tokenizer(const GgufFile& file) {
  const auto* tokens = file.array("tokenizer.ggml.tokens");
  const auto* merges = file.array("tokenizer.ggml.merges");
  const auto* types = file.array("tokenizer.ggml.token_type");
  if (!tokens || tokens->empty()) fail(file.where(), ": no tokenizer.ggml.tokens");
  if (!merges) fail(file.where(), ": a gpt2 vocabulary needs tokenizer.ggml.merges");
  if (types && types->size() != tokens->size()) fail(file.where(), ": tokenizer.ggml.token_type must have one entry per token");
  nlohmann::json vocab = nlohmann::json::object(), added = nlohmann::json::array(), merge_list = nlohmann::json::array();
  for (std::size_t i = 0; i < tokens->size(); ++i) {
    const auto* text = std::get_if<std::string>(&(*tokens)[i]);
    if (!text) fail(file.where(), ": token ", i, " of tokenizer.ggml.tokens is not a string");
    vocab[*text] = i;
    std::int64_t type = kNormal;
    if (types) {
      if (const auto* u = std::get_if<std::uint64_t>(&(*types)[i])) type = static_cast<std::int64_t>(*u);
      else if (const auto* n = std::get_if<std::int64_t>(&(*types)[i])) type = *n;
    }
    if (type == kControl || type == kUserDefined) {
      added.push_back({{"id", i}, {"content", *text}, {"special", type == kControl}});
    }
  }
  for (std::size_t i = 0; i < merges->size(); ++i) {
    const auto* m = std::get_if<std::string>(&(*merges)[i]);
    if (!m) fail(file.where(), ": merge ", i, " of tokenizer.ggml.merges is not a string");
    merge_list.push_back(*m);
  }
  // A Split pre-tokenizer by `regex` (each match its own piece), then bytes to characters.
  const auto split_then_bytes = [](const std::string& regex) {
    const nlohmann::json split = {{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}};
    return nlohmann::json{{"type", "Sequence"},
                          {"pretokenizers", {split, {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  };
  const std::string pre = file.string("tokenizer.ggml.pre").value_or("default");
  nlohmann::json pre_tokenizer, normalizer;
  bool ignore_merges = false;  // a piece that is a whole token stays one (Llama 3's BPE)
  if (pre == "default" || pre == "gpt-2") {
    pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  } else if (pre == "llama-bpe" || pre == "qwen2" || pre == "glm4" || pre == "chatglm-bpe") {
    // Llama 3's split (its tokenizer.json): contractions, letters with one leading non-letter,
    // digits in threes, punctuation runs, newlines, and whitespace; then bytes to characters.
    // Qwen2's (its tokenizer.json) is the same with single digits, after NFC normalization; GLM-4's
    // the same as Llama 3's, its merges applied to every piece (as llama.cpp runs it).
    const std::string digits = pre == "qwen2" ? "\\p{N}" : "\\p{N}{1,3}";
    pre_tokenizer = split_then_bytes("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" + digits +
                                     "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+");
    ignore_merges = pre == "llama-bpe";
    if (pre == "qwen2") normalizer = {{"type", "NFC"}};
  } else if (pre == "command-r" || pre == "smollm" || pre == "starcoder" || pre == "refact") {
    // Each digit apart, then GPT-2's split (Cohere's tokenizer.json: Digits with
    // individual_digits, then ByteLevel; llama.cpp runs these four names so).
    pre_tokenizer = {{"type", "Sequence"},
                     {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}},
                                        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}};
    if (pre == "command-r") normalizer = {{"type", "NFC"}};
  } else if (pre == "gpt-4o") {
    // o200k's split (GPT-4o's, GPT-OSS's tokenizer.json): words of upper-case letters then
    // lower-case ones with one leading non-letter and their contractions, digits in threes,
    // punctuation runs with the newlines and slashes after them, newlines, and whitespace.
    pre_tokenizer = split_then_bytes(
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
        "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+");
    ignore_merges = true;
  } else {
    fail(file.where(), ": the GGUF pre-tokenizer '", pre, "' is not supported (supported: default, gpt-2, llama-bpe, qwen2, gpt-4o, command-r, smollm, starcoder, refact, glm4, chatglm-bpe)");
  }
  const nlohmann::json tokenizer = {
      {"model",
       {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}, {"byte_fallback", false}, {"ignore_merges", ignore_merges}}},
      {"normalizer", normalizer},
      {"pre_tokenizer", pre_tokenizer},
      {"decoder", {{"type", "ByteLevel"}}},
      {"added_tokens", added}};
  return parse_hf_tokenizer(tokenizer.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), file.where());
}

}  // namespace

std::unique_ptr<Tokenizer> gguf_tokenizer(const GgufFile& file) {
  const auto model = file.string("tokenizer.ggml.model");
  if (!model) fail(file.where(), ": no tokenizer.ggml.model (the file holds no tokenizer)");
  if (*model == "gpt2") return gpt2_tokenizer(file);
  if (*model != "llama") {
    fail(file.where(), ": GGUF tokenizer model '", *model, "' is not supported (supported: llama, gpt2)");
  }
  const auto* tokens = file.array("tokenizer.ggml.tokens");
  const auto* scores = file.array("tokenizer.ggml.scores");
  const auto* types = file.array("tokenizer.ggml.token_type");
  if (!tokens || tokens->empty()) fail(file.where(), ": no tokenizer.ggml.tokens");
  const auto vocab = static_cast<std::int64_t>(tokens->size());
  if ((scores && scores->size() != tokens->size()) || (types && types->size() != tokens->size())) {
    fail(file.where(), ": tokenizer.ggml.scores and .token_type must have one entry per token (", vocab, ")");
  }
  // Byte fallback needs all 256 byte pieces (SentencePiece refuses it otherwise); with fewer,
  // the byte pieces are left unused and unknown bytes become the unknown token.
  int bytes = 0;
  for (const auto& t : types ? *types : std::vector<GgufValue::Scalar>{}) {
    const auto* u = std::get_if<std::uint64_t>(&t);
    const auto* n = std::get_if<std::int64_t>(&t);
    bytes += (u && *u == kByte) || (n && *n == kByte) ? 1 : 0;
  }
  const bool byte_fallback = bytes == 256;
  TextTokens in_text;  // control, user-defined and unknown pieces, matched where a prompt writes them (as llama.cpp)
  Proto proto;
  for (std::int64_t i = 0; i < vocab; ++i) {
    const auto* text = std::get_if<std::string>(&(*tokens)[static_cast<std::size_t>(i)]);
    if (!text) fail(file.where(), ": token ", i, " of tokenizer.ggml.tokens is not a string");
    double score = 0;
    if (scores) {
      const auto* s = std::get_if<double>(&(*scores)[static_cast<std::size_t>(i)]);
      if (!s) fail(file.where(), ": score ", i, " of tokenizer.ggml.scores is not a number");
      score = *s;
    }
    std::int64_t type = kNormal;
    if (types) {
      const auto& v = (*types)[static_cast<std::size_t>(i)];
      if (const auto* u = std::get_if<std::uint64_t>(&v)) type = static_cast<std::int64_t>(*u);
      else if (const auto* n = std::get_if<std::int64_t>(&v)) type = *n;
      else fail(file.where(), ": type ", i, " of tokenizer.ggml.token_type is not an integer");
      if (type < kNormal || type > kByte) fail(file.where(), ": token ", i, " has type ", type, ", which GGUF does not define");
    }
    if (type == kByte && !byte_fallback) type = kUnused;
    if ((type == kControl || type == kUserDefined || type == kUnknown) && !text->empty()) {
      in_text.emplace_back(*text, static_cast<std::int32_t>(i));
    }
    Proto piece;
    piece.bytes_field(1, *text);
    piece.float_field(2, static_cast<float>(score));
    piece.varint_field(3, static_cast<std::uint64_t>(type));
    proto.bytes_field(1, piece.bytes());
  }
  Proto trainer;
  trainer.varint_field(3, 2);  // model_type BPE
  trainer.varint_field(4, static_cast<std::uint64_t>(vocab));
  trainer.varint_field(35, byte_fallback ? 1 : 0);
  const auto id = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };  // -1 as protobuf writes int32 -1
  trainer.varint_field(40, id(optional_id(file, "tokenizer.ggml.unknown_token_id", vocab, 0)));
  trainer.varint_field(41, id(optional_id(file, "tokenizer.ggml.bos_token_id", vocab, -1)));
  trainer.varint_field(42, id(optional_id(file, "tokenizer.ggml.eos_token_id", vocab, -1)));
  trainer.varint_field(43, id(optional_id(file, "tokenizer.ggml.padding_token_id", vocab, -1)));
  proto.bytes_field(2, trainer.bytes());
  Proto normalizer;
  normalizer.bytes_field(1, "identity");
  normalizer.varint_field(3, file.boolean("tokenizer.ggml.add_space_prefix").value_or(true) ? 1 : 0);
  normalizer.varint_field(4, 0);  // remove_extra_whitespaces: llama.cpp keeps them
  normalizer.varint_field(5, 1);  // escape_whitespaces
  proto.bytes_field(3, normalizer.bytes());
  std::stable_sort(in_text.begin(), in_text.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  return sentencepiece_tokenizer_from_proto(proto.bytes(), file.where(), std::move(in_text));
}

}  // namespace sepal
