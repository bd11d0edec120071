// Hugging Face tokenizer.json: the BPE model with the normalisers, pre-tokenisers and decoders
// that Llama-family (SentencePiece-style) and byte-level (GPT-2, Llama 3, BLOOM) tokenizers use.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "kernels/error.h"
#include "model/hf_tokenizer_json.h"
#include "model/mapped_file.h"
#include "model/utf8.h"
#include "model/tokenizer.h"

namespace sepal {
namespace {

using nlohmann::json;

// Hashes strings and string views alike, so that a vocab lookup needs no string of its own.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(text);
  std::string out;
  std::size_t i = 0;
  while (true) {
    const std::size_t hit = text.find(from, i);
    if (hit == std::string_view::npos) break;
    out.append(text.substr(i, hit - i)).append(to);
    i = hit + from.size();
  }
  return out.append(text.substr(i));
}

// Splits UTF-8 text into characters; a byte that starts no valid sequence is its own character.
std::vector<std::string_view> utf8_chars(std::string_view s) {
  std::vector<std::string_view> chars;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (i + len > s.size()) len = 1;
    for (std::size_t j = 1; j < len; ++j) {
      if ((static_cast<unsigned char>(s[i + j]) & 0xC0) != 0x80) {
        len = 1;
        break;
      }
    }
    chars.push_back(s.substr(i, len));
    i += len;
  }
  return chars;
}

std::string utf8_encode(std::uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// GPT-2's reversible map from bytes to printable characters.
std::array<std::string, 256> byte_level_alphabet() {
  std::array<std::string, 256> table;
  std::uint32_t next = 256;
  for (std::uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    table[b] = utf8_encode(printable ? b : next++);
  }
  return table;
}

// A compiled PCRE2 pattern (UTF, Unicode properties).
class Regex {
 public:
  Regex(std::string_view pattern, const std::string& where) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      fail(where, ": cannot compile regex at offset ", offset, ": ", reinterpret_cast<char*>(message));
    }
    // Bounds on backtracking, so a pathological pattern or text fails with a message instead of
    // running for hours or exhausting the stack.
    context_ = pcre2_match_context_create(nullptr);
    if (!context_) fail(where, ": out of memory for a regex");
    pcre2_set_match_limit(context_, kMatchLimit);
    pcre2_set_depth_limit(context_, kDepthLimit);
  }
  ~Regex() {
    pcre2_match_context_free(context_);
    pcre2_code_free(code_);
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  /// Byte ranges [begin, end) of all non-empty matches, left to right.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view text) const {
    std::vector<std::pair<std::size_t, std::size_t>> matches;
    pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_, nullptr);
    std::size_t start = 0;
    while (start <= text.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                                 start, PCRE2_NO_UTF_CHECK, data, context_);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(data);
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof(message));
        fail("pre-tokenizer regex failed on a word of ", text.size(), " bytes: ", reinterpret_cast<char*>(message));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
      if (ov[1] == ov[0]) {  // empty match: step one character
        start = ov[0] + 1;
        while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
        continue;
      }
      matches.emplace_back(ov[0], ov[1]);
      start = ov[1];
    }
    pcre2_match_data_free(data);
    return matches;
  }

 private:
  static constexpr std::uint32_t kMatchLimit = 10'000'000;
  static constexpr std::uint32_t kDepthLimit = 10'000;
  pcre2_code* code_ = nullptr;
  pcre2_match_context* context_ = nullptr;
};

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext };

struct PreTokenizerStep {
  enum class Kind { kMetaspace, kByteLevel, kSplit };
  Kind kind = Kind::kMetaspace;
  // Metaspace
  std::string replacement = "\xE2\x96\x81";
  std::string prepend_scheme = "always";
  bool split = true;
  // ByteLevel
  bool add_prefix_space = false;
  // ByteLevel (use_regex) and Split
  std::shared_ptr<Regex> regex;
  std::string literal;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool byte_level = false;
};

struct NormalizerStep {
  enum class Kind { kPrepend, kReplace, kLowercase, kUnicode };
  Kind kind;
  std::string a, b;
  UnicodeForm form = UnicodeForm::kNfc;  ///< kUnicode
};

