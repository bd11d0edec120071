// sepal tokenize: the ids a model's tokenizer gives for a text, as generate and tune see them.
#include <boost/program_options.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "model/gguf.h"
#include "model/model_config.h"
#include "model/tokenizer.h"
#include "tools/commands.h"

namespace sepal::tools {

namespace po = boost::program_options;

namespace {

// The BOS id prepended to every prompt, or -1: a GGUF file's metadata (a vocabulary-only file
// has no model to configure), a folder's config.json.
std::int32_t bos_token(const std::string& model) {
  if (!is_gguf_file(model)) return read_model_config(model).bos_token_id;
  const GgufFile file = GgufFile::open(model);
  const auto bos = file.integer("tokenizer.ggml.bos_token_id");
  if (!bos || !file.boolean("tokenizer.ggml.add_bos_token").value_or(true) || *bos < 0 || *bos > INT32_MAX) return -1;
  return static_cast<std::int32_t>(*bos);
}

}  // namespace

int tokenize_command(int argc, char** argv) {
  std::string model, text;
  std::vector<std::string> files;
  po::options_description options("sepal tokenize: the token ids a model's tokenizer gives for a text");
  options.add_options()
      ("help,h", "show this help")
      ("model", po::value(&model)->required(), "model folder (Hugging Face layout) or GGUF file (a vocabulary-only one too)")
      ("text", po::value(&text), "the text")
      ("file", po::value(&files), "read the text from FILE (its bytes exactly; no newline is stripped); repeated: "
                                   "each file's ids on a line of their own, in order, the tokenizer loaded once")
      ("no-bos", "do not prepend the model's BOS id")
      ("json", "print {\"ids\": [...], \"pieces\": [...]} (each id's bytes as text) instead of the ids");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(options).run(), vm);
  if (vm.count("help")) {
    std::cout << options << "\n";
    return 0;
  }
  po::notify(vm);
  if (vm.count("text") == vm.count("file")) throw UsageError{"give --text or --file (one of them)"};
  // Every text is read before the tokenizer loads: a missing file fails at once.
  std::vector<std::string> texts;
  if (vm.count("text")) texts.push_back(text);
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) fail("cannot read ", file);
    texts.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const auto tokenizer = load_tokenizer(model);
  const std::int32_t bos = vm.count("no-bos") ? -1 : bos_token(model);
  for (const std::string& t : texts) {
    std::vector<std::int32_t> ids;
    if (bos >= 0) ids.push_back(bos);
    for (const std::int32_t id : tokenizer->encode(t)) ids.push_back(id);
    if (vm.count("json")) {
      nlohmann::json out;
      out["ids"] = ids;
      out["pieces"] = nlohmann::json::array();
      for (const std::int32_t id : ids) out["pieces"].push_back(id < tokenizer->vocab_size() ? tokenizer->token_bytes(id) : std::string());
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      continue;
    }
    std::string line;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) line += ' ';
      line += std::to_string(ids[i]);
    }
    std::cout << line << "\n";
  }
  return 0;
}

}  // namespace sepal::tools
