#pragma once
// The OpenAI-compatible HTTP API of `sepal serve-api`: GET /v1/models, POST /v1/completions and
// /v1/chat/completions (streamed as server-sent events with "stream": true), in front of a served
// model (choice_runner.h). Not an actor: each request runs on one of the HTTP server's worker
// threads, and its sessions go through the client driver's blocking facade.
//
// Admission: up to max_running generations at once, up to max_waiting more wait for a turn, the
// rest get 429. Bodies over max_body_bytes get 413. With API keys, every /v1/ request needs
// "Authorization: Bearer KEY" (401 otherwise). Every error is OpenAI's JSON error shape, and no
// request, however malformed, stops the server. A client that disconnects mid-stream ends its
// generation, which frees its session.
//
// Thread-safety: start() and stop() from one thread; the handlers run on the server's threads.

#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "actors/api/choice_runner.h"
#include "actors/api/openai_request.h"
#include "runtime/status.h"

namespace sepal::api {

struct ApiServerOptions {
  std::string bind = "127.0.0.1";
  int port = 8000;  ///< 0: any free port (port() says which)
  std::set<std::string> api_keys;  ///< empty: no authentication
  std::int64_t max_body_bytes = 1 << 20;
  std::int64_t max_running = 16;
  std::int64_t max_waiting = 64;
  RequestLimits limits;
  /// Where the chat template teaches thinking, chat replies give it as `reasoning_content` apart
  /// from `content` (actors/api/reasoning.h); false: the whole reply is content.
  bool split_reasoning = true;
};

/// Counters of the API, for logs and the status page.
struct ApiCounters {
  std::atomic<std::int64_t> requests{0}, errors{0}, running{0}, waiting{0}, rejected{0};
  std::atomic<std::int64_t> prompt_tokens{0}, completion_tokens{0}, disconnects{0};
};

class ApiServer {
 public:
  ApiServer(ServedModel model, ApiServerOptions options);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  /// Binds and starts serving on a thread of its own; an error (kUnavailable) when the address
  /// cannot be bound.
  Status start();
  /// The bound port (after start).
  int port() const { return port_; }
  /// Stops accepting, ends the server thread (requests under way finish first).
  void stop();
  const ApiCounters& counters() const { return *counters_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::shared_ptr<ApiCounters> counters_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace sepal::api
