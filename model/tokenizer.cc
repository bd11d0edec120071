#include "model/tokenizer.h"

#include <algorithm>
#include <array>

#include "kernels/error.h"
#include "model/gguf_model.h"
#include "model/utf8.h"

namespace sepal {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

const std::string& Tokenizer::token_bytes(std::int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    fail("token id ", id, " is outside the tokenizer's vocabulary of ", vocab_size());
  }
  return token_bytes_[static_cast<std::size_t>(id)];
}

std::vector<std::pair<std::string_view, std::int32_t>> split_at_tokens(std::string_view text, const TextTokens& tokens) {
  std::vector<std::pair<std::string_view, std::int32_t>> segments;
  // The bytes a token starts with: most of a text's positions start none (Gemma 3 has 6415 added
  // tokens, nearly all of them "<...>"), and are passed over without comparing.
  std::array<bool, 256> starts{};
  for (const auto& t : tokens) {
    if (!t.first.empty()) starts[static_cast<unsigned char>(t.first[0])] = true;
  }
  std::size_t start = 0, i = 0;
  while (i < text.size()) {
    if (!starts[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    const auto match = std::find_if(tokens.begin(), tokens.end(), [&](const auto& t) {
      return !t.first.empty() && text.compare(i, t.first.size(), t.first) == 0;
    });
    if (match == tokens.end()) {
      ++i;
      continue;
    }
    if (i > start) segments.emplace_back(text.substr(start, i - start), -1);
    segments.emplace_back(text.substr(i, match->first.size()), match->second);
    i += match->first.size();
    start = i;
  }
  if (start < text.size()) segments.emplace_back(text.substr(start), -1);
  return segments;
}

std::vector<std::int32_t> encode_for_model(const Tokenizer& tokenizer, std::string_view text, std::int64_t model_vocab) {
  std::vector<std::int32_t> ids = tokenizer.encode(text);
  for (const std::int32_t id : ids) {
    if (id >= model_vocab) {
      fail("the prompt holds token ", id, ", outside the model's vocabulary of ", model_vocab,
           " (the tokenizer has ", tokenizer.vocab_size(), " ids)");
    }
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  TextStream stream(*this);
  std::string text;
  for (auto id : ids) text += stream.push(id);
  return text + stream.finish();
}

std::string TextStream::push(std::int32_t id) {
  pending_ += tokenizer_.token_bytes(id);
  return take_complete(/*final=*/false);
}

std::string TextStream::finish() { return take_complete(/*final=*/true); }

std::string TextStream::take_complete(bool final) {
  if (at_start_ && !pending_.empty()) {
    at_start_ = false;
    if (tokenizer_.strips_leading_space() && pending_[0] == ' ') pending_.erase(0, 1);
  }
  std::string out;
  std::size_t i = 0;
  const auto* s = reinterpret_cast<const unsigned char*>(pending_.data());
  while (i < pending_.size()) {
    const int len = utf8_sequence_length(s[i]);
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    if (i + len > pending_.size()) {
      // Unfinished: wait unless what we have already cannot continue a valid sequence.
      const std::size_t have = pending_.size() - i;
      bool could_continue = true;
      for (std::size_t j = 1; j < have; ++j) could_continue &= (s[i + j] & 0xC0) == 0x80;
      if (could_continue && have >= 2) {
        could_continue = !((s[i] == 0xE0 && s[i + 1] < 0xA0) || (s[i] == 0xED && s[i + 1] >= 0xA0) ||
                           (s[i] == 0xF0 && s[i + 1] < 0x90) || (s[i] == 0xF4 && s[i + 1] >= 0x90));
      }
      if (could_continue && !final) break;
      out += kReplacement;
      ++i;
      continue;
    }
    if (utf8_valid_sequence(s + i, len)) {
      out.append(pending_, i, static_cast<std::size_t>(len));
      i += static_cast<std::size_t>(len);
    } else {
      out += kReplacement;
      ++i;
    }
  }
  pending_.erase(0, i);
  return out;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir) {
  if (is_gguf_file(dir)) return gguf_tokenizer(GgufFile::open(dir));
  if (std::filesystem::exists(dir / "tokenizer.model")) {
    return load_sentencepiece_tokenizer(dir / "tokenizer.model");
  }
  if (std::filesystem::exists(dir / "tokenizer.json")) return load_hf_tokenizer(dir / "tokenizer.json");
  fail("no tokenizer in ", dir.string(), ": expected tokenizer.model or tokenizer.json");
}

}  // namespace sepal
