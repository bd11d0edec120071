#include "model/tuning_data.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kernels/error.h"

namespace sepal {
namespace {

using nlohmann::json;

// An example from a prompt (not scored) and a completion (scored), encoded as one text.
Example make_example(const std::string& prompt, const std::string& completion, const Tokenizer& tokenizer,
                     const ModelConfig& config, std::int64_t max_length) {
  Example e;
  if (config.bos_token_id >= 0) e.ids.push_back(config.bos_token_id);
  const std::vector<std::int32_t> prompt_ids = prompt.empty() ? std::vector<std::int32_t>{} : tokenizer.encode(prompt);
  const std::vector<std::int32_t> all = tokenizer.encode(prompt + completion);
  // The completion's ids are those past as many ids as the prompt alone encodes to (as
  // lm-evaluation-harness splits them): a token spanning the boundary counts as the prompt's.
  const std::size_t common = std::min(prompt_ids.size(), all.size());
  e.scored.assign(e.ids.size(), 0);
  for (std::size_t i = 0; i < all.size(); ++i) {
    e.ids.push_back(all[i]);
    e.scored.push_back(i >= common ? 1 : 0);
  }
  if (static_cast<std::int64_t>(e.ids.size()) > max_length) {
    e.ids.resize(static_cast<std::size_t>(max_length));
    e.scored.resize(static_cast<std::size_t>(max_length));
  }
  if (!e.scored.empty()) e.scored[0] = 0;  // the first id has nothing before it
  return e;
}

std::string where(const std::filesystem::path& file, std::int64_t line) {
  return file.string() + ":" + std::to_string(line);
}

}  // namespace

std::int64_t Example::scored_count() const {
  std::int64_t n = 0;
  for (auto s : scored) n += s;
  return n;
}

std::vector<Example> read_examples(const std::filesystem::path& file, const Tokenizer& tokenizer,
                                   const ModelConfig& config, std::int64_t max_length) {
  if (max_length < 2) fail("examples must be allowed at least 2 tokens, not ", max_length);
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("cannot read the data file ", file.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const std::size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) fail(file.string(), ": holds no examples");
  std::vector<Example> examples;
  std::istringstream lines(text);
  std::string line;
  std::int64_t number = 0;
  if (text[first] == '{') {
    while (std::getline(lines, line)) {
      ++number;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json record;
      try {
        record = json::parse(line);
      } catch (const json::exception&) {
        fail(where(file, number), ": not valid JSON");
      }
      const auto string_field = [&](const char* name) -> const std::string* {
        if (!record.is_object() || !record.contains(name)) return nullptr;
        if (!record[name].is_string()) fail(where(file, number), ": \"", name, "\" must be a string");
        return record[name].get_ptr<const std::string*>();
      };
      const std::string* body = string_field("text");
      const std::string* prompt = string_field("prompt");
      const std::string* completion = string_field("completion");
      Example e;
      if (body && !prompt && !completion) {
        e = make_example("", *body, tokenizer, config, max_length);
      } else if (!body && prompt && completion) {
        e = make_example(*prompt, *completion, tokenizer, config, max_length);
      } else {
        fail(where(file, number), ": expected an object with \"text\", or with \"prompt\" and \"completion\"");
      }
      if (e.scored_count() == 0) fail(where(file, number), ": the example has no token to score");
      examples.push_back(std::move(e));
    }
  } else {
    std::string document;
    std::int64_t document_line = 0;
    const auto flush = [&] {
      if (document.empty()) return;
      Example e = make_example("", document, tokenizer, config, max_length);
      if (e.scored_count() == 0) fail(where(file, document_line), ": the document has no token to score");
      examples.push_back(std::move(e));
      document.clear();
    };
    while (std::getline(lines, line)) {
      ++number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) {
        flush();
      } else {
        if (document.empty()) document_line = number;
        document += (document.empty() ? "" : "\n") + line;
      }
    }
    flush();
  }
  if (examples.empty()) fail(file.string(), ": holds no examples");
  return examples;
}

std::string examples_hash(const std::vector<Example>& examples) {
  std::uint64_t hash = 1469598103934665603ull;
  const auto mix = [&](std::uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      hash ^= (v >> (8 * i)) & 0xff;
      hash *= 1099511628211ull;
    }
  };
  mix(examples.size());
  for (const Example& e : examples) {
    mix(e.ids.size());
    for (std::size_t i = 0; i < e.ids.size(); ++i) mix(static_cast<std::uint64_t>(e.ids[i]) << 1 | e.scored[i]);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return hex;
}

}  // namespace sepal
