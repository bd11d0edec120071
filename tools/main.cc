// The `sepal` command: one binary, one subcommand per job.
#include <boost/program_options/errors.hpp>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "kernels/error.h"
#include "runtime/process_exit.h"
#include "tools/commands.h"

namespace {

constexpr const char* kUsage =
    "usage: sepal <command> [options]\n"
    "\n"
    "commands:\n"
    "  generate   generate text with a model (sepal generate --help)\n"
    "  perplexity how well a model predicts a text (sepal perplexity --help)\n"
    "  tune       train a soft prompt or deep prompts for a frozen model (sepal tune --help)\n"
    "  quantize   write an int8 (LLM.int8()) copy of a checkpoint (sepal quantize --help)\n"
    "  synth      write a synthetic checkpoint for benchmarks (sepal synth --help)\n"
    "  serve      serve blocks of a model in a swarm (sepal serve --help)\n"
    "  serve-api  an OpenAI-compatible HTTP API for a model or a swarm (sepal serve-api --help)\n"
    "  status     print a running swarm's block map (sepal status --help)\n"
    "  tokenize   the token ids a model's tokenizer gives for a text (sepal tokenize --help)\n"
    "  ping       transport round trip and bandwidth between two ranks (sepal ping --help)\n";

}  // namespace

static int run(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  try {
    if (command == "generate") return sepal::tools::generate_command(argc - 1, argv + 1);
    if (command == "perplexity") return sepal::tools::perplexity_command(argc - 1, argv + 1);
    if (command == "tune") return sepal::tools::tune_command(argc - 1, argv + 1);
    if (command == "quantize") return sepal::tools::quantize_command(argc - 1, argv + 1);
    if (command == "synth") return sepal::tools::synth_command(argc - 1, argv + 1);
    if (command == "ping") return sepal::tools::ping_command(argc - 1, argv + 1);
    if (command == "serve") return sepal::tools::serve_command(argc - 1, argv + 1);
    if (command == "serve-api") return sepal::tools::serve_api_command(argc - 1, argv + 1);
    if (command == "status") return sepal::tools::status_command(argc - 1, argv + 1);
    if (command == "tokenize") return sepal::tools::tokenize_command(argc - 1, argv + 1);
    std::fprintf(stderr, "sepal: error: unknown command '%s' (commands: generate, perplexity, tune, quantize, serve, serve-api, status, synth, ping, tokenize)\n",
                 command.c_str());
    return 2;
  } catch (const sepal::tools::UsageError& e) {
    std::fprintf(stderr, "sepal %s: error: %s (see sepal %s --help)\n", command.c_str(),
                 e.message.c_str(), command.c_str());
    return 2;
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "sepal %s: error: %s (see sepal %s --help)\n", command.c_str(), e.what(),
                 command.c_str());
    return 2;
  } catch (const sepal::Error& e) {
    std::fprintf(stderr, "sepal %s: error: %s\n", command.c_str(), e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "sepal %s: error: out of memory\n", command.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sepal %s: error: %s\n", command.c_str(), e.what());
    return 1;
  }
}

int main(int argc, char** argv) {
  const int code = run(argc, argv);
  // MPI_Finalize may be cut short at exit (a dead peer makes it wait): the code must survive it.
  sepal::set_process_exit_code(code);
  return code;
}
