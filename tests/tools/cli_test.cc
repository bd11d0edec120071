// `sepal generate` and `sepal synth` end to end, as users run them: the reference generations of
// every real model in ../shared/models/reference, and one-line errors for bad input.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include <cmath>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace sepal {
namespace {

using nlohmann::json;
using test::run_sepal;

json generate_json(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"generate", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  const auto r = run_sepal(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? json::parse(r.out) : json();
}

TEST(Generate, ReproducesEveryReferenceGeneration) {
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(test::models_dir() / "reference")) {
    const auto ref = json::parse(test::read_file(entry.path()));
    const auto model = test::models_dir() / ref["model"].get<std::string>();
    SCOPED_TRACE(entry.path().string());
    // References of architectures sepal does not run yet wait for them.
    const json architectures = json::parse(test::read_file(model / "config.json")).value("architectures", json::array());
    if (architectures != json::array({"LlamaForCausalLM"}) && architectures != json::array({"BloomForCausalLM"})) {
      continue;
    }
    const json out = generate_json({"--model", model.string(), "--prompt", ref["prompt"],
                                    "--max-new-tokens", std::to_string(ref["max_new_tokens"].get<int>())});
    EXPECT_EQ(out["prompt_ids"], ref["prompt_ids"]);
    EXPECT_EQ(out["generated_ids"], ref["generated_ids"]);
    EXPECT_EQ(out["text"], ref["text"]);
    for (const char* key : {"prompt_tokens_per_s", "decode_tokens_per_s", "weight_bytes", "peak_rss_bytes"}) {
      EXPECT_GT(out["stats"][key].get<double>(), 0.0) << key;
    }
    ++checked;
  }
  EXPECT_GE(checked, 3);  // two Llamas and a BLOOM
}

TEST(Generate, SpeculationWithEachDraftGivesTheTextOfDecoding) {
  const auto model = (test::models_dir() / "tinystories-656K").string();
  const std::vector<std::string> common = {"--model", model, "--prompt", "The dog ran", "--max-new-tokens", "60",
                                           "--temperature", "0.8", "--seed", "5"};
  const json plain = generate_json(common);
  const std::vector<std::vector<std::string>> drafts = {
      {"--draft-ngram", "3"},
      {"--draft-layers", "1", "--tree-size", "8"},
      {"--draft-model", model, "--draft-dtype", "int8"},
      {"--draft-layers", "1", "--draft-ngram", "3", "--tree-size", "24"}};  // staged: the n-gram below the model draft
  for (const auto& draft : drafts) {
    auto args = common;
    args.insert(args.end(), draft.begin(), draft.end());
    const json out = generate_json(args);
    SCOPED_TRACE(draft.front());
    EXPECT_EQ(out["generated_ids"], plain["generated_ids"]);
    EXPECT_EQ(out["text"], plain["text"]);
    const json& spec = out["stats"]["speculation"];
    EXPECT_GE(spec["mean_accepted_tokens"].get<double>(), 1.0);
    EXPECT_GT(spec["tree_steps"].get<int>(), 0);
    EXPECT_GT(out["stats"]["decode_tokens_per_s"].get<double>(), 0.0);
  }
}

TEST(Generate, SpeculationRefusesWhatCannotWork) {
  const auto models = test::models_dir();
  const auto target = (models / "stories260K").string();
  auto error_of = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"generate", "--model", target, "--max-new-tokens", "4"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_sepal(args);
    EXPECT_NE(r.exit_code, 0);
    return r.err;
  };
  EXPECT_NE(error_of({"--draft-model", (models / "babyllama-tok105").string()}).find("different tokenizer or vocabulary"),
            std::string::npos);
  EXPECT_NE(error_of({"--draft-model", target, "--draft-layers", "1"}).find("give one of --draft-model and --draft-layers"),
            std::string::npos);
  EXPECT_NE(error_of({"--draft-layers", "1", "--draft-ngram", "1"}).find("--draft-ngram must be an order"), std::string::npos);
  EXPECT_NE(error_of({"--draft-layers", "5"}).find("--draft-layers must be between 1 and 4"), std::string::npos);
  EXPECT_NE(error_of({"--draft-ngram", "3", "--tree-size", "0"}).find("--tree-size must be between"), std::string::npos);
  EXPECT_NE(error_of({"--tree-size", "4"}).find("--tree-size is for speculative decoding"), std::string::npos);
  EXPECT_NE(error_of({"--draft-ngram", "3", "--draft-dtype", "int8"}).find("--draft-dtype is for"), std::string::npos);
  EXPECT_NE(error_of({"--draft-pipelining"}).find("--draft-pipelining is for speculative decoding"), std::string::npos);
  EXPECT_NE(error_of({"--draft-ngram", "3", "--draft-pipelining"}).find("is for a swarm"), std::string::npos);
  // A bad draft folder is refused before a swarm starts.
  EXPECT_NE(error_of({"--draft-model", "/nonexistent-draft", "--hosts", "2"}).find("/nonexistent-draft"), std::string::npos);
}

