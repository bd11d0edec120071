#include "actors/api/api_server.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <set>

#include "actors/api/harmony.h"
#include "actors/api/json_mode.h"
#include "actors/api/reasoning.h"
#include "actors/api/status_page.h"
#include "actors/api/structured_output.h"
#include "kernels/error.h"
#include "runtime/log.h"

namespace sepal::api {

using nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Turns of the generations: up to `running` at once, up to `waiting` more queue for one.
class Admission {
 public:
  Admission(std::int64_t running, std::int64_t waiting, std::shared_ptr<ApiCounters> counters)
      : running_(running), waiting_(waiting), counters_(std::move(counters)) {}

  // A turn (released when the last copy goes), or null when the queue is full.
  std::shared_ptr<void> enter() {
    std::unique_lock lock(mutex_);
    if (in_turn_ >= running_ && queued_ >= waiting_) return nullptr;
    ++queued_;
    ++counters_->waiting;
    wake_.wait(lock, [&] { return in_turn_ < running_; });
    --queued_;
    --counters_->waiting;
    ++in_turn_;
    ++counters_->running;
    return std::shared_ptr<void>(this, [this](void*) {
      std::lock_guard lock(mutex_);
      --in_turn_;
      --counters_->running;
      wake_.notify_one();
    });
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::int64_t running_, waiting_, in_turn_ = 0, queued_ = 0;
  std::shared_ptr<ApiCounters> counters_;
};

json completion_logprobs(const ServedModel& m, const std::vector<TokenLogprob>& tokens, std::size_t text_start) {
  json out{{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
           {"text_offset", json::array()}};
  std::size_t offset = text_start;
  for (const TokenLogprob& t : tokens) {
    const std::string& text = m.tokenizer->token_bytes(t.id);
    out["tokens"].push_back(text);
    out["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const auto& [id, lp] : t.top) top[m.tokenizer->token_bytes(id)] = lp;
    out["top_logprobs"].push_back(top);
    out["text_offset"].push_back(offset);
    offset += text.size();
  }
  return out;
}

json chat_token(const ServedModel& m, std::int32_t id, double logprob) {
  const std::string& text = m.tokenizer->token_bytes(id);
  json bytes = json::array();
  for (const unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return json{{"token", text}, {"logprob", logprob}, {"bytes", bytes}};
}

json chat_logprobs(const ServedModel& m, const std::vector<TokenLogprob>& tokens) {
  json content = json::array();
  for (const TokenLogprob& t : tokens) {
    json entry = chat_token(m, t.id, t.logprob);
    entry["top_logprobs"] = json::array();
    for (const auto& [id, lp] : t.top) entry["top_logprobs"].push_back(chat_token(m, id, lp));
    content.push_back(entry);
  }
  return json{{"content", content}, {"refusal", nullptr}};
}

// The names of the functions a request offers.
std::set<std::string> tool_names(const CompletionRequest& r) {
  std::set<std::string> names;
  if (r.tools.is_array()) {
    for (const auto& t : r.tools) names.insert(t["function"]["name"].get<std::string>());
  }
  return names;
}

}  // namespace

struct ApiServer::Impl {
  ServedModel model;
  ApiServerOptions options;
  std::shared_ptr<ApiCounters> counters;
  Admission admission;
  httplib::Server http;
  std::atomic<std::uint64_t> next_id{1};
  std::int64_t created = unix_seconds();

  Impl(ServedModel m, ApiServerOptions o, std::shared_ptr<ApiCounters> c)
      : model(std::move(m)),
        options(std::move(o)),
        counters(c),
        admission(model.one_at_a_time ? 1 : options.max_running, options.max_waiting, c) {}

  void reply_error(httplib::Response& res, const ApiError& e) {
    ++counters->errors;
    res.status = e.http_status;
    res.set_content(dump(error_body(e)), "application/json");
  }

  // The base model's id, or a tuned variant's (with its base as root).
  json model_json(const ServedAdapter* adapter) const {
    json m{{"id", adapter ? adapter->name : model.name}, {"object", "model"}, {"created", created}, {"owned_by", "sepal"}};
    if (adapter) m["root"] = model.name;
    return m;
  }
  json models_json() const {
    json data = json::array({model_json(nullptr)});
    for (const ServedAdapter& a : model.adapters) data.push_back(model_json(&a));
    return json{{"object", "list"}, {"data", data}};
  }
  // The variant a request names: null for the base model; false when no such model is served.
  bool find_variant(const std::string& name, const ServedAdapter** adapter) const {
    *adapter = nullptr;
    if (name == model.name) return true;
    for (const ServedAdapter& a : model.adapters) {
      if (a.name == name) {
        *adapter = &a;
        return true;
      }
    }
    return false;
  }
  ApiError unknown_model(const std::string& name) const {
    std::string served = "'" + model.name + "'";
    for (const ServedAdapter& a : model.adapters) served += ", '" + a.name + "'";
    return ApiError{404, "invalid_request_error", "The model '" + name + "' does not exist; this server serves " + served,
                    "model", "model_not_found"};
  }

  // One prompt of the request, as ids.
  struct Prompt {
    std::vector<std::int32_t> ids;
    std::size_t text_bytes = 0;  // of the prompt's text (the completions' text_offset starts there)
    bool thinking_open = false;  // chat: the prompt leaves the reply inside <think>
  };

  // Whether a chat reply's reasoning is split from its content: the template teaches thinking and
  // no grammar makes the reply something else from its first token.
  bool splits_reasoning(const CompletionRequest& r) const {
    return r.chat && options.split_reasoning && model.chat_template.thinks && !r.json_object && !r.structure;
  }

  // Whether chat replies are read as harmony messages (GPT-OSS): its template writes them, unless
  // --reasoning-format none leaves replies as written.
  bool reads_harmony() const { return model.chat_template.harmony && options.split_reasoning; }
  // The format a chat reply's calls are read in: none without tools, or where a harmony reply is
  // left as written.
  ToolCallFormat reply_format(const CompletionRequest& r) const {
    if (r.tools.is_null() || (model.chat_template.harmony && !options.split_reasoning)) return ToolCallFormat::kNone;
    return model.chat_template.tool_format;
  }

  // The request's prompts, checked against the model; an error as OpenAI words it.
  std::optional<ApiError> prompts_of(const CompletionRequest& r, const ServedAdapter* adapter, std::vector<Prompt>& out) {
    const std::int64_t vocab = model.config->vocab_size;
    if ((r.json_object || r.structure) && model.config->eos_token_ids.empty()) {
      return invalid("JSON mode needs a model with an EOS token to end the object with", "response_format");
    }
    if (r.json_object) {
      if (const char c = missing_json_token(*model.tokenizer)) {
        return invalid(std::string("JSON mode cannot run on this model: no token of its vocabulary writes '") + c + "'", "response_format");
      }
    }
    for (const auto& [id, bias] : r.logit_bias) {
      if (id >= vocab) return invalid("'logit_bias' names token " + std::to_string(id) + ", outside the vocabulary of " + std::to_string(vocab), "logit_bias");
    }
    try {
      if (r.chat) {
        if (!r.tools.is_null() && model.chat_template.tool_format == ToolCallFormat::kNone) {
          return invalid("this model's chat template (" + describe_chat_template(model.chat_template) +
                             ") does not offer tools in a form sepal reads calls from (Hermes <tool_call>, Llama 3 JSON, Mistral [TOOL_CALLS], Granite <|tool_call|>, harmony)",
                         "tools");
        }
        auto rendered = render_chat(model.chat_template, r.messages, model.config->bos_token_id >= 0, r.tools, r.template_kwargs);
        if (auto* error = std::get_if<jinja::TemplateError>(&rendered))
          return invalid("the model's chat template refused the messages: " + error->message, "messages");
        const std::string& text = std::get<std::string>(rendered);
        out.push_back(Prompt{prompt_ids_of(model, text), text.size(), prompt_opens_thinking(text)});
      }
      for (const std::string& p : r.prompts) out.push_back(Prompt{prompt_ids_of(model, p), p.size()});
      for (const auto& ids : r.prompt_ids) {
        for (const std::int32_t id : ids) {
          if (id >= vocab) return invalid("token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(vocab), "prompt");
        }
        out.push_back(Prompt{ids, model.tokenizer->decode(ids).size()});
      }
    } catch (const Error& e) {
      return invalid(std::string("the prompt cannot be tokenized: ") + e.what(), r.chat ? "messages" : "prompt");
    }
    const std::int64_t context = model.config->max_position_embeddings;
    for (const Prompt& p : out) {
      if (p.ids.empty()) return invalid("the prompt is empty and the model has no BOS token to start from", "prompt");
      const auto length = static_cast<std::int64_t>(p.ids.size());
      const std::int64_t wanted = length + extra_positions(adapter, *model.config) + r.max_tokens.value_or(1);
      if (wanted > context) {
        ApiError e = invalid("This model's maximum context length is " + std::to_string(context) +
                                 " tokens. However, you requested " + std::to_string(wanted) + " tokens (" +
                                 std::to_string(length) + " in the prompt, " + std::to_string(wanted - length) +
                                 " for the completion). Please reduce the prompt or the completion length.",
                             r.chat ? "messages" : "prompt");
        e.code = "context_length_exceeded";
        return e;
      }
    }
    return std::nullopt;
  }

  // The grammar the reply follows: tool_choice "required" or naming a function gives the calls'
  // in the model's format; response_format json_schema's came with the request. The model's
  // vocabulary must be able to begin it.
  std::optional<ApiError> structure_of(CompletionRequest& r) const {
    const bool forced = !r.tools.is_null() && (r.tool_required || !r.tool_forced.empty());
    const char* param = forced ? "tool_choice" : "response_format";
    if (forced) {
      if (model.config->eos_token_ids.empty()) return invalid("forcing calls needs a model with an EOS token to end them with", param);
      auto output = forced_calls_output(model.chat_template.tool_format, r.tools, r.tool_forced, r.parallel_tool_calls,
                                        call_markers(model, r));
      if (auto* why = std::get_if<std::string>(&output)) return invalid("the calls cannot be forced: " + *why, "tools");
      r.structure = std::get<std::shared_ptr<const StructuredOutput>>(output);
    }
    if (!r.structure) return std::nullopt;
    GrammarConstraint first(*r.structure, *model.vocab_trie, model.config->eos_token_ids);
    std::vector<char> allowed(static_cast<std::size_t>(model.config->vocab_size), 0);
    first.allowed(allowed);
    if (std::find(allowed.begin(), allowed.end(), 1) == allowed.end()) {
      return invalid(std::string("this model's vocabulary has no token to begin the ") +
                         (forced ? "calls" : "schema's JSON") + " with",
                     param);
    }
    return std::nullopt;
  }

  struct Tokens {
    std::int64_t prompt = 0, completion = 0;
  };
  // Runs every choice of a request, prompt by prompt and n of each: choice(prompt, index, seed
  // offset) returns its completion tokens. The tokens of the whole request, counted on success.
  template <typename Choice>
  Tokens each_choice(const CompletionRequest& r, const std::vector<Prompt>& prompts, Choice choice) {
    Tokens used;
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      used.prompt += static_cast<std::int64_t>(prompts[p].ids.size());
      for (std::int64_t i = 0; i < r.n; ++i) {
        used.completion += choice(prompts[p], static_cast<std::int64_t>(p) * r.n + i, static_cast<std::uint64_t>(i));
      }
    }
    counters->prompt_tokens += used.prompt;
    counters->completion_tokens += used.completion;
    return used;
  }

  json usage_json(std::int64_t prompt, std::int64_t completion) const {
    return json{{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
  }

  void completions(const httplib::Request& req, httplib::Response& res, bool chat) {
    ++counters->requests;
    auto parsed = parse_completion_request(req.body, chat, options.limits);
    if (auto* e = std::get_if<ApiError>(&parsed)) return reply_error(res, *e);
    CompletionRequest r = std::move(std::get<CompletionRequest>(parsed));
    const ServedAdapter* adapter = nullptr;
    if (!find_variant(r.model, &adapter)) return reply_error(res, unknown_model(r.model));
    auto prompts = std::make_shared<std::vector<Prompt>>();
    if (auto e = prompts_of(r, adapter, *prompts)) return reply_error(res, *e);
    if (auto e = structure_of(r)) return reply_error(res, *e);
    std::shared_ptr<void> turn = admission.enter();
    if (!turn) {
      ++counters->rejected;
      return reply_error(res, ApiError{429, "rate_limit_exceeded",
                                       "the server is at its limit of running and waiting requests; retry later", {},
                                       "rate_limit_exceeded"});
    }
    const std::uint64_t base_seed = r.seed ? *r.seed : std::random_device{}() * 0x100000001ull;
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
    const std::int64_t created_at = unix_seconds();
    json head{{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created_at},
              {"model", model.name}, {"system_fingerprint", "sepal"}};
    const std::int64_t extra = extra_positions(adapter, *model.config);
    const auto max_new = [config = model.config, extra, max_tokens = r.max_tokens](const Prompt& p) {
      return max_tokens.value_or(default_max_tokens(*config, static_cast<std::int64_t>(p.ids.size()) + extra));
    };
    if (!r.stream) {
      json choices = json::array();
      Tokens used;
      try {
        used = each_choice(r, *prompts, [&](const Prompt& prompt, std::int64_t index, std::uint64_t seed_offset) {
          const ChoiceResult c = run_choice(model, adapter, prompt.ids, r, max_new(prompt), base_seed + seed_offset, {});
          std::string finish_reason = c.finish_reason;
          json choice{{"index", index}};
          if (chat && reads_harmony()) {  // GPT-OSS: its messages' channels
            choice["message"] = harmony_message(read_harmony(c.text, tool_names(r)), r.parallel_tool_calls, finish_reason);
            choice["logprobs"] = r.logprobs ? chat_logprobs(model, c.tokens) : json(nullptr);
          } else if (chat) {
            const ReasoningSplit split = splits_reasoning(r) ? split_reasoning(c.text, prompt.thinking_open) : ReasoningSplit{{}, c.text};
            choice["message"] = assistant_message(reply_format(r),
                                                  split.content, tool_names(r), r.parallel_tool_calls, finish_reason);
            if (split.reasoning) {
              choice["message"]["reasoning_content"] = *split.reasoning;
              if (split.content.empty()) choice["message"]["content"] = nullptr;
            }
            choice["logprobs"] = r.logprobs ? chat_logprobs(model, c.tokens) : json(nullptr);
          } else {
            choice["text"] = c.text;
            choice["logprobs"] = r.logprobs ? completion_logprobs(model, c.tokens, prompt.text_bytes) : json(nullptr);
          }
          choice["finish_reason"] = finish_reason;
          choices.push_back(choice);
          return c.completion_tokens;
        });
      } catch (const std::exception& e) {
        return reply_error(res, ApiError{503, "server_error", std::string("generation failed: ") + e.what(), {}, {}});
      }
      head["choices"] = choices;
      head["usage"] = usage_json(used.prompt, used.completion);
      res.set_content(dump(head), "application/json");
      return;
    }
    // Streamed: server-sent events, one per piece of text; the turn is held until the stream ends.
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream", [this, r, adapter, prompts, head, turn, base_seed, chat, max_new](std::size_t, httplib::DataSink& sink) {
          const auto send = [&](const json& event) {
            const std::string line = "data: " + dump(event) + "\n\n";
            return sink.write(line.data(), line.size());
          };
          const auto chunk = [&](json choice) {
            json event = head;
            event["object"] = chat ? "chat.completion.chunk" : "text_completion";
            event["choices"] = json::array({std::move(choice)});
            if (r.include_usage) event["usage"] = nullptr;
            return event;
          };
          Tokens used;
          try {
            used = each_choice(r, *prompts, [&](const Prompt& prompt, std::int64_t index, std::uint64_t seed_offset) {
              std::size_t offset = prompt.text_bytes;
              ToolCallStream calls(reply_format(r));
              const bool split = splits_reasoning(r);
              ReasoningStream thinking(prompt.thinking_open);
              const bool harmony = chat && reads_harmony();
              HarmonyStream messages(tool_names(r));
              if (chat && !send(chunk({{"index", index}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                       {"logprobs", nullptr}, {"finish_reason", nullptr}}))) {
                throw ClientGone{};
              }
              const ChoiceResult c = run_choice(model, adapter, prompt.ids, r, max_new(prompt), base_seed + seed_offset,
                                                [&](const ChoiceDelta& d) {
                json choice{{"index", index}, {"finish_reason", nullptr}};
                if (chat) {
                  ReasoningStream::Piece piece;
                  if (harmony) {
                    HarmonyStream::Piece read = messages.push(d.text);
                    piece = {std::move(read.reasoning), std::move(read.content)};
                  } else {
                    piece = split ? thinking.push(d.text) : ReasoningStream::Piece{{}, d.text};
                  }
                  std::string shown = piece.content.empty() || harmony ? std::move(piece.content) : calls.push(piece.content);
                  // Held: it may be a call, or a tag.
                  if (shown.empty() && piece.reasoning.empty() && d.tokens.empty() && !d.text.empty()) return true;
                  choice["delta"] = json::object();
                  if (!piece.reasoning.empty()) choice["delta"]["reasoning_content"] = std::move(piece.reasoning);
                  if (!shown.empty() || piece.reasoning.empty()) choice["delta"]["content"] = std::move(shown);
                  choice["logprobs"] = r.logprobs ? chat_logprobs(model, d.tokens) : json(nullptr);
                } else {
                  choice["text"] = d.text;
                  choice["logprobs"] = r.logprobs ? completion_logprobs(model, d.tokens, offset) : json(nullptr);
                  for (const TokenLogprob& t : d.tokens) offset += model.tokenizer->token_bytes(t.id).size();
                }
                return send(chunk(choice));
              });
              std::string finish_reason = c.finish_reason;
              if (harmony) {  // what the messages held, then their calls
                const HarmonyStream::Piece rest = messages.finish();
                json delta = json::object();
                if (!rest.reasoning.empty()) delta["reasoning_content"] = rest.reasoning;
                if (!rest.content.empty()) delta["content"] = rest.content;
                if (!messages.calls().empty()) {
                  delta["tool_calls"] = tool_calls_json(messages.calls(), r.parallel_tool_calls, true);
                  finish_reason = "tool_calls";
                }
                if (!delta.empty() && !send(chunk({{"index", index}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}}))) {
                  throw ClientGone{};
                }
              }
              if (split && !harmony) {  // what the reasoning split held: a partial tag, or white space
                const ReasoningStream::Piece rest = thinking.finish();
                json delta = json::object();
                if (!rest.reasoning.empty()) delta["reasoning_content"] = rest.reasoning;
                const std::string shown = rest.content.empty() ? std::string() : calls.push(rest.content);
                if (!shown.empty()) delta["content"] = shown;
                if (!delta.empty() && !send(chunk({{"index", index}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}}))) {
                  throw ClientGone{};
                }
              }
              if (!calls.held().empty()) {  // the end of the reply, held as it may hold calls
                const json delta = held_delta(reply_format(r), calls.held(), tool_names(r),
                                              r.parallel_tool_calls, finish_reason);
                if (!send(chunk({{"index", index}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}}))) {
                  throw ClientGone{};
                }
              }
              json last{{"index", index}, {"finish_reason", finish_reason}, {"logprobs", nullptr}};
              if (chat) last["delta"] = json::object();
              else last["text"] = "";
              if (!send(chunk(last))) throw ClientGone{};
              return c.completion_tokens;
            });
            if (r.include_usage) {
              json event = head;
              event["object"] = chat ? "chat.completion.chunk" : "text_completion";
              event["choices"] = json::array();
              event["usage"] = usage_json(used.prompt, used.completion);
              if (!send(event)) throw ClientGone{};
            }
            const std::string done = "data: [DONE]\n\n";
            sink.write(done.data(), done.size());
            sink.done();
          } catch (const ClientGone&) {
            ++counters->disconnects;
            return false;  // the connection is closed; the session ended as the stack unwound
          } catch (const std::exception& e) {
            ++counters->errors;
            (void)send(error_body(ApiError{503, "server_error", std::string("generation failed: ") + e.what(), {}, {}}));
            sink.done();
          }
          return true;
        });
  }

