// Fuzz target: tokenizer.json text. Loading must succeed or throw sepal::Error; a tokenizer that
// loads must encode and decode a few texts without crashing, and its ids must be in range. The
// streamed reading of the file (model/hf_tokenizer_json.h) must also agree with json::parse: both
// accept or both refuse the text, and what they read is the same.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "kernels/error.h"
#include "model/hf_tokenizer_json.h"
#include "model/tokenizer.h"

namespace {

using nlohmann::json;

void require(bool condition) {
  if (!condition) __builtin_trap();
}

// document["model"][name] when the document holds it, as `kind`.
const json* model_entry(const json& document, const char* name, json::value_t kind) {
  if (!document.is_object() || !document.contains("model") || !document["model"].is_object()) return nullptr;
  const json& model = document["model"];
  return model.contains(name) && model[name].type() == kind ? &model[name] : nullptr;
}

void check_vocab(const sepal::HfTokenizerJson& streamed, const json* vocab) {
  require(streamed.has_vocab == (vocab != nullptr));
  if (vocab == nullptr) return;
  if (streamed.vocab_not_integer) {  // one of the token's entries (with repeated keys, maybe not the last)
    require(vocab->contains(*streamed.vocab_not_integer));
    return;
  }
  std::map<std::string, std::int64_t> last;  // a repeated token: the last id, as in the document
  for (const auto& [token, id] : streamed.vocab) last[token] = id;
  require(last.size() == vocab->size());
  for (const auto& [token, value] : vocab->items()) {
    require(last.count(token) == 1);
    if (value.is_number_unsigned() && value.get<std::uint64_t>() > std::numeric_limits<std::int64_t>::max()) {
      require(last[token] == std::numeric_limits<std::int64_t>::max());
    } else {
      require(value.is_number_integer() && value.get<std::int64_t>() == last[token]);
    }
  }
}

void check_merges(const sepal::HfTokenizerJson& streamed, const json* merges) {
  require(streamed.has_merges == (merges != nullptr));
  if (merges == nullptr) return;
  const std::size_t read = streamed.merge_count();
  const bool failed = streamed.merge_without_space || streamed.bad_merge_index;
  require(!(streamed.merge_without_space && streamed.bad_merge_index));
  require(failed ? read < merges->size() : read == merges->size());
  for (std::size_t i = 0; i < read; ++i) {
    const json& m = (*merges)[i];
    const auto [left, right] = streamed.merge(i);
    if (m.is_string()) {
      require(m.get<std::string>() == std::string(left) + " " + std::string(right) && !left.empty() &&
              left.find(' ', 1) == std::string::npos);
    } else {
      require(m.is_array() && m.size() == 2 && m[0] == left && m[1] == right);
    }
  }
  const json* bad = failed ? &(*merges)[read] : nullptr;
  if (streamed.merge_without_space) {
    require(bad->is_string() && bad->get<std::string>() == *streamed.merge_without_space &&
            streamed.merge_without_space->find(' ', 1) == std::string::npos);
  }
  if (streamed.bad_merge_index) {
    require(*streamed.bad_merge_index == read);
    require(!bad->is_string() &&
            !(bad->is_array() && bad->size() == 2 && (*bad)[0].is_string() && (*bad)[1].is_string()));
  }
}

void check_streamed_reading(const std::string& text) {
  std::optional<sepal::HfTokenizerJson> streamed;
  try {
    streamed = sepal::read_hf_tokenizer_json(text, "fuzz/tokenizer.json");
  } catch (const sepal::Error&) {
  }
  json document;
  try {
    document = json::parse(text);
  } catch (const json::exception&) {
    require(!streamed);
    return;
  }
  require(streamed.has_value());
  const json* vocab = model_entry(document, "vocab", json::value_t::object);
  const json* merges = model_entry(document, "merges", json::value_t::array);
  check_vocab(*streamed, vocab);
  check_merges(*streamed, merges);
  // The rest is the document itself, but for the streamed lists' keys.
  json rest = document;
  if (vocab) rest["model"].erase("vocab");
  if (merges) rest["model"].erase("merges");
  require(streamed->root == rest);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  check_streamed_reading(text);
  std::unique_ptr<sepal::Tokenizer> tokenizer;
  try {
    tokenizer = sepal::parse_hf_tokenizer(text, "fuzz/tokenizer.json");
  } catch (const sepal::Error&) {
    return 0;
  }
  for (const char* sample : {"Hello World", " once upon a time, 123!", "ÀÉÎ ΟΔΟΣ İstanbul 日本語 🙂", ""}) {
    try {
      const auto ids = tokenizer->encode(sample);
      for (auto id : ids) {
        if (id < 0 || id >= tokenizer->vocab_size()) __builtin_trap();
      }
      (void)tokenizer->decode(ids);
    } catch (const sepal::Error&) {
    }
  }
  return 0;
}