TEST(Generate, AGgufFileGivesTheReference) {
  // stories260K as published for llama.cpp: prompt ids and text included, in int8 too.
  const auto ref = json::parse(test::read_file(test::models_dir() / "reference" / "stories260K.greedy.json"));
  const auto gguf = (test::models_dir() / "stories260K" / "original" / "stories260K.gguf").string();
  const json out = generate_json({"--model", gguf, "--prompt", ref["prompt"], "--max-new-tokens",
                                  std::to_string(ref["max_new_tokens"].get<int>())});
  EXPECT_EQ(out["prompt_ids"], ref["prompt_ids"]);
  EXPECT_EQ(out["generated_ids"], ref["generated_ids"]);
  EXPECT_EQ(out["text"], ref["text"]);
  EXPECT_EQ(generate_json({"--model", gguf, "--prompt", "Once", "--max-new-tokens", "8", "--dtype", "int8"})["generated_ids"].size(), 8u);
}

TEST(Tokenize, IdsOfAFolderAndOfItsGgufAndTheFlags) {
  const auto folder = (test::models_dir() / "stories260K").string();
  const auto gguf = (test::models_dir() / "stories260K" / "original" / "stories260K.gguf").string();
  auto ids = [](const std::vector<std::string>& args) {
    std::vector<std::string> a = {"tokenize"};
    a.insert(a.end(), args.begin(), args.end());
    const auto r = run_sepal(a);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  for (const std::string text : {"Once upon a time", "Lily's dog ran\tfast.\nThe end", "12 345 caf\xC3\xA9 \xE4\xB8\xAD"}) {
    EXPECT_EQ(ids({"--model", folder, "--text", text}), ids({"--model", gguf, "--text", text})) << text;
  }
  EXPECT_EQ(ids({"--model", gguf, "--text", "Once upon a time"}), "1 403 407 261 378\n");
  EXPECT_EQ(ids({"--model", gguf, "--text", "Once upon a time", "--no-bos"}), "403 407 261 378\n");
  const json j = json::parse(ids({"--model", gguf, "--text", "Once", "--json"}));
  EXPECT_EQ(j["ids"], json::array({1, 403}));
  EXPECT_EQ(j["pieces"], json::array({"", " Once"}));  // each id's bytes: SentencePiece's space marker is a space
  // --file takes the bytes as they are: a final newline is a token.
  test::TempDir dir;
  test::write_file(dir / "t.txt", "Once upon a time\n");
  EXPECT_NE(ids({"--model", gguf, "--file", (dir / "t.txt").string()}), ids({"--model", gguf, "--text", "Once upon a time"}));
  auto error_of = [](const std::vector<std::string>& args) {
    std::vector<std::string> a = {"tokenize"};
    a.insert(a.end(), args.begin(), args.end());
    const auto r = run_sepal(a);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    return r.err;
  };
  EXPECT_NE(error_of({"--model", gguf}).find("give --text or --file"), std::string::npos);
  EXPECT_NE(error_of({"--model", gguf, "--text", "a", "--file", "x"}).find("give --text or --file"), std::string::npos);
  test::write_file(dir / "junk.gguf", "GGUF\x03\x00\x00\x00junk");
  EXPECT_NE(error_of({"--model", (dir / "junk.gguf").string(), "--text", "a"}).find("junk.gguf"), std::string::npos);
}

TEST(Generate, EmptyPromptStartsFromBos) {
  const json out = generate_json({"--model", (test::models_dir() / "stories260K").string(), "--max-new-tokens", "5"});
  EXPECT_EQ(out["prompt_ids"], json::array({1}));
  EXPECT_EQ(out["generated_ids"].size(), 5u);
}

// --chat writes the prompt as a user's message in the model's chat template: a folder whose
// tokenizer_config.json has one (a ChatML template, run, with the generation prompt asked for),
// and the plain form without; --system goes first.
TEST(Generate, ChatWritesThePromptInTheModelsTemplate) {
  const auto plain_model = (test::models_dir() / "tinystories-656K").string();
  json out = generate_json({"--model", plain_model, "--chat", "--prompt", "Hi", "--max-new-tokens", "2"});
  EXPECT_EQ(out["text"].get<std::string>().rfind("User: Hi\nAssistant:", 0), 0u) << out["text"];
  out = generate_json({"--model", plain_model, "--chat", "--system", "Be kind.", "--prompt", "Hi", "--max-new-tokens", "2"});
  EXPECT_EQ(out["text"].get<std::string>().rfind("Be kind.\n\nUser: Hi\nAssistant:", 0), 0u) << out["text"];
  const test::TempDir dir;
  for (const auto& f : std::filesystem::directory_iterator(test::models_dir() / "tinystories-656K")) {
    if (f.path().filename() != "tokenizer_config.json") std::filesystem::create_symlink(f.path(), dir / f.path().filename().string());
  }
  test::write_file(dir / "tokenizer_config.json",
                   R"({"chat_template": "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %})"
                   R"({% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"})");
  out = generate_json({"--model", dir.path().string(), "--chat", "--prompt", "Hi", "--max-new-tokens", "2"});
  const std::string chatml = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
  const auto r = run_sepal({"tokenize", "--model", dir.path().string(), "--text", chatml});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string ids;
  for (const auto& id : out["prompt_ids"]) {
    if (!ids.empty()) ids += ' ';
    ids += std::to_string(id.get<int>());
  }
  EXPECT_EQ(ids + "\n", r.out);
}

