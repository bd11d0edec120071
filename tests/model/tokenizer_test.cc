// Tokenizers: the shared models' own tokenizers against their reference prompt ids, byte-level
// BPE on a hand-built tokenizer.json, and UTF-8 streaming.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "model/tokenizer.h"
#include "model/utf8.h"
#include "tests/test_util.h"

namespace sepal {
namespace {

using nlohmann::json;
using Ids = std::vector<std::int32_t>;

Ids reference_prompt_ids(const std::string& model) {
  const auto ref = json::parse(test::read_file(test::models_dir() / "reference" / (model + ".greedy.json")));
  Ids ids = ref["prompt_ids"].get<Ids>();
  ids.erase(ids.begin());  // BOS comes from config.json, not from the tokenizer
  return ids;
}

TEST(SentencePiece, EncodesLikeTheReference) {
  const auto tok = load_tokenizer(test::models_dir() / "stories260K");
  EXPECT_EQ(tok->encode("Once upon a time"), reference_prompt_ids("stories260K"));
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_TRUE(tok->strips_leading_space());
}

TEST(SentencePiece, RoundTripsTextIncludingByteFallback) {
  for (const char* model : {"stories260K", "babyllama-tok105"}) {
    const auto tok = load_tokenizer(test::models_dir() / model);
    EXPECT_EQ(tok->decode(tok->encode("Once upon a time, Lily said \"hi\".")), "Once upon a time, Lily said \"hi\".");
  }
  // stories260K has byte pieces: any UTF-8 survives.
  const auto bytes = load_tokenizer(test::models_dir() / "stories260K");
  EXPECT_EQ(bytes->decode(bytes->encode("caf\xC3\xA9 \xE2\x9C\x93 ok")), "caf\xC3\xA9 \xE2\x9C\x93 ok");
  // babyllama-tok105's 105 pieces have none: an unknown character decodes as SentencePiece's " ⁇ ".
  const auto small = load_tokenizer(test::models_dir() / "babyllama-tok105");
  EXPECT_EQ(small->decode(small->encode("a \xE2\x9C\x93 b")), "a  \xE2\x81\x87  b");
}

TEST(HfBpe, EncodesLikeTheReference) {
  const auto tok = load_tokenizer(test::models_dir() / "tinystories-656K");
  EXPECT_EQ(tok->encode("Once upon a time"), reference_prompt_ids("tinystories-656K"));
  EXPECT_EQ(tok->decode(tok->encode("Once upon a time, Lily said hello.")), "Once upon a time, Lily said hello.");
}

TEST(HfBpe, UnknownCharactersBecomeOneFusedUnk) {
  // tinystories-656K has byte_fallback but no byte pieces: unknown characters become <unk>.
  const auto tok = load_tokenizer(test::models_dir() / "tinystories-656K");
  const Ids ids = tok->encode("A \xF0\x9F\x98\x80\xF0\x9F\x98\x80 cat");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 0), 1);
  EXPECT_EQ(tok->encode("<|end_story|>"), Ids{2});  // special tokens are matched whole
}

// A byte-level tokenizer: the 256 byte characters, a few merges, GPT-2's regex.
std::string byte_level_json(const json& pre_tokenizer) {
  json vocab = json::object();
  // GPT-2's byte alphabet, in byte order.
  int next = 256;
  std::vector<std::string> alphabet(256);
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    const unsigned cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) s += static_cast<char>(cp);
    else { s += static_cast<char>(0xC0 | (cp >> 6)); s += static_cast<char>(0x80 | (cp & 0x3F)); }
    alphabet[b] = s;
    vocab[s] = b;
  }
  const std::string G = alphabet[' '];  // "Ġ"
  vocab[G + "t"] = 256;
  vocab["he"] = 257;
  vocab[G + "the"] = 258;
  vocab["12"] = 259;
  json merges = {G + " t", "h e", G + "t he", "1 2"};
  return json{{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
              {"added_tokens", {{{"id", 260}, {"content", "<|eot|>"}, {"special", true}}}},
              {"pre_tokenizer", pre_tokenizer},
              {"decoder", {{"type", "ByteLevel"}}}}.dump();
}

TEST(ByteLevelBpe, MergesWithinRegexPiecesAndRoundTrips) {
  const auto tok = parse_hf_tokenizer(byte_level_json({{"type", "ByteLevel"}, {"add_prefix_space", false}}), "t");
  EXPECT_EQ(tok->encode(" the cat"), (Ids{258, ' ', 'c', 'a', 't'}));
  EXPECT_EQ(tok->encode("the"), (Ids{'t', 257}));
  EXPECT_EQ(tok->encode("hi<|eot|>"), (Ids{'h', 'i', 260}));
  const std::string text = "h\xC3\xA9llo w\xC3\xB6rld \xF0\x9F\x98\x80\n\ttabs  and 1212";
  EXPECT_EQ(tok->decode(tok->encode(text)), text);
  EXPECT_FALSE(tok->strips_leading_space());
}