struct DecoderStep {
  enum class Kind { kReplace, kByteFallback, kByteLevel, kMetaspace };
  Kind kind;
  std::string a, b;
};

class HfBpeTokenizer final : public Tokenizer {
 public:
  HfBpeTokenizer(HfTokenizerJson&& parsed, const std::string& where) : where_(where) {
    const json& root = parsed.root;
    const json& model = root.at("model");
    const std::string type = model.value("type", std::string("BPE"));
    if (type != "BPE") fail(where, ": tokenizer model type '", type, "' is not supported (supported: BPE)");
    if (model.contains("continuing_subword_prefix") && !model["continuing_subword_prefix"].is_null() &&
        model["continuing_subword_prefix"] != "") {
      fail(where, ": BPE continuing_subword_prefix is not supported");
    }
    if (model.contains("end_of_word_suffix") && !model["end_of_word_suffix"].is_null() &&
        model["end_of_word_suffix"] != "") {
      fail(where, ": BPE end_of_word_suffix is not supported");
    }
    read_vocab(parsed);
    read_merges(parsed);
    byte_fallback_ = model.value("byte_fallback", false);
    fuse_unk_ = model.value("fuse_unk", false);
    ignore_merges_ = model.value("ignore_merges", false);
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      unk_id_ = token_id(model["unk_token"].get<std::string>());
    }
    read_added_tokens(root);
    if (root.contains("normalizer")) read_normalizer(root["normalizer"]);
    if (root.contains("pre_tokenizer")) read_pre_tokenizer(root["pre_tokenizer"]);
    if (root.contains("decoder")) read_decoder(root["decoder"]);
    build_token_bytes();
  }

  std::vector<std::int32_t> encode(std::string_view text) const override {
    // Checked once here: the regexes then run with PCRE2's own (per-call) UTF check off.
    if (auto bad = first_invalid_utf8(text)) fail("the text is not valid UTF-8 (byte ", *bad, " of ", text.size(), ")");
    std::vector<std::int32_t> ids;
    bool first = true;
    for (const auto& [segment, added_id] : split_at_tokens(text, added_)) {
      if (added_id >= 0) {
        ids.push_back(added_id);
      } else {
        for (const auto& word : pre_tokenize(normalize(segment), first)) bpe(word, ids);
      }
      first = false;
    }
    return ids;
  }

  bool strips_leading_space() const override { return strip_leading_space_; }
  std::int32_t token_id(std::string_view piece) const override {
    const auto it = vocab_.find(piece);
    return it == vocab_.end() ? -1 : it->second;
  }

 private:
  void set_token(std::int64_t id, std::string token) {
    if (id < 0 || id > (1 << 24)) fail(where_, ": token id ", id, " for '", token, "' is out of range");
    if (static_cast<std::size_t>(id) >= tokens_.size()) tokens_.resize(static_cast<std::size_t>(id) + 1);
    vocab_.insert_or_assign(token, static_cast<std::int32_t>(id));
    tokens_[static_cast<std::size_t>(id)] = std::move(token);
  }

  void read_vocab(HfTokenizerJson& parsed) {
    if (!parsed.has_vocab) fail(where_, ": model has no vocab object");
    if (parsed.vocab_not_integer) fail(where_, ": vocab id of '", *parsed.vocab_not_integer, "' is not an integer");
    vocab_.reserve(parsed.vocab.size());
    for (auto& [token, id] : parsed.vocab) set_token(id, std::move(token));
  }

  void read_merges(const HfTokenizerJson& parsed) {
    if (!parsed.has_merges) fail(where_, ": model has no merges list");
    merges_.reserve(parsed.merge_count());
    std::string joined;
    for (std::size_t rank = 0; rank < parsed.merge_count(); ++rank) {
      const auto [left, right] = parsed.merge(rank);
      joined.assign(left).append(right);
      const auto a = vocab_.find(left), b = vocab_.find(right), ab = vocab_.find(joined);
      if (a == vocab_.end() || b == vocab_.end() || ab == vocab_.end()) {
        fail(where_, ": merge '", left, " ", right, "' uses tokens missing from the vocab");
      }
      merges_.emplace(pair_key(a->second, b->second), std::make_pair(static_cast<std::int32_t>(rank), ab->second));
    }
    if (parsed.merge_without_space) fail(where_, ": merge '", *parsed.merge_without_space, "' is not two tokens");
    if (parsed.bad_merge_index) fail(where_, ": merge #", *parsed.bad_merge_index, " is neither \"a b\" nor [a, b]");
  }

  void read_added_tokens(const json& root) {
    if (!root.contains("added_tokens") || !root["added_tokens"].is_array()) return;
    for (const auto& t : root["added_tokens"]) {
      if (!t.contains("id") || !t.contains("content") || !t["content"].is_string()) {
        fail(where_, ": added token without id or content");
      }
      if (!t["id"].is_number_integer()) fail(where_, ": the id of added token ", t["content"].dump(), " is not an integer");
      const std::string content = t["content"];
      set_token(t["id"].get<std::int64_t>(), content);
      const auto id = static_cast<std::int32_t>(t["id"].get<std::int64_t>());
      if (!content.empty()) added_.emplace_back(content, id);
      if (t.value("special", false)) special_.push_back(id);
    }
    std::sort(added_.begin(), added_.end(),
              [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
  }

  void read_normalizer(const json& n) {
    if (n.is_null()) return;
    const std::string type = n.value("type", "");
    if (type == "Sequence") {
      for (const auto& step : n.at("normalizers")) read_normalizer(step);
    } else if (type == "Prepend") {
      normalizers_.push_back({NormalizerStep::Kind::kPrepend, n.at("prepend").get<std::string>(), ""});
    } else if (type == "Replace") {
      if (!n.at("pattern").contains("String")) fail(where_, ": only String patterns are supported in Replace normalizers");
      normalizers_.push_back({NormalizerStep::Kind::kReplace, n["pattern"]["String"].get<std::string>(),
                              n.at("content").get<std::string>()});
    } else if (type == "Lowercase") {
      normalizers_.push_back({NormalizerStep::Kind::kLowercase, "", ""});
    } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
      const UnicodeForm form = type == "NFC"   ? UnicodeForm::kNfc
                               : type == "NFD" ? UnicodeForm::kNfd
                               : type == "NFKC" ? UnicodeForm::kNfkc
                                                : UnicodeForm::kNfkd;
      normalizers_.push_back({NormalizerStep::Kind::kUnicode, "", "", form});
    } else {
      fail(where_, ": normalizer '", type,
           "' is not supported (supported: Sequence, Prepend, Replace, Lowercase, NFC, NFD, NFKC, NFKD)");
    }
  }

  void read_pre_tokenizer(const json& p) {
    if (p.is_null()) return;
    const std::string type = p.value("type", "");
    if (type == "Sequence") {
      for (const auto& step : p.at("pretokenizers")) read_pre_tokenizer(step);
    } else if (type == "Metaspace") {
      PreTokenizerStep s;
      s.kind = PreTokenizerStep::Kind::kMetaspace;
      s.replacement = p.value("replacement", s.replacement);
      if (p.contains("prepend_scheme")) s.prepend_scheme = p["prepend_scheme"].get<std::string>();
      else if (p.contains("add_prefix_space")) s.prepend_scheme = p["add_prefix_space"].get<bool>() ? "always" : "never";
      s.split = p.value("split", true);
      pre_tokenizers_.push_back(std::move(s));
    } else if (type == "ByteLevel") {
      PreTokenizerStep s;
      s.kind = PreTokenizerStep::Kind::kByteLevel;
      s.add_prefix_space = p.value("add_prefix_space", false);
      if (p.value("use_regex", true)) s.regex = std::make_shared<Regex>(kGpt2Pattern, where_);
      pre_tokenizers_.push_back(std::move(s));
      byte_level_ = true;
    } else if (type == "Split") {
      PreTokenizerStep s;
      s.kind = PreTokenizerStep::Kind::kSplit;
      const json& pattern = p.at("pattern");
      if (pattern.contains("Regex")) s.regex = std::make_shared<Regex>(pattern["Regex"].get<std::string>(), where_);
      else s.literal = pattern.at("String").get<std::string>();
      const std::string behavior = p.value("behavior", "Isolated");
      if (behavior == "Isolated") s.behavior = SplitBehavior::kIsolated;
      else if (behavior == "Removed") s.behavior = SplitBehavior::kRemoved;
      else if (behavior == "MergedWithPrevious") s.behavior = SplitBehavior::kMergedWithPrevious;
      else if (behavior == "MergedWithNext") s.behavior = SplitBehavior::kMergedWithNext;
      else fail(where_, ": Split behavior '", behavior, "' is not supported");
      s.invert = p.value("invert", false);
      if (s.invert) fail(where_, ": inverted Split pre-tokenizers are not supported");
      pre_tokenizers_.push_back(std::move(s));
    } else if (type == "Digits") {
      // Numbers apart from the rest (Cohere's tokenizer, before its ByteLevel): each digit its own
      // piece with individual_digits, else each run of them; a digit is what Unicode counts as a
      // number (\p{N}), as the tokenizers library's char::is_numeric.
      PreTokenizerStep s;
      s.kind = PreTokenizerStep::Kind::kSplit;
      s.regex = std::make_shared<Regex>(p.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+", where_);
      pre_tokenizers_.push_back(std::move(s));
    } else {
      fail(where_, ": pre-tokenizer '", type, "' is not supported (supported: Sequence, Metaspace, ByteLevel, Split, Digits)");
    }
  }

  void read_decoder(const json& d) {
    if (d.is_null()) return;
    const std::string type = d.value("type", "");
    if (type == "Sequence") {
      for (const auto& step : d.at("decoders")) read_decoder(step);
    } else if (type == "Replace") {
      if (!d.at("pattern").contains("String")) fail(where_, ": only String patterns are supported in Replace decoders");
      decoders_.push_back({DecoderStep::Kind::kReplace, d["pattern"]["String"].get<std::string>(),
                           d.at("content").get<std::string>()});
    } else if (type == "ByteFallback") {
      decoders_.push_back({DecoderStep::Kind::kByteFallback, "", ""});
    } else if (type == "Fuse") {
      // Tokens are concatenated anyway.
    } else if (type == "Strip") {
      auto count = [&](const char* key) -> std::int64_t {  // an integer, as the file must hold it
        if (!d.contains(key)) return 0;
        if (!d[key].is_number_integer()) fail(where_, ": the Strip decoder's ", key, " must be an integer, not ", d[key].dump());
        return d[key].get<std::int64_t>();
      };
      const std::int64_t start = count("start");
      if (d.value("content", " ") != " " || count("stop") != 0 || start < 0 || start > 1) {
        fail(where_, ": only Strip of one leading space is supported");
      }
      strip_leading_space_ = start == 1;
    } else if (type == "ByteLevel") {
      decoders_.push_back({DecoderStep::Kind::kByteLevel, "", ""});
    } else if (type == "Metaspace") {
      const std::string replacement = d.value("replacement", std::string("\xE2\x96\x81"));
      decoders_.push_back({DecoderStep::Kind::kMetaspace, replacement, " "});
      std::string scheme = d.value("prepend_scheme", std::string("always"));
      if (d.contains("add_prefix_space")) scheme = d["add_prefix_space"].get<bool>() ? "always" : "never";
      strip_leading_space_ = scheme != "never";
    } else {
      fail(where_, ": decoder '", type, "' is not supported");
    }
  }

  void build_token_bytes() {
    const auto alphabet = byte_level_alphabet();
    std::unordered_map<std::string, unsigned char> inverse;
    for (unsigned b = 0; b < 256; ++b) inverse[alphabet[b]] = static_cast<unsigned char>(b);
    std::vector<bool> is_added(tokens_.size(), false);
    for (const auto& [content, id] : added_) is_added[static_cast<std::size_t>(id)] = true;
    std::vector<bool> is_special(tokens_.size(), false);
    for (auto id : special_) is_special[static_cast<std::size_t>(id)] = true;

    token_bytes_.resize(tokens_.size());
    for (std::size_t id = 0; id < tokens_.size(); ++id) {
      std::string s = tokens_[id];
      if (is_special[id]) continue;  // BOS, EOS, pad: control tokens decode to nothing
      if (is_added[id]) {
        token_bytes_[id] = s;
        continue;
      }
      for (const auto& step : decoders_) {
        switch (step.kind) {
          case DecoderStep::Kind::kReplace:
          case DecoderStep::Kind::kMetaspace: s = replace_all(s, step.a, step.b); break;
          case DecoderStep::Kind::kByteFallback: {
            unsigned value = 0;
            char tail = 0;
            if (s.size() == 6 && std::sscanf(s.c_str(), "<0x%2X>%c", &value, &tail) == 1) {
              s = std::string(1, static_cast<char>(value));
            }
            break;
          }
          case DecoderStep::Kind::kByteLevel: {
            std::string raw;
            for (auto c : utf8_chars(s)) {
              const auto it = inverse.find(std::string(c));
              if (it != inverse.end()) raw += static_cast<char>(it->second);
              else raw.append(c);
            }
            s = std::move(raw);
            break;
          }
        }
      }
      token_bytes_[id] = std::move(s);
    }
  }

  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }

  std::string normalize(std::string_view text) const {
    std::string s(text);
    for (const auto& step : normalizers_) {
      switch (step.kind) {
        case NormalizerStep::Kind::kPrepend: s = step.a + s; break;
        case NormalizerStep::Kind::kReplace: s = replace_all(s, step.a, step.b); break;
        case NormalizerStep::Kind::kLowercase:
          s = utf8_lowercase(s);
          break;
        case NormalizerStep::Kind::kUnicode: s = utf8_normalize(s, step.form); break;
      }
    }
    return s;
  }

  static std::vector<std::string> split_with(const PreTokenizerStep& step, const std::string& word) {
    std::vector<std::pair<std::size_t, std::size_t>> matches;
    if (step.regex) {
      matches = step.regex->find_all(word);
    } else if (!step.literal.empty()) {
      for (std::size_t at = word.find(step.literal); at != std::string::npos;
           at = word.find(step.literal, at + step.literal.size())) {
        matches.emplace_back(at, at + step.literal.size());
      }
    }
    std::vector<std::string> pieces;
    std::size_t last = 0;
    std::string carry;  // a match waiting to be merged into the next piece
    for (const auto& [b, e] : matches) {
      std::string gap = word.substr(last, b - last);
      std::string match = word.substr(b, e - b);
      switch (step.behavior) {
        case SplitBehavior::kIsolated:
          if (!gap.empty()) pieces.push_back(gap);
          pieces.push_back(match);
          break;
        case SplitBehavior::kRemoved:
          if (!gap.empty()) pieces.push_back(gap);
          break;
        case SplitBehavior::kMergedWithPrevious:
          pieces.push_back(gap + match);
          break;
        case SplitBehavior::kMergedWithNext:
          if (!carry.empty() || !gap.empty()) pieces.push_back(carry + gap);
          carry = match;
          break;
      }
      last = e;
    }
    std::string rest = carry + word.substr(last);
    if (!rest.empty()) pieces.push_back(rest);
    return pieces;
  }

  std::vector<std::string> pre_tokenize(std::string text, bool first_segment) const {
    std::vector<std::string> words{std::move(text)};
    for (const auto& step : pre_tokenizers_) {
      std::vector<std::string> next;
      for (auto& word : words) {
        switch (step.kind) {
          case PreTokenizerStep::Kind::kMetaspace: {
            std::string s = replace_all(word, " ", step.replacement);
            const bool prepend = step.prepend_scheme == "always" ||
                                 (step.prepend_scheme == "first" && first_segment);
            if (prepend && s.rfind(step.replacement, 0) != 0) s = step.replacement + s;
            if (!step.split) {
              next.push_back(std::move(s));
              break;
            }
            std::size_t start = 0;
            for (std::size_t at = s.find(step.replacement, 1); at != std::string::npos;
                 at = s.find(step.replacement, at + 1)) {
              next.push_back(s.substr(start, at - start));
              start = at;
            }
            next.push_back(s.substr(start));
            break;
          }
          case PreTokenizerStep::Kind::kByteLevel: {
            std::string s = word;
            if (step.add_prefix_space && first_segment && !s.empty() && s[0] != ' ') s = " " + s;
            const auto pieces = step.regex ? split_with(step, s) : std::vector<std::string>{s};
            static const auto alphabet = byte_level_alphabet();
            for (const auto& piece : pieces) {
              std::string mapped;
              for (unsigned char c : piece) mapped += alphabet[c];
              next.push_back(std::move(mapped));
            }
            break;
          }
          case PreTokenizerStep::Kind::kSplit:
            for (auto& piece : split_with(step, word)) next.push_back(std::move(piece));
            break;
        }
      }
      words = std::move(next);
    }
    return words;
  }

  void bpe(const std::string& word, std::vector<std::int32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (const auto it = vocab_.find(word); it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    struct Symbol {
      std::int32_t id;
      int prev, next;
      bool alive;
    };
    std::vector<Symbol> symbols;
    auto push = [&](std::int32_t id) {
      const int index = static_cast<int>(symbols.size());
      symbols.push_back({id, index - 1, index + 1, true});
    };
    for (auto c : utf8_chars(word)) {
      if (const auto it = vocab_.find(c); it != vocab_.end()) {
        push(it->second);
        continue;
      }
      if (byte_fallback_) {
        std::vector<std::int32_t> byte_ids;
        for (unsigned char b : c) {
          char name[8];
          std::snprintf(name, sizeof(name), "<0x%02X>", b);
          const auto it = vocab_.find(std::string_view(name));
          if (it == vocab_.end()) break;
          byte_ids.push_back(it->second);
        }
        if (byte_ids.size() == c.size()) {
          for (auto id : byte_ids) push(id);
          continue;
        }
      }
      if (unk_id_ < 0) fail("text contains '", std::string(c), "', which the tokenizer cannot represent (no unk token)");
      if (fuse_unk_ && !symbols.empty() && symbols.back().id == unk_id_) continue;
      push(unk_id_);
    }
    if (!symbols.empty()) symbols.back().next = -1;

    struct Candidate {
      std::int32_t rank;
      int left;
      std::int32_t left_id, right_id;
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : left > o.left;
      }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
    auto consider = [&](int left) {
      if (left < 0) return;
      const int right = symbols[left].next;
      if (right < 0) return;
      const auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
      if (it != merges_.end()) queue.push({it->second.first, left, symbols[left].id, symbols[right].id});
    };
    for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) consider(i);
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& left = symbols[c.left];
      if (!left.alive || left.id != c.left_id || left.next < 0) continue;
      Symbol& right = symbols[left.next];
      if (right.id != c.right_id) continue;
      left.id = merges_.at(pair_key(c.left_id, c.right_id)).second;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = c.left;
      consider(left.prev);
      consider(c.left);
    }
    for (int i = 0; i >= 0 && i < static_cast<int>(symbols.size()); i = symbols[i].next) {
      out.push_back(symbols[i].id);
    }
  }

  std::string where_;
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>> vocab_;
  std::unordered_map<std::uint64_t, std::pair<std::int32_t, std::int32_t>> merges_;
  TextTokens added_;  // longest first
  std::vector<std::int32_t> special_;
  std::vector<NormalizerStep> normalizers_;
  std::vector<PreTokenizerStep> pre_tokenizers_;
  std::vector<DecoderStep> decoders_;
  std::int32_t unk_id_ = -1;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false, byte_level_ = false;
  bool strip_leading_space_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> parse_hf_tokenizer(std::string_view json_text, const std::string& where) {
  HfTokenizerJson parsed = read_hf_tokenizer_json(json_text, where);
  if (!parsed.root.is_object() || !parsed.root.contains("model")) fail(where, ": no tokenizer model");
  try {
    return std::make_unique<HfBpeTokenizer>(std::move(parsed), where);
  } catch (const json::exception& e) {
    fail(where, ": malformed tokenizer (", e.what(), ")");
  }
}

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& file) {
  const auto mapped = MappedFile::open(file);  // parsed where it lies: no copy of a file of tens of MB
  const std::span<const std::byte> bytes = mapped->bytes();
  return parse_hf_tokenizer(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), file.string());
}

}  // namespace sepal