TEST(Generate, SamplingIsReproducibleBySeed) {
  auto run = [](const char* seed) {
    return generate_json({"--model", (test::models_dir() / "tinystories-656K").string(), "--prompt", "The dog",
                          "--max-new-tokens", "40", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95",
                          "--seed", seed})["generated_ids"];
  };
  EXPECT_EQ(run("11"), run("11"));
  EXPECT_NE(run("11"), run("12"));
}

TEST(Generate, Bf16HalvesWeightMemory) {
  const auto model = (test::models_dir() / "babyllama-tok105").string();
  const json f32 = generate_json({"--model", model, "--prompt", "Once", "--max-new-tokens", "20"});
  const json bf16 = generate_json({"--model", model, "--prompt", "Once", "--max-new-tokens", "20", "--dtype", "bf16"});
  const double ratio = bf16["stats"]["weight_bytes"].get<double>() / f32["stats"]["weight_bytes"].get<double>();
  EXPECT_GT(ratio, 0.49);
  EXPECT_LT(ratio, 0.52);
  EXPECT_EQ(bf16["generated_ids"].size(), 20u);
}

TEST(Generate, Int8TakesAQuarterOfTheWeightMemoryAndKeepsTheStory) {
  // babyllama's norms and scales are a larger share than in real-size models: 0.27 of f32 here,
  // 0.250 on the 1.1B shape (bench/run_decode.sh).
  const auto model = (test::models_dir() / "babyllama-tok105").string();
  const json f32 = generate_json({"--model", model, "--prompt", "Once", "--max-new-tokens", "40"});
  const json int8 = generate_json({"--model", model, "--prompt", "Once", "--max-new-tokens", "40", "--dtype", "int8"});
  const double ratio = int8["stats"]["weight_bytes"].get<double>() / f32["stats"]["weight_bytes"].get<double>();
  EXPECT_LT(ratio, 0.28);
  EXPECT_EQ(int8["stats"]["dtype"], "int8");
  EXPECT_EQ(int8["generated_ids"].size(), 40u);
}

