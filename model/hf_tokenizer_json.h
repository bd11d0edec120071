#pragma once
// Reads a Hugging Face tokenizer.json in one pass. The BPE model's vocab (an object of token to
// id) and merges (a list of "a b" strings or [a, b] pairs) are most of such a file: Gemma 3's is
// 33 MB, 262144 tokens and 514906 merges. They are streamed into plain lists here instead of
// becoming a JSON document of a node per entry (building and freeing it was more than half of the
// load time); everything else is an nlohmann::json document, as json::parse builds it. Internal
// to model/ (hf_tokenizer.cc).
//
// Entries are checked only as far as the streaming needs: a vocab id that is not an integer, or a
// merge that is neither, is recorded as the list's problem (the first one) and the rest of that
// list is skipped; the tokenizer reports it where it reads the list, so errors come in the
// order they did before. Thread-safety: a plain function.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sepal {

struct HfTokenizerJson {
  /// The whole document but model.vocab (when an object) and model.merges (when an array).
  nlohmann::json root;

  /// model.vocab, when it is an object: its entries in file order (ids as written; an unsigned
  /// id past int64's range saturates to its maximum).
  bool has_vocab = false;
  std::vector<std::pair<std::string, std::int64_t>> vocab;
  /// The first entry whose value is not an integer: its token.
  std::optional<std::string> vocab_not_integer;

  /// model.merges, when it is an array: merge(i) is merge i's two tokens (a string merge is split
  /// at its first space after the first byte). They are kept back to back in one string: a list
  /// of half a million string pairs grew by copying tens of MB.
  bool has_merges = false;
  std::size_t merge_count() const { return merge_ends.size() / 2; }
  std::pair<std::string_view, std::string_view> merge(std::size_t i) const {
    const std::size_t begin = i == 0 ? 0 : merge_ends[2 * i - 1], middle = merge_ends[2 * i];
    const std::string_view text(merge_text);
    return {text.substr(begin, middle - begin), text.substr(middle, merge_ends[2 * i + 1] - middle)};
  }
  std::string merge_text;               ///< every merge's tokens, back to back
  std::vector<std::size_t> merge_ends;  ///< where each merge's first and second token end in it
  /// The first merge that could not be read: a string without a space past its first byte
  /// (`merge_without_space` holds it) or a value that is neither a string nor a pair of strings
  /// (`bad_merge_index` is its position). At most one is set.
  std::optional<std::string> merge_without_space;
  std::optional<std::size_t> bad_merge_index;
};

/// Parses `text`; fails (sepal::Error) with "WHERE: not valid JSON (...)" when it is not JSON,
/// nlohmann's message in the brackets, as json::parse words it.
HfTokenizerJson read_hf_tokenizer_json(std::string_view text, const std::string& where);

}  // namespace sepal
