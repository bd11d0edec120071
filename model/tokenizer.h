#pragma once
// Text to token ids and back, for SentencePiece models (tokenizer.model) and Hugging Face
// tokenizers (tokenizer.json: BPE with SentencePiece-style normalisation and byte fallback, or
// byte-level BPE as GPT-2, Llama 3 and BLOOM use).
//
// Thread-safety: a loaded Tokenizer is immutable; encode() and token_bytes() may run concurrently.
// A TextStream belongs to one thread.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sepal {

/// A loaded tokenizer.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  /// Token ids of `text`, without BOS or EOS.
  virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;
  /// The bytes token `id` contributes to decoded text (possibly part of a UTF-8 character);
  /// special tokens (BOS, EOS, pad) contribute nothing, as the reference decoders skip them.
  /// Throws sepal::Error for an id outside the vocabulary.
  const std::string& token_bytes(std::int32_t id) const;
  /// Number of token ids.
  std::int64_t vocab_size() const { return static_cast<std::int64_t>(token_bytes_.size()); }
  /// Whether decoded text drops one leading space (the prefix space encoding added).
  virtual bool strips_leading_space() const = 0;
  /// The id of a token by its text, or -1.
  virtual std::int32_t token_id(std::string_view piece) const = 0;

  /// Decodes ids to text; incomplete or invalid UTF-8 becomes U+FFFD.
  std::string decode(const std::vector<std::int32_t>& ids) const;

 protected:
  /// What each id decodes to; every implementation fills it once when loading.
  std::vector<std::string> token_bytes_;
};

/// Tokens that are matched where their text is written in a prompt (added tokens, special or
/// not; a GGUF vocabulary's control and user-defined pieces): text and id, longest text first.
using TextTokens = std::vector<std::pair<std::string, std::int32_t>>;

/// `text` split at each occurrence of one of `tokens` (the longest that matches at a place wins):
/// plain segments with id -1 and the tokens found, in order.
std::vector<std::pair<std::string_view, std::int32_t>> split_at_tokens(std::string_view text, const TextTokens& tokens);

/// tokenizer.encode(text), with a token the model cannot embed refused (sepal::Error, one line
/// naming its id): a tokenizer may be larger than its model (Gemma 3's tokenizer.json adds
/// <image_soft_token> past Gemma-3-1B's 262144 ids).
std::vector<std::int32_t> encode_for_model(const Tokenizer& tokenizer, std::string_view text, std::int64_t model_vocab);

/// Loads the tokenizer of a model folder: tokenizer.model (SentencePiece) when present, else
/// tokenizer.json; or of a GGUF file, from its metadata (model/gguf_model.h). Throws
/// sepal::Error naming the file when neither exists or it is unsupported.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir);

/// A SentencePiece model file.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& file);
/// A SentencePiece model from its serialized ModelProto (`where` names its source in errors).
/// Where `in_text` names tokens, text is split at them first and each plain segment encoded on
/// its own (with the model's dummy prefix, as llama.cpp encodes after a special token).
std::unique_ptr<Tokenizer> sentencepiece_tokenizer_from_proto(const std::string& serialized, const std::string& where,
                                                              TextTokens in_text = {});

/// A Hugging Face tokenizer.json file.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& file);

/// Parses tokenizer.json text; `where` names the source in errors.
std::unique_ptr<Tokenizer> parse_hf_tokenizer(std::string_view json_text, const std::string& where);

/// Turns a stream of token ids into text that is always valid UTF-8: bytes of an unfinished
/// character wait for the next token; bytes that can never form a character become U+FFFD.
class TextStream {
 public:
  explicit TextStream(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  /// Adds a token; returns the text that became complete.
  std::string push(std::int32_t id);
  /// Ends the stream; returns what was left (an unfinished character becomes U+FFFD).
  std::string finish();

 private:
  std::string take_complete(bool final);

  const Tokenizer& tokenizer_;
  std::string pending_;
  bool at_start_ = true;
};

}  // namespace sepal