TEST(ByteLevelBpe, SplitPreTokenizerBoundsMerges) {
  // Llama 3 style: digits are split into groups of up to three before byte-level BPE.
  const json split_then_bytes = {
      {"type", "Sequence"},
      {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,3}"}}}, {"behavior", "Isolated"}, {"invert", false}},
                         {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  const auto split = parse_hf_tokenizer(byte_level_json(split_then_bytes), "t");
  EXPECT_EQ(split->encode("1212"), (Ids{259, '1', '2'}));  // "121" | "2"
  const auto plain = parse_hf_tokenizer(byte_level_json({{"type", "ByteLevel"}, {"use_regex", false}}), "t");
  EXPECT_EQ(plain->encode("1212"), (Ids{259, 259}));
}

// Cohere's pre-tokenizer: Digits (each digit its own piece, or each run), then ByteLevel with GPT-2's split.
TEST(ByteLevelBpe, DigitsPreTokenizerSplitsNumbers) {
  const auto digits = [](bool individual) {
    return json{{"type", "Sequence"},
                {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", individual}},
                                   {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}};
  };
  const auto each = parse_hf_tokenizer(byte_level_json(digits(true)), "t");
  EXPECT_EQ(each->encode("1212"), (Ids{'1', '2', '1', '2'}));  // no "12": every digit alone
  EXPECT_EQ(each->encode(" the 12"), (Ids{258, ' ', '1', '2'}));
  const auto runs = parse_hf_tokenizer(byte_level_json(digits(false)), "t");
  EXPECT_EQ(runs->encode("1212"), (Ids{259, 259}));
  EXPECT_EQ(runs->encode("a12b"), (Ids{'a', 259, 'b'}));
}

TEST(TextStream, HoldsPartialCharactersAndReplacesInvalidBytes) {
  const auto tok = parse_hf_tokenizer(byte_level_json({{"type", "ByteLevel"}}), "t");
  TextStream stream(*tok);
  EXPECT_EQ(stream.push('h'), "h");
  EXPECT_EQ(stream.push(0xC3), "");  // first byte of "é"
  EXPECT_EQ(stream.push(0xA9), "\xC3\xA9");
  EXPECT_EQ(stream.push(0xA9), "\xEF\xBF\xBD");  // lone continuation byte
  EXPECT_EQ(stream.push(0xF0), "");
  EXPECT_EQ(stream.push('x'), "\xEF\xBF\xBDx");  // a lead byte that was not continued
  EXPECT_EQ(stream.push(0xE2), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");  // unfinished at the end
  EXPECT_EQ(stream.push(260), "");  // special tokens decode to nothing
}

TEST(HfBpe, RefusesTextThatIsNotUtf8BeforeAnyRegexRuns) {
  // PCRE2 runs with its UTF check off (checked once per text instead): invalid bytes must never
  // reach it.
  const auto tok = parse_hf_tokenizer(byte_level_json({{"type", "ByteLevel"}}), "t");
  for (const std::string bad : {"ab\xC3", "\xFF", "a\xED\xA0\x80" "b", "\xC0\xAF", "ok \xF4\x90\x80\x80"}) {
    try {
      tok->encode(bad);
      ADD_FAILURE() << "encoded invalid UTF-8";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(tok->decode(tok->encode("fine \xC3\xA9")), "fine \xC3\xA9");
}

TEST(HfBpe, ARegexThatBacktracksWithoutEndFailsWithAMessage) {
  const json catastrophic = {{"type", "Split"}, {"pattern", {{"Regex", "(a|aa)+\\d"}}}, {"behavior", "Isolated"}};
  const auto tok = parse_hf_tokenizer(byte_level_json(catastrophic), "t");
  try {
    tok->encode(std::string(40, 'a'));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("limit"), std::string::npos) << e.what();
  }
}

TEST(Utf8, LowercaseFollowsUnicodeAsHuggingFaceDoes) {
  // Rust's str::to_lowercase, which the tokenizers library's Lowercase normalizer calls.
  EXPECT_EQ(utf8_lowercase("HeLLo"), "hello");
  EXPECT_EQ(utf8_lowercase("\xC3\x80\xC3\x89\xC3\x8E"), "\xC3\xA0\xC3\xA9\xC3\xAE");          // ÀÉÎ
  EXPECT_EQ(utf8_lowercase("\xD0\x9F\xD1\x80\xD0\x98"), "\xD0\xBF\xD1\x80\xD0\xB8");          // ПрИ
  EXPECT_EQ(utf8_lowercase("\xC4\xB0"), "i\xCC\x87");                                    // İ: two code points
  EXPECT_EQ(utf8_lowercase("\xE1\xBA\x9E"), "\xC3\x9F");                                // ẞ to ß
  EXPECT_EQ(utf8_lowercase("\xE2\x84\xAA"), "k");                                        // Kelvin sign
  // Final sigma: ΟΔΟΣ ΣΑΣ. -> οδος σας. ; a lone Σ stays σ.
  EXPECT_EQ(utf8_lowercase("\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 \xCE\xA3\xCE\x91\xCE\xA3."),
            "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82 \xCF\x83\xCE\xB1\xCF\x82.");
  EXPECT_EQ(utf8_lowercase("\xCE\xA3"), "\xCF\x83");
  EXPECT_EQ(utf8_lowercase("\xF0\x90\x90\x80"), "\xF0\x90\x90\xA8");  // Deseret, outside the BMP
  EXPECT_EQ(utf8_lowercase("\xE6\x97\xA5 1!"), "\xE6\x97\xA5 1!");
  EXPECT_FALSE(first_invalid_utf8("\xE6\x97\xA5"));
  EXPECT_EQ(first_invalid_utf8("ab\xE6\x97"), std::optional<std::size_t>(2));
}

// The four normalization forms of tokenizer.json normalizers (NFC: Qwen2's), from Unicode's
// examples: composition, canonical order of marks, compatibility mappings, Hangul.
TEST(Utf8, NormalizationFormsAreUnicodes) {
  const std::string e_acute = "\xC3\xA9", e_plus_mark = "e\xCC\x81";  // é, e + U+0301
  EXPECT_EQ(utf8_normalize(e_plus_mark, UnicodeForm::kNfc), e_acute);
  EXPECT_EQ(utf8_normalize(e_acute, UnicodeForm::kNfd), e_plus_mark);
  // U+1E9B U+0323 (long s with dot above, dot below): NFC keeps the letter, NFKC makes it an s.
  const std::string s_dots = "\xE1\xBA\x9B\xCC\xA3";
  EXPECT_EQ(utf8_normalize(s_dots, UnicodeForm::kNfc), s_dots);
  EXPECT_EQ(utf8_normalize(s_dots, UnicodeForm::kNfkc), "\xE1\xB9\xA9");            // U+1E69
  EXPECT_EQ(utf8_normalize(s_dots, UnicodeForm::kNfd), "\xC5\xBF\xCC\xA3\xCC\x87");  // ſ, below, above
  EXPECT_EQ(utf8_normalize(s_dots, UnicodeForm::kNfkd), "s\xCC\xA3\xCC\x87");
  EXPECT_EQ(utf8_normalize("\xEF\xAC\x81", UnicodeForm::kNfc), "\xEF\xAC\x81");  // the ligature fi stays
  EXPECT_EQ(utf8_normalize("\xEF\xAC\x81", UnicodeForm::kNfkc), "fi");
  EXPECT_EQ(utf8_normalize("\xE1\x84\x80\xE1\x85\xA1", UnicodeForm::kNfc), "\xEA\xB0\x80");  // jamo to 가
  EXPECT_EQ(utf8_normalize("plain ascii", UnicodeForm::kNfkd), "plain ascii");
  EXPECT_EQ(utf8_normalize("", UnicodeForm::kNfc), "");
  EXPECT_EQ(utf8_normalize("e\xCC\x81\xFF", UnicodeForm::kNfc), "e\xCC\x81\xFF");  // not UTF-8: as it is
}

// tokenizer.json's vocab and merges are streamed (hf_tokenizer_json.h): whatever the order of the
// keys, the form of the merges ("a b" or [a, b]), a repeated key (the last counts, as in a
// document) or keys of the same names elsewhere, the tokenizer is the one the file describes.
TEST(HfBpe, ReadsVocabAndMergesInEveryLayout) {
  const std::string text = test::read_file(test::models_dir() / "tinystories-656K" / "tokenizer.json");
  const json file = json::parse(text);
  const std::string sample = "Once upon a time, Lily said \"hello\" to 12 cats. <|end_story|>\nThe end";
  const auto base = parse_hf_tokenizer(text, "tokenizer.json");
  const Ids ids = base->encode(sample);
  ASSERT_GT(ids.size(), 10u);

  json pairs = file;
  for (auto& m : pairs["model"]["merges"]) {
    const std::string s = m;
    m = json::array({s.substr(0, s.find(' ', 1)), s.substr(s.find(' ', 1) + 1)});
  }
  std::string model_text = "{";
  std::vector<std::string> keys;
  for (const auto& [key, value] : file["model"].items()) keys.push_back(key);
  for (auto k = keys.rbegin(); k != keys.rend(); ++k)
    model_text += json(*k).dump() + ":" + file["model"][*k].dump() + (k + 1 == keys.rend() ? "" : ",");
  model_text += "}";
  json rest = file;
  rest.erase("model");
  const std::string rest_text = rest.dump();
  const std::string decoys = R"("vocab":{"x":"y"},"merges":"none","other":{"model":{"vocab":1,"merges":{}}},)";
  const std::vector<std::pair<std::string, std::string>> layouts = {
      {"merges as pairs", pairs.dump()},
      {"model first, its keys reversed", "{\"model\":" + model_text + "," + decoys + rest_text.substr(1)},
      {"model last", "{" + decoys + rest_text.substr(1, rest_text.size() - 2) + ",\"model\":" + model_text + "}"},
      {"vocab and merges repeated", "{\"model\":{\"vocab\":{\"a\":\"x\"},\"merges\":[1]," + model_text.substr(1) + "," +
                                        rest_text.substr(1)},
  };
  for (const auto& [name, layout] : layouts) {
    const auto tok = parse_hf_tokenizer(layout, "tokenizer.json");
    EXPECT_EQ(tok->encode(sample), ids) << name;
    EXPECT_EQ(tok->decode(ids), base->decode(ids)) << name;
    EXPECT_EQ(tok->vocab_size(), base->vocab_size()) << name;
  }
}

TEST(HfBpe, RejectsUnsupportedOrMalformedFiles) {
  auto expect_error = [](const std::string& text, const std::string& needle) {
    try {
      parse_hf_tokenizer(text, "tokenizer.json");
      ADD_FAILURE() << "accepted; expected error about " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("{", "not valid JSON");
  expect_error(R"({"model":{"type":"Unigram","vocab":[]}})", "model type 'Unigram' is not supported");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a b"]}})", "missing from the vocab");
  // An id past every integer type is a float to the JSON parser: refused, not converted (found by
  // fuzz_tokenizer_json).
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"added_tokens":[{"id":1e112,"content":"<x>"}]})",
               "the id of added token \"<x>\" is not an integer");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"added_tokens":[{"id":18446744073709551615,"content":"<x>"}]})",
               "out of range");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"normalizer":{"type":"BertNormalizer"}})", "normalizer 'BertNormalizer'");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":"x"},"merges":[]}})", "not an integer");
  // vocab and merges are streamed, not parsed into a document (hf_tokenizer_json.h): their bad
  // entries are refused with the same words, in the same order, as a document's.
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"b":[1],"c":2},"merges":[]}})", "vocab id of 'b' is not an integer");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"b":{"x":1}},"merges":[]}})", "vocab id of 'b' is not an integer");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0.5},"merges":[]}})", "vocab id of 'a' is not an integer");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":-1},"merges":[]}})", "token id -1 for 'a' is out of range");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":18446744073709551615},"merges":[]}})", "for 'a' is out of range");
  expect_error(R"({"model":{"type":"BPE","vocab":[["a",0]],"merges":[]}})", "model has no vocab object");
  expect_error(R"({"model":{"type":"BPE","merges":[]}})", "model has no vocab object");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":{"a":"b"}}})", "model has no merges list");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"aa":1},"merges":["a a","aa"]}})", "merge 'aa' is not two tokens");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"aa":1},"merges":["a a",["a"]]}})", "merge #1 is neither");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"aa":1},"merges":[["a","a","a"]]}})", "merge #0 is neither");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"aa":1},"merges":[["a",["a"]]]}})", "merge #0 is neither");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"aa":1},"merges":[["a",1]]}})", "merge #0 is neither");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"aa":1},"merges":["a a",{"a":"a"}]}})", "merge #1 is neither");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"aa":1},"merges":["a a",null]}})", "merge #1 is neither");
  // A merge missing from the vocab before a malformed one is what is reported, as before.
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a a","aa"]}})", "merge 'a a' uses tokens missing");
  // The model's type is checked first, whatever its vocab holds.
  expect_error(R"({"model":{"vocab":{"a":"x"},"merges":[],"type":"WordPiece"}})", "model type 'WordPiece' is not supported");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0)", "not valid JSON");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a a"  )", "not valid JSON");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]}} x)", "not valid JSON");
  expect_error(R"([{"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}])", "no tokenizer model");
  // A Strip decoder's stop past every integer type (found by fuzz_tokenizer_json), or not a number.
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"decoder":{"type":"Strip","content":" ","start":1,"stop":6.7e68}})",
               "the Strip decoder's stop must be an integer, not");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"decoder":{"type":"Strip","content":" ","start":"1","stop":0}})",
               "the Strip decoder's start must be an integer");
  expect_error(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"decoder":{"type":"Strip","content":" ","start":-1,"stop":0}})",
               "only Strip of one leading space");
  try {
    load_tokenizer("/nonexistent");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer"), std::string::npos);
  }
}

}  // namespace
}  // namespace sepal
