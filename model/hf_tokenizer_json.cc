#include "model/hf_tokenizer_json.h"

#include <limits>
#include <type_traits>

#include "kernels/error.h"

namespace sepal {
namespace {

using nlohmann::json;

// nlohmann's SAX events: a document built as json::parse builds it (a stack of the open
// containers; an object's value goes in under the key just read), but for model.vocab and
// model.merges, whose entries go to the lists of HfTokenizerJson.
class Reader final : public json::json_sax_t {
 public:
  explicit Reader(HfTokenizerJson& out) : out_(out) {}

  std::string error;  // why the parse stopped, when it did

  bool null() override { return value(nullptr); }
  bool boolean(bool v) override { return value(v); }
  bool number_integer(number_integer_t v) override { return value(v); }
  bool number_unsigned(number_unsigned_t v) override { return value(v); }
  bool number_float(number_float_t v, const string_t&) override { return value(v); }
  bool string(string_t& v) override { return value(std::move(v)); }
  bool binary(binary_t&) override {  // only binary formats have them, never JSON text
    error = "a binary value";
    return false;
  }

  bool start_object(std::size_t) override {
    if (list_ != List::kNone) return enter_in_list(/*array=*/false);
    if (at_model_key("vocab")) return begin_list(List::kVocab);
    open(json::object());
    return true;
  }
  bool start_array(std::size_t) override {
    if (list_ != List::kNone) return enter_in_list(/*array=*/true);
    if (at_model_key("merges")) return begin_list(List::kMerges);
    open(json::array());
    return true;
  }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    if (list_ != List::kNone) {
      if (skip_depth_ == 0) key_ = std::move(k);  // a vocab entry's token
      return true;
    }
    if (stack_.size() == 1) top_key_ = k;
    key_ = std::move(k);
    // A repeated key: the last value counts, as in a document, list or not.
    if (at_model_key("vocab")) forget(List::kVocab);
    if (at_model_key("merges")) forget(List::kMerges);
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error = e.what();
    return false;
  }

 private:
  enum class List { kNone, kVocab, kMerges };

  // Whether the next value is the root object's "model" object's value for `name`.
  bool at_model_key(std::string_view name) const {
    return stack_.size() == 2 && stack_[0]->is_object() && stack_[1]->is_object() && top_key_ == "model" &&
           key_ == name;
  }

  void forget(List list) {
    if (list == List::kVocab) {
      out_.has_vocab = false;
      out_.vocab.clear();
      out_.vocab_not_integer.reset();
    } else {
      out_.has_merges = false;
      out_.merge_text.clear();
      out_.merge_ends.clear();
      out_.merge_without_space.reset();
      out_.bad_merge_index.reset();
    }
  }

  bool begin_list(List list) {
    (list == List::kVocab ? out_.has_vocab : out_.has_merges) = true;
    list_ = list;
    skip_depth_ = 0;
    in_pair_ = false;
    return true;
  }

  bool list_failed() const {
    return list_ == List::kVocab ? out_.vocab_not_integer.has_value()
                                 : out_.merge_without_space.has_value() || out_.bad_merge_index.has_value();
  }

  // A container inside the list: a merge's [a, b] pair, or (anything else) a bad entry skipped
  // whole.
  bool enter_in_list(bool array) {
    if (skip_depth_ > 0) {
      ++skip_depth_;
      return true;
    }
    if (list_ == List::kMerges && array && !in_pair_ && !list_failed()) {
      in_pair_ = true;
      pair_ok_ = true;
      pair_.clear();
      return true;
    }
    entry_is_bad();
    skip_depth_ = 1;
    return true;
  }

  // The end of a container: a skipped one's, a pair's, the list's own, or the document's.
  bool close() {
    if (list_ == List::kNone) {
      stack_.pop_back();
      return true;
    }
    if (skip_depth_ > 0) {
      --skip_depth_;
    } else if (in_pair_) {
      in_pair_ = false;
      if (list_failed()) return true;
      if (pair_ok_ && pair_.size() == 2) add_merge(pair_[0], pair_[1]);
      else entry_is_bad();
    } else {
      list_ = List::kNone;
    }
    return true;
  }

  // A scalar: a list's entry, or a value of the document.
  template <typename T>
  bool value(T&& v) {
    using V = std::decay_t<T>;
    if (list_ == List::kNone) {
      add(json(std::forward<T>(v)));
      return true;
    }
    if (skip_depth_ > 0 || list_failed()) return true;
    if (list_ == List::kVocab) {
      if constexpr (std::is_same_v<V, number_integer_t>) {
        out_.vocab.emplace_back(std::move(key_), v);
      } else if constexpr (std::is_same_v<V, number_unsigned_t>) {
        constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
        out_.vocab.emplace_back(std::move(key_), v > static_cast<number_unsigned_t>(kMax) ? kMax : static_cast<std::int64_t>(v));
      } else {
        entry_is_bad();
      }
      return true;
    }
    if constexpr (std::is_same_v<V, string_t>) {
      if (in_pair_) {
        pair_.push_back(std::move(v));
      } else if (const auto space = v.find(' ', 1); space == std::string::npos) {
        out_.merge_without_space = std::move(v);
      } else {
        add_merge(std::string_view(v).substr(0, space), std::string_view(v).substr(space + 1));
      }
    } else if (in_pair_) {
      pair_ok_ = false;
    } else {
      entry_is_bad();
    }
    return true;
  }

  void entry_is_bad() {
    if (list_failed()) return;
    if (list_ == List::kVocab) out_.vocab_not_integer = std::move(key_);
    else out_.bad_merge_index = out_.merge_count();
  }

  void add_merge(std::string_view left, std::string_view right) {
    out_.merge_text.append(left);
    out_.merge_ends.push_back(out_.merge_text.size());
    out_.merge_text.append(right);
    out_.merge_ends.push_back(out_.merge_text.size());
  }

  // A value into its place: the root, the end of the open array, or the open object under the
  // last key.
  json* add(json v) {
    if (stack_.empty()) {
      out_.root = std::move(v);
      return &out_.root;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    json& slot = top[std::move(key_)];  // the key is read again only after the next key event
    slot = std::move(v);
    return &slot;
  }

  void open(json container) { stack_.push_back(add(std::move(container))); }

  HfTokenizerJson& out_;
  std::vector<json*> stack_;  // the document's open containers (not the lists)
  std::string top_key_;       // the root object's last key
  std::string key_;           // the last key
  List list_ = List::kNone;   // the list being read
  int skip_depth_ = 0;        // containers open inside a bad entry being skipped
  bool in_pair_ = false;      // inside a merge's [a, b]
  bool pair_ok_ = true;       // no value in it but strings so far
  std::vector<std::string> pair_;
};

}  // namespace

HfTokenizerJson read_hf_tokenizer_json(std::string_view text, const std::string& where) {
  HfTokenizerJson out;
  Reader reader(out);
  if (!json::sax_parse(text.begin(), text.end(), &reader)) fail(where, ": not valid JSON (", reader.error, ")");
  return out;
}

}  // namespace sepal
