// Texts drawn at random from the grammars of structured outputs, and texts checked against them,
// for tests/api/json_schema_oracle.py (which validates them with Python's jsonschema).
//
//   structured_sample_tool sample SCHEMA.json COUNT SEED   one JSON string a line, or {"error"}
//   structured_sample_tool calls FORMAT TOOLS.json NAME|- PARALLEL(0|1) COUNT SEED
//   structured_sample_tool check SCHEMA.json               reads JSON strings a line; prints 1 or 0
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "actors/api/structured_output.h"

namespace {

using sepal::api::GrammarReader;
using sepal::api::StructuredOutput;
using ojson = nlohmann::ordered_json;

ojson read_json(const char* path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return ojson::parse(s.str());
}

// A random text of the grammar: bytes drawn among those it allows, closing brackets and quotes
// favoured as the text grows so that most draws end; empty when none ended within the limit.
std::string draw(const StructuredOutput& output, std::mt19937_64& random) {
  GrammarReader reader(output.grammar, output.start);
  std::string text;
  while (text.size() < 4000) {
    if (reader.complete() && (!reader.can_continue() || random() % 3 == 0)) return text;
    std::vector<unsigned char> bytes;
    std::vector<double> weights;
    for (int c = 0; c < 256; ++c) {
      const std::size_t mark = reader.mark();
      GrammarReader::Heads next;
      reader.advance(reader.heads(), static_cast<unsigned char>(c), next);
      reader.release(mark);
      if (next.empty()) continue;
      double w = 1;
      const bool closer = c == '"' || c == '}' || c == ']';
      const bool opener = c == '{' || c == '[';
      if (closer) w = text.size() > 200 ? 1000 : text.size() > 60 ? 20 : 3;
      if (opener) w = text.size() > 200 ? 0.01 : 1;
      bytes.push_back(static_cast<unsigned char>(c));
      weights.push_back(w);
    }
    if (bytes.empty()) return text;  // complete, nothing can follow
    std::discrete_distribution<std::size_t> pick(weights.begin(), weights.end());
    const unsigned char c = bytes[pick(random)];
    if (!reader.feed(c)) return {};
    text += static_cast<char>(c);
  }
  return {};
}

int print_samples(const std::variant<std::shared_ptr<const StructuredOutput>, std::string>& output, long count,
                  unsigned long seed) {
  if (auto* why = std::get_if<std::string>(&output)) {
    std::cout << ojson{{"error", *why}}.dump() << "\n";
    return 0;
  }
  const StructuredOutput& o = *std::get<std::shared_ptr<const StructuredOutput>>(output);
  std::mt19937_64 random(seed);
  for (long i = 0; i < count; ++i) {
    const std::string text = draw(o, random);
    std::cout << (text.empty() ? ojson(nullptr) : ojson(text)).dump() << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "sample" && argc == 5) {
    return print_samples(sepal::api::json_schema_output(read_json(argv[2])), std::stol(argv[3]), std::stoul(argv[4]));
  }
  if (mode == "calls" && argc == 8) {
    const std::string f = argv[2];
    const auto format = f == "hermes"        ? sepal::api::ToolCallFormat::kHermes
                        : f == "llama3_json" ? sepal::api::ToolCallFormat::kLlama3Json
                        : f == "granite"     ? sepal::api::ToolCallFormat::kGranite
                        : f == "harmony"     ? sepal::api::ToolCallFormat::kHarmony
                                             : sepal::api::ToolCallFormat::kMistral;
    const std::string name = argv[4];
    return print_samples(sepal::api::forced_calls_output(format, read_json(argv[3]), name == "-" ? "" : name,
                                                         std::string(argv[5]) == "1"),
                         std::stol(argv[6]), std::stoul(argv[7]));
  }
  if (mode == "check" && argc == 3) {
    auto output = sepal::api::json_schema_output(read_json(argv[2]));
    if (auto* why = std::get_if<std::string>(&output)) {
      std::cout << ojson{{"error", *why}}.dump() << "\n";
      return 0;
    }
    const StructuredOutput& o = *std::get<std::shared_ptr<const StructuredOutput>>(output);
    std::string line;
    while (std::getline(std::cin, line)) {
      GrammarReader reader(o.grammar, o.start);
      std::cout << (reader.feed(ojson::parse(line).get<std::string>()) && reader.complete() ? 1 : 0) << "\n";
    }
    return 0;
  }
  std::fprintf(stderr, "usage: %s sample SCHEMA COUNT SEED | calls FORMAT TOOLS NAME|- PARALLEL COUNT SEED | check SCHEMA\n", argv[0]);
  return 2;
}