  json status_json() {
    const ApiCounters& c = *counters;
    json st{{"model", model.name},
            {"mode", model.swarm_status ? "swarm" : "local"},
            {"uptime_s", unix_seconds() - created},
            {"api",
             {{"requests", c.requests.load()}, {"errors", c.errors.load()}, {"running", c.running.load()},
              {"waiting", c.waiting.load()}, {"rejected", c.rejected.load()}, {"disconnects", c.disconnects.load()},
              {"prompt_tokens", c.prompt_tokens.load()}, {"completion_tokens", c.completion_tokens.load()}}},
            {"swarm", nullptr}};
    if (model.swarm_status) st["swarm"] = model.swarm_status();
    return st;
  }

  void routes() {
    http.set_payload_max_length(static_cast<std::size_t>(options.max_body_bytes));
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (options.api_keys.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = req.get_header_value("Authorization");
      const std::string prefix = "Bearer ";
      if (auth.rfind(prefix, 0) == 0 && options.api_keys.count(auth.substr(prefix.size()))) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      ++counters->requests;
      reply_error(res, ApiError{401, "invalid_request_error",
                                auth.empty() ? "You didn't provide an API key (Authorization: Bearer KEY)."
                                             : "Incorrect API key provided.",
                                {}, "invalid_api_key"});
      return httplib::Server::HandlerResponse::Handled;
    });
    // The status page, its data and the metrics: no key needed (they show no text of anyone's).
    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(status_page_html(), "text/html; charset=utf-8");
    });
    http.Get("/favicon.ico", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
    http.Get("/status", [this](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_content(dump(status_json()), "application/json");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(prometheus_metrics(status_json()), "text/plain; version=0.0.4");
    });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      ++counters->requests;
      res.set_content(dump(models_json()), "application/json");
    });
    http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      ++counters->requests;
      const ServedAdapter* adapter = nullptr;
      if (!find_variant(req.matches[1].str(), &adapter)) return reply_error(res, unknown_model(req.matches[1].str()));
      res.set_content(dump(model_json(adapter)), "application/json");
    });
    http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { completions(req, res, false); });
    http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { completions(req, res, true); });
    // What httplib answers by itself (unknown paths, bodies over the limit) in OpenAI's shape too.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      ++counters->errors;
      std::string message = "HTTP " + std::to_string(res.status);
      if (res.status == 404) message = "Unknown request URL: " + req.method + " " + req.path;
      if (res.status == 413) message = "the request body is larger than this server's limit of " + std::to_string(options.max_body_bytes) + " bytes";
      if (res.status == 405) message = "Method " + req.method + " is not allowed for " + req.path;
      res.set_content(dump(error_body(ApiError{res.status, "invalid_request_error", message, {}, {}})), "application/json");
    });
    http.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      reply_error(res, ApiError{500, "server_error", "internal error: " + what, {}, {}});
    });
    const auto threads = static_cast<std::size_t>((model.one_at_a_time ? 1 : options.max_running) + options.max_waiting + 4);
    http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  }
};

ApiServer::ApiServer(ServedModel model, ApiServerOptions options) : counters_(std::make_shared<ApiCounters>()) {
  if (!model.vocab_trie) model.vocab_trie = std::make_shared<const VocabTrie>(*model.tokenizer, model.config->vocab_size);
  impl_ = std::make_unique<Impl>(std::move(model), std::move(options), counters_);
  impl_->routes();
}

ApiServer::~ApiServer() { stop(); }

Status ApiServer::start() {
  httplib::Server& http = impl_->http;
  const ApiServerOptions& o = impl_->options;
  port_ = o.port == 0 ? http.bind_to_any_port(o.bind) : (http.bind_to_port(o.bind, o.port) ? o.port : -1);
  if (port_ < 0) return error(StatusCode::kUnavailable, "cannot listen on ", o.bind, ":", o.port, " (in use, or not an address of this machine)");
  thread_ = std::thread([&http] { http.listen_after_bind(); });
  return Status::ok();
}

void ApiServer::stop() {
  if (!thread_.joinable()) return;
  impl_->http.stop();
  thread_.join();
}

}  // namespace sepal::api
