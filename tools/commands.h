#pragma once
// The subcommands of the `sepal` tool. Each parses its own arguments (argv[0] is the subcommand
// name) and returns the process exit status; errors are reported by main().

#include <string>

namespace sepal::tools {

/// `sepal generate`: text generation with a model in this process.
int generate_command(int argc, char** argv);
/// `sepal perplexity`: how well a model predicts a text, locally or across a swarm.
int perplexity_command(int argc, char** argv);
/// `sepal tune`: prompt tuning (ptune, deep-ptune) with HDF5 checkpoints.
int tune_command(int argc, char** argv);
/// `sepal quantize`: writes an int8 copy of a checkpoint.
int quantize_command(int argc, char** argv);
/// `sepal synth`: writes a synthetic checkpoint.
int synth_command(int argc, char** argv);
/// `sepal ping`: transport latency and bandwidth between two ranks.
int ping_command(int argc, char** argv);
/// sepal serve: a block host joining a swarm (or started by sepal generate --hosts).
int serve_command(int argc, char** argv);
/// sepal serve-api: the OpenAI-compatible HTTP API.
int serve_api_command(int argc, char** argv);
/// sepal status: print a running swarm's block map.
int status_command(int argc, char** argv);
/// sepal tokenize: the ids a model's tokenizer gives for a text.
int tokenize_command(int argc, char** argv);

/// Thrown for invalid command-line usage; main() prints it with the usage hint and exits 2.
struct UsageError {
  std::string message;
};

}  // namespace sepal::tools