TEST(Perplexity, ScoresATextAsJson) {
  const auto model = (test::models_dir() / "stories260K").string();
  const auto text = test::TempDir();
  test::write_file(text.path() / "t.txt", "Once upon a time, there was a little girl named Lily.\n\nShe liked to play.\n");
  const auto r = run_sepal({"perplexity", "--model", model, "--text", (text.path() / "t.txt").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_GT(j["tokens"].get<int>(), 10);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(j["nll"].get<double>()), 1e-9);
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  EXPECT_LT(j["perplexity"].get<double>(), 20.0);  // a story of the kind it was trained on
  EXPECT_EQ(j["stats"]["windows"], 1);
}

// A LongRoPE model's windows are its original context by default (its short factors), or what
// --context asks.
TEST(Perplexity, ALongRopeModelsWindowsAreItsOriginalContext) {
  const auto dir = test::TempDir();
  const auto model = (dir.path() / "phi3").string();
  auto r = run_sepal({"synth", "--arch", "phi3", "--hidden", "64", "--intermediate", "96", "--layers", "2", "--heads", "4",
                      "--kv-heads", "2", "--vocab", "300", "--max-positions", "256", "--out", model});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json config = json::parse(std::ifstream(dir.path() / "phi3" / "config.json"));
  config["original_max_position_embeddings"] = 64;
  config["rope_scaling"] = {{"type", "longrope"}, {"short_factor", std::vector<double>(8, 1.0)}, {"long_factor", std::vector<double>(8, 2.0)}};
  test::write_file(dir.path() / "phi3" / "config.json", config.dump());
  std::string words;
  for (int i = 0; i < 60; ++i) words += "once upon a time there was a cat ";
  test::write_file(dir.path() / "t.txt", words);
  const std::string text = (dir.path() / "t.txt").string();
  r = run_sepal({"perplexity", "--model", model, "--text", text, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["stats"]["context"], 64);
  r = run_sepal({"perplexity", "--model", model, "--text", text, "--json", "--context", "200"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["stats"]["context"], 200);
}

TEST(Generate, StreamsTextWithoutJson) {
  const auto r = run_sepal({"generate", "--model", (test::models_dir() / "stories260K").string(), "--prompt",
                            "Once upon a time", "--max-new-tokens", "30"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time, there was a little girl named Lily.", 0), 0u) << r.out;
}

TEST(Generate, APromptsFileGivesEachPromptWhatItGivesAlone) {
  const test::TempDir dir;
  const std::string model = (test::models_dir() / "stories260K").string();
  test::write_file(dir / "prompts.txt",
                   "Once upon a time\n"
                   "\n"
                   "{\"prompt\": \"The dog\", \"max_new_tokens\": 7, \"temperature\": 0.9, \"seed\": 4}\n"
                   "{\"prompt\": \"Lily\", \"top_k\": 5, \"temperature\": 1.0}\n"
                   "{\"prompt\": \"Sam\", \"presence_penalty\": 0.5, \"frequency_penalty\": 1.2, \"logit_bias\": {\"269\": -100, \"5\": 1}}\n");
  const auto r = run_sepal({"generate", "--model", model, "--prompts-file", (dir / "prompts.txt").string(),
                            "--max-new-tokens", "12", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<json> lines;
  std::istringstream out(r.out);
  for (std::string line; std::getline(out, line);) lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 4u);
  const std::vector<std::vector<std::string>> alone{
      {"--prompt", "Once upon a time", "--max-new-tokens", "12"},
      {"--prompt", "The dog", "--max-new-tokens", "7", "--temperature", "0.9", "--seed", "4"},
      {"--prompt", "Lily", "--max-new-tokens", "12", "--top-k", "5", "--temperature", "1.0"},
      {"--prompt", "Sam", "--max-new-tokens", "12", "--presence-penalty", "0.5", "--frequency-penalty", "1.2",
       "--logit-bias", "269=-100", "--logit-bias", "5=1"}};
  for (std::size_t i = 0; i < alone.size(); ++i) {
    std::vector<std::string> args{"--model", model};
    args.insert(args.end(), alone[i].begin(), alone[i].end());
    EXPECT_EQ(lines[i]["index"], i);
    EXPECT_EQ(lines[i]["generated_ids"], generate_json(args)["generated_ids"]) << "prompt " << i;
  }
  EXPECT_EQ(lines[1]["generated_ids"].size(), 7u);
  // The adjustments change the text: token 269, "Sam"'s first greedy token, never comes.
  EXPECT_EQ(generate_json({"--model", model, "--prompt", "Sam", "--max-new-tokens", "12"})["generated_ids"][0], 269);
  for (const auto& id : lines[3]["generated_ids"]) EXPECT_NE(id, 269);
  // Without --json: the texts, in order, one after another.
  const auto text = run_sepal({"generate", "--model", model, "--prompts-file", (dir / "prompts.txt").string(),
                               "--max-new-tokens", "12"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out.rfind("Once upon a time", 0), 0u) << text.out;
  EXPECT_NE(text.out.find("The dog"), std::string::npos);
}

// ---- bad input: a non-zero exit and one line on stderr naming the problem ----

void expect_failure(const std::vector<std::string>& args, const std::string& needle) {
  const auto r = run_sepal(args);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128) << "killed by a signal: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

class BadModel : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& f : std::filesystem::directory_iterator(test::models_dir() / "stories260K")) {
      if (f.is_regular_file()) std::filesystem::copy_file(f.path(), dir_ / f.path().filename().string());
    }
  }
  std::vector<std::string> args() const {
    return {"generate", "--model", dir_.path().string(), "--max-new-tokens", "4"};
  }
  void edit_config(const std::string& key, const json& value) {
    json c = json::parse(test::read_file(dir_ / "config.json"));
    c[key] = value;
    test::write_file(dir_ / "config.json", c.dump());
  }
  test::TempDir dir_;
};

TEST_F(BadModel, MissingFolderAndFiles) {
  expect_failure({"generate", "--model", "/nonexistent/model"}, "model folder /nonexistent/model does not exist");
  std::filesystem::remove(dir_ / "config.json");
  expect_failure(args(), "config.json: no such file");
}

TEST_F(BadModel, MissingWeightsOrTokenizer) {
  std::filesystem::remove(dir_ / "tokenizer.model");
  expect_failure(args(), "no tokenizer");
  std::filesystem::copy_file(test::models_dir() / "stories260K" / "tokenizer.model", dir_ / "tokenizer.model");
  std::filesystem::remove(dir_ / "model.safetensors");
  expect_failure(args(), "expected model.safetensors");
}

TEST_F(BadModel, TruncatedOrCorruptSafetensors) {
  const std::string bytes = test::read_file(dir_ / "model.safetensors");
  test::write_file(dir_ / "model.safetensors", bytes.substr(0, bytes.size() - 1000));
  expect_failure(args(), "truncated");
  std::string corrupt = bytes;
  corrupt[8] = '[';
  corrupt[9] = '}';
  test::write_file(dir_ / "model.safetensors", corrupt);
  expect_failure(args(), "not valid JSON");
  test::write_file(dir_ / "model.safetensors", "tiny");
  expect_failure(args(), "not a safetensors file");
}

TEST_F(BadModel, ConfigThatDisagreesWithTheWeights) {
  edit_config("intermediate_size", 128);
  expect_failure(args(), "has shape [172, 64] but the model's configuration implies [128, 64]");
}

TEST_F(BadModel, UnsupportedArchitecture) {
  edit_config("architectures", json::array({"GPTNeoXForCausalLM"}));
  expect_failure(args(), "unsupported architecture 'GPTNeoXForCausalLM'");
}

TEST_F(BadModel, PromptPastMaxPositions) {
  edit_config("max_position_embeddings", 8);
  expect_failure({"generate", "--model", dir_.path().string(), "--prompt", "Once upon a time there was a big dog"},
                 "more than the model's max_position_embeddings (8)");
}

TEST(Flags, InvalidValuesAreNamed) {
  const auto model = (test::models_dir() / "stories260K").string();
  expect_failure({"generate", "--model", model, "--temperature", "-1"}, "--temperature");
  expect_failure({"generate", "--model", model, "--temperature", "nan"}, "--temperature");
  expect_failure({"generate", "--model", model, "--top-p", "0"}, "--top-p");
  expect_failure({"generate", "--model", model, "--top-p", "1.5"}, "--top-p");
  expect_failure({"generate", "--model", model, "--top-k", "-2"}, "--top-k");
  expect_failure({"generate", "--model", model, "--presence-penalty", "2.5"}, "--presence-penalty must be in [-2, 2]");
  expect_failure({"generate", "--model", model, "--frequency-penalty", "nan"}, "--frequency-penalty must be in [-2, 2]");
  expect_failure({"generate", "--model", model, "--logit-bias", "13"}, "--logit-bias takes TOKEN_ID=BIAS");
  expect_failure({"generate", "--model", model, "--logit-bias", "13=-101"}, "--logit-bias: biases are in [-100, 100]");
  expect_failure({"generate", "--model", model, "--logit-bias", "13=1", "--logit-bias", "13=2"}, "token 13 is given twice");
  expect_failure({"generate", "--model", model, "--logit-bias", "512=1"}, "--logit-bias names token 512, outside the vocabulary of 512");
  expect_failure({"generate", "--model", model, "--max-new-tokens", "-3"}, "--max-new-tokens");
  expect_failure({"generate", "--model", model, "--max-new-tokens", "lots"}, "max-new-tokens");
  expect_failure({"generate", "--model", model, "--max-new-tokens", "99999999999"},
                 "--max-new-tokens must be between 0 and 2147483648");
  expect_failure({"generate", "--model", model, "--threads", "-1"}, "--threads must be between 0 (every CPU) and 1024, got -1");
  expect_failure({"generate", "--model", model, "--threads", "100000"}, "--threads must be between 0 (every CPU) and 1024");
  expect_failure({"perplexity", "--model", model, "--text", "/dev/null", "--threads", "5000"}, "--threads must be between");
  expect_failure({"tune", "--model", model, "--data", "/dev/null", "--out", "/tmp/x.h5", "--threads", "5000"}, "--threads must be between");
  expect_failure({"serve", "--model", model, "--spawned", "--threads", "5000"}, "--threads must be between");
  expect_failure({"serve-api", "--model", model, "--threads", "5000"}, "--threads must be between");
  expect_failure({"generate", "--model", model, "--dtype", "int4"}, "--dtype must be f32, bf16 or int8, got 'int4'");
  expect_failure({"generate", "--model", model, "--kv-dtype", "int8"}, "--kv-dtype must be f32 or bf16, got 'int8'");
  expect_failure({"serve", "--model", model, "--spawned", "--kv-dtype", "f16"}, "--kv-dtype must be f32 or bf16, got 'f16'");
  expect_failure({"generate", "--model", model, "--kv-dtype", "bf16", "--device", "cuda"},
                 "--kv-dtype bf16 is for blocks on the CPU; caches on cuda:0 are f32");
  expect_failure({"tune", "--model", model, "--kv-dtype", "bf16"}, "unrecognised option '--kv-dtype'");
  const test::TempDir dir;
  const auto prompts = [&](const std::string& name, const std::string& text) {
    test::write_file(dir / name, text);
    return (dir / name).string();
  };
  expect_failure({"generate", "--model", model, "--prompts-file", "/nonexistent/prompts"}, "cannot read the prompts file");
  expect_failure({"generate", "--model", model, "--prompts-file", prompts("empty", "\n \n")}, "holds no prompt");
  expect_failure({"generate", "--model", model, "--prompts-file", prompts("field", "{\"prompt\": \"x\", \"temp\": 1}\n")},
                 "field:1: unknown field \"temp\"");
  expect_failure({"generate", "--model", model, "--prompts-file", prompts("range", "ok\n{\"prompt\": \"x\", \"top_p\": 2}\n")},
                 "range:2: top_p must be in (0, 1]");
  expect_failure({"generate", "--model", model, "--prompts-file", prompts("bias", "{\"prompt\": \"x\", \"logit_bias\": {\"a\": 1}}\n")},
                 "bias:1: logit_bias keys must be token ids, not 'a'");
  expect_failure({"generate", "--model", model, "--prompts-file", prompts("type", "{\"prompt\": 3}\n")},
                 "\"prompt\" must be a string");
  expect_failure({"generate", "--model", model, "--prompts-file", prompts("json", "{\"prompt\": \"x\"\n")}, "not a JSON object");
  expect_failure({"generate", "--model", model, "--prompts-file", prompts("utf8", "caf\xc3\n")}, "not valid UTF-8");
  expect_failure({"generate", "--model", model, "--prompts-file", prompts("both", "x\n"), "--prompt", "y"},
                 "give --prompt or --prompts-file, not both");
  expect_failure({"generate", "--model", model, "--concurrency", "2"}, "--concurrency is for --prompts-file");
  expect_failure({"generate", "--model", model, "--dtype", "int8", "--outlier-threshold", "-1"}, "--outlier-threshold");
  expect_failure({"generate", "--model", model, "--dtype", "int8", "--outlier-threshold", "nan"}, "--outlier-threshold");
  expect_failure({"generate", "--model", model, "--dtype", "int8", "--mmap-weights"}, "--mmap-weights cannot be used");
  expect_failure({"serve", "--model", model, "--spawned", "--dtype", "f16"}, "--dtype must be f32, bf16 or int8");
  expect_failure({"serve", "--model", model, "--spawned", "--client-sessions", "0"}, "--client-sessions must be above 0");
  expect_failure({"serve", "--model", model, "--spawned", "--client-cache-mb", "4096"}, "--client-cache-mb must be between");
  expect_failure({"serve", "--model", model, "--spawned", "--max-step-tokens", "-1"}, "--max-step-tokens must be above 0");
  expect_failure({"perplexity", "--model", model}, "text");
  expect_failure({"perplexity", "--model", model, "--text", "/nonexistent/held-out.txt"}, "cannot read the text file");
  expect_failure({"perplexity", "--model", model, "--text", "/dev/null", "--context", "1"}, "--context must be between 2");
  expect_failure({"perplexity", "--model", model, "--text", "/dev/null"}, "fewer than 2 tokens");
  expect_failure({"synth", "--out", "/tmp/x", "--dtype", "int8"}, "--dtype must be f32, f16 or bf16");
  expect_failure({"quantize", "--model", model, "--out", model}, "already holds a model");
  expect_failure({"synth", "--out", "/tmp/x", "--outlier-dims", "-1"}, "--outlier-dims");
  expect_failure({"generate", "--model", model, "--frobnicate"}, "frobnicate");
  expect_failure({"generate"}, "model");
  expect_failure({"unknown-command"}, "unknown command");
  expect_failure({"synth", "--out", "/tmp/x", "--preset", "gpt-5"}, "unknown --preset 'gpt-5'");
  expect_failure({"synth", "--out", "/tmp/x", "--hidden", "100", "--heads", "3"}, "multiple of --heads");
  expect_failure({"synth", "--out", "/tmp/x", "--vocab", "100"}, "--vocab must be at least 259");
  // Swarm flags in a single process would do nothing: they are refused.
  expect_failure({"generate", "--model", model, "--mode", "bogus"}, "--mode applies to a swarm");
  expect_failure({"generate", "--model", model, "--replicas", "2"}, "--replicas applies to a swarm");
  expect_failure({"perplexity", "--model", model, "--text", "/dev/null", "--wan", "rtt_ms=5"}, "--wan applies to a swarm");
  expect_failure({"generate", "--model", model, "--no-wire-compression"}, "--no-wire-compression applies to a swarm");
  expect_failure({"generate", "--model", model, "--no-link-authentication"}, "--no-link-authentication applies to a swarm");
  expect_failure({"generate", "--model", model, "--hosts", "2", "--transport", "mpi", "--no-link-authentication"},
                 "--no-link-authentication is for --transport ucx");
  expect_failure({"generate", "--model", model, "--hosts", "2", "--route-timeout", "0"}, "--route-timeout");
  expect_failure({"generate", "--model", model, "--hosts", "2", "--move-timeout", "0"},
                 "--move-timeout must be a number of seconds from 0.1 to 86400");
  expect_failure({"generate", "--model", model, "--hosts", "2", "--move-timeout", "nan"}, "--move-timeout");
  expect_failure({"generate", "--model", model, "--move-timeout", "30"}, "--move-timeout applies to a swarm");
  expect_failure({"generate", "--model", model, "--hosts", "2", "--mode", "bogus"}, "--mode must be push or relay");
  expect_failure({"status", "--join", "/nonexistent/port"}, "needs the swarm's secret");
}

// Joining a swarm that is not there within --join-timeout: exit status 75 (EX_TEMPFAIL), which the
// slurm/ scripts answer with a new try; a port file that holds no join address is an error for good.
TEST(Flags, AJoinThatTimesOutExitsWithStatus75) {
  const test::TempDir dir;
  test::write_file(dir / "secret", std::string(48, 'k'));
  const auto model = (test::models_dir() / "stories260K").string();
  const std::string port = (dir / "no-swarm.port").string(), secret = (dir / "secret").string();
  for (const auto& args : {std::vector<std::string>{"status", "--join", port, "--secret-file", secret, "--join-timeout", "0.5"},
                           std::vector<std::string>{"serve", "--model", model, "--join", port, "--secret-file", secret,
                                                    "--join-timeout", "0.5"}}) {
    const auto r = run_sepal(args);
    EXPECT_EQ(r.exit_code, 75) << r.err;
    EXPECT_NE(r.err.find("no swarm address in " + port + " after 500 ms (exit status 75: a new try may succeed)"),
              std::string::npos) << r.err;
  }
  for (const char* bad : {"not a port\n", "garbage\n", "tcp://127.0.0.1:70000\n", "tcp://:5000\n", "tcp://host name:5\n"}) {
    test::write_file(dir / "bad.port", bad);
    expect_failure({"status", "--join", (dir / "bad.port").string(), "--secret-file", secret},
                   (dir / "bad.port").string() + " does not hold a swarm's join address (tcp://HOST:PORT on its first line)");
  }
  // The port file of a swarm that has ended: nothing listens there. A new try may find a new file.
  test::write_file(dir / "stale.port", "tcp://127.0.0.1:1\n");
  const auto stale = run_sepal({"status", "--join", (dir / "stale.port").string(), "--secret-file", secret});
  EXPECT_EQ(stale.exit_code, 75) << stale.err;
  EXPECT_NE(stale.err.find("cannot connect to 127.0.0.1:1: Connection refused (nothing listens there: has the swarm ended?)"),
            std::string::npos) << stale.err;
  expect_failure({"status", "--join", port, "--secret-file", secret, "--join-timeout", "0"}, "--join-timeout must be above 0");
  expect_failure({"serve", "--model", model, "--join", port, "--join-timeout", "nan"}, "--join-timeout must be above 0");
  for (const char* bad : {"0.1", "nan", "7200", "-1"}) {
    expect_failure({"serve", "--model", model, "--join", port, "--failure-timeout", bad},
                   "--failure-timeout must be a number of seconds from 0.5 to 3600");
    expect_failure({"generate", "--model", model, "--hosts", "2", "--failure-timeout", bad},
                   "--failure-timeout must be a number of seconds from 0.5 to 3600");
  }
  expect_failure({"generate", "--model", model, "--failure-timeout", "3"}, "--failure-timeout applies to a swarm");
  expect_failure({"generate", "--model", model, "--system", "Be kind."}, "--system is for --chat");
  // --listen-host: only with --listen, and only what can stand in an address.
  expect_failure({"generate", "--model", model, "--hosts", "2", "--listen-host", "node1"},
                 "--listen-host is for --listen (the address written in its file)");
  for (const char* bad : {"my node", "node:7", "[node1]", "a/b"}) {
    expect_failure({"generate", "--model", model, "--hosts", "2", "--listen", port, "--listen-host", bad},
                   std::string("--listen-host: '") + bad + "' is not");
  }
  expect_failure({"generate", "--model", model, "--listen", port, "--listen-host", "node1"}, "--listen applies to a swarm");
}

// --device: listed, checked, and on a machine without a usable GPU (or a build without CUDA) a
// GPU asked for fails in one line before anything loads. Where a GPU is, gpu_cli_test runs it.
TEST(Flags, DeviceIsListedCheckedAndAMissingGpuIsSaidInOneLine) {
  const auto model = (test::models_dir() / "stories260K").string();
  for (const char* command : {"generate", "perplexity", "serve-api", "tune"}) {
    const auto help = run_sepal({command, "--help"});
    EXPECT_NE(help.out.find("--device"), std::string::npos) << command;
  }

  expect_failure({"generate", "--model", model, "--device", "gpu"}, "unknown device \"gpu\": expected cpu, cuda or cuda:N");
  const auto r = run_sepal({"generate", "--model", model, "--device", "cuda:0", "--max-new-tokens", "4"});
  if (r.exit_code == 0) GTEST_SKIP() << "a GPU is usable here";
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(r.err.find("--device cuda:0: no usable CUDA GPU here") != std::string::npos ||
              r.err.find("--device cuda:0: this sepal was built without CUDA") != std::string::npos)
      << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(Ping, InprocRowsAsJson) {
  const auto r = run_sepal({"ping", "--transport", "inproc", "--sizes", "8", "65536", "--iterations", "20", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rows = json::parse(r.out);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["transport"], "inproc");
  EXPECT_EQ(rows[0]["bytes"], 8);
  EXPECT_EQ(rows[1]["bytes"], 65536);
  for (const auto& row : rows) {
    EXPECT_GT(row["rtt_us"].get<double>(), 0.0);
    EXPECT_GT(row["bandwidth_gbps"].get<double>(), 0.0);
  }
}

TEST(Ping, WanConfigFileSetsTheLink) {
  test::TempDir dir;
  test::write_file(dir / "wan.ini", "[wan]\nrtt_ms = 20\n[other]\nignored = 1\n");
  const auto r = run_sepal({"ping", "--transport", "inproc", "--config", (dir / "wan.ini").string(), "--sizes", "8",
                            "--iterations", "5", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(json::parse(r.out)[0]["rtt_us"].get<double>(), 20000.0);  // at least the configured round trip
}

TEST(Ping, BadSettingsAreNamed) {
  expect_failure({"ping", "--transport", "carrier-pigeon"}, "--transport must be inproc, mpi or ucx");
  expect_failure({"ping", "--transport", "inproc", "--wan", "latency=3"}, "unknown WAN setting 'latency'");
  expect_failure({"ping", "--transport", "inproc", "--wan", "rtt_ms=-1"}, "rtt_ms");
  expect_failure({"ping", "--transport", "inproc", "--config", "/nonexistent.ini"}, "cannot read config file");
  expect_failure({"ping", "--transport", "inproc", "--sizes", "0"}, "--sizes");
  expect_failure({"ping", "--transport", "inproc", "--no-link-authentication"}, "--no-link-authentication is for --transport ucx");
  // Boost's INI reader loops forever on an error line holding '%': refused before it runs.
  const test::TempDir dir;
  std::ofstream(dir / "bad.ini") << "[wan]%x%\nrtt_ms = 5\n";
  expect_failure({"ping", "--transport", "inproc", "--config", (dir / "bad.ini").string()}, "'%' is not allowed");
}

TEST(Synth, WritesAModelThatGenerates) {
  test::TempDir dir;
  const auto r = run_sepal({"synth", "--out", dir.path().string(), "--hidden", "96", "--intermediate", "200",
                            "--layers", "2", "--heads", "6", "--kv-heads", "2", "--vocab", "300", "--dtype", "bf16"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json out = generate_json({"--model", dir.path().string(), "--prompt", "hello", "--max-new-tokens", "8"});
  EXPECT_EQ(out["generated_ids"].size(), 8u);
  EXPECT_EQ(out["prompt_ids"].size(), 9u);  // BOS, then "▁hello" as 8 byte-fallback tokens
}

}  // namespace
}  // namespace sepal
