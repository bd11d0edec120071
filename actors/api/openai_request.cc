#include "actors/api/openai_request.h"

#include <cmath>
#include <set>

#include "actors/api/structured_output.h"

namespace sepal::api {

using nlohmann::json;
using ojson = nlohmann::ordered_json;

json error_body(const ApiError& e) {
  return json{{"error",
               {{"message", e.message},
                {"type", e.type},
                {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

ApiError invalid(std::string message, std::string param) {
  return ApiError{400, "invalid_request_error", std::move(message), std::move(param), {}};
}

namespace {

// The first problem found, thrown inside the parser and returned as a value at its edge.
struct Bad {
  ApiError error;
};
[[noreturn]] void bad(std::string message, std::string param) { throw Bad{invalid(std::move(message), std::move(param))}; }

bool present(const ojson& body, const char* key) { return body.contains(key) && !body[key].is_null(); }

std::int64_t integer(const ojson& v, const char* key, std::int64_t low, std::int64_t high) {
  if (!v.is_number_integer()) bad(std::string("'") + key + "' must be an integer", key);
  const auto x = v.get<std::int64_t>();
  if (x < low || x > high) {
    bad(std::string("'") + key + "' is " + std::to_string(x) + "; it must be between " + std::to_string(low) + " and " +
            std::to_string(high),
        key);
  }
  return x;
}

double number(const ojson& v, const char* key, double low, double high, bool low_open) {
  if (!v.is_number()) bad(std::string("'") + key + "' must be a number", key);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x > high || x < low || (low_open && x == low)) {
    bad(std::string("'") + key + "' must be " + (low_open ? "above " : "at least ") + ojson(low).dump() + " and at most " +
            ojson(high).dump(),
        key);
  }
  return x;
}

std::string text_of(const ojson& content, const std::string& param) {
  if (content.is_null()) return {};
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad("'content' must be a string or an array of text parts", param);
  std::string text;
  for (const ojson& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
      bad("only text content parts ({\"type\": \"text\", \"text\": ...}) are supported", param);
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

std::string string_field(const ojson& m, const char* key, const std::string& param) {
  if (!m.contains(key) || !m[key].is_string()) bad(param + " needs a string '" + key + "'", param + "." + key);
  return m[key].get<std::string>();
}

// A function's name as OpenAI allows it: letters, digits, '_' and '-', 1 to 64 of them.
void check_function_name(const std::string& name, const std::string& param) {
  const bool fits = !name.empty() && name.size() <= 64 &&
                    name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == std::string::npos;
  if (!fits) bad(param + ": '" + name + "' is not a valid name (1 to 64 of a-z, A-Z, 0-9, '_' and '-')", param);
}

// An assistant message's tool_calls as the template sees them (arguments parsed).
ojson read_tool_calls(const ojson& calls, const std::string& param) {
  if (!calls.is_array()) bad(param + " must be an array", param);
  ojson out = ojson::array();
  for (std::size_t j = 0; j < calls.size(); ++j) {
    const std::string at = param + "[" + std::to_string(j) + "]";
    const ojson& c = calls[j];
    if (!c.is_object()) bad(at + " must be an object", at);
    for (const auto& [key, value] : c.items()) {
      if (key != "id" && key != "type" && key != "function") bad(at + ": '" + key + "' is not supported", at + "." + key);
    }
    if (c.value("type", "") != "function") bad(at + " needs 'type': 'function'", at + ".type");
    if (!c.contains("function") || !c["function"].is_object()) bad(at + " needs a 'function' object", at + ".function");
    const ojson& f = c["function"];
    const std::string name = string_field(f, "name", at + ".function");
    const std::string arguments = string_field(f, "arguments", at + ".function");
    ojson parsed = ojson::parse(arguments, nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_object()) bad(at + ".function.arguments must be a JSON object (in a string)", at + ".function.arguments");
    ojson call = ojson::object();
    if (c.contains("id")) call["id"] = string_field(c, "id", at);
    call["type"] = "function";
    call["function"] = {{"name", name}, {"arguments", std::move(parsed)}};
    out.push_back(std::move(call));
  }
  return out;
}

void read_messages(const ojson& body, CompletionRequest& r) {
  if (!body.contains("messages")) bad("'messages' is a required property", "messages");
  const ojson& messages = body["messages"];
  if (!messages.is_array() || messages.empty()) bad("'messages' must be a non-empty array", "messages");
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const std::string param = "messages[" + std::to_string(i) + "]";
    const ojson& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) bad(param + " needs a string 'role'", param);
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      bad(param + ": role '" + role + "' is not supported (system, developer, user, assistant, tool)", param + ".role");
    }
    ChatMessage message{role, {}};
    for (const auto& [key, value] : m.items()) {
      const std::string at = param + "." + key;
      if (key == "role" || key == "content") continue;
      if (key == "name" && role != "tool") {
        if (!value.is_string()) bad(at + " must be a string", at);
        message.name = value.get<std::string>();
      } else if (key == "tool_calls" && role == "assistant") {
        if (!value.is_null()) message.tool_calls = read_tool_calls(value, at);
      } else if (key == "tool_call_id" && role == "tool") {
        if (!value.is_string()) bad(at + " must be a string", at);
        message.tool_call_id = value.get<std::string>();
      } else if (role == "assistant" && (key == "reasoning_content" || key == "thinking")) {  // "thinking": GPT-OSS's name
        if (!value.is_null() && !value.is_string()) bad(at + " must be a string or null", at);
        if (value.is_string()) message.reasoning_content = value.get<std::string>();
      } else if (role == "assistant" && (key == "refusal" || key == "function_call" || key == "audio") && value.is_null()) {
        // what an assistant message of a reply carries, sent back as the chat goes on
      } else if (role == "assistant" && key == "annotations" && value.is_array() && value.empty()) {
      } else {
        bad(param + ": '" + key + "' is not supported in a message of role '" + role + "'", at);
      }
    }
    if (role == "tool" && message.tool_call_id.empty()) bad(param + " (role 'tool') needs its 'tool_call_id'", param + ".tool_call_id");
    const bool has_content = m.contains("content") && !m["content"].is_null();
    if (!has_content && !(role == "assistant")) bad(param + " needs 'content'", param + ".content");
    message.content = text_of(m.value("content", ojson(nullptr)), param + ".content");
    r.messages.push_back(std::move(message));
  }
}

// `tools` and `tool_choice`: the functions offered, or none.
void read_tools(const ojson& body, CompletionRequest& r, const RequestLimits& limits) {
  const bool has_tools = present(body, "tools");
  std::string choice = has_tools ? "auto" : "none";
  if (present(body, "tool_choice")) {
    const ojson& c = body["tool_choice"];
    if (c.is_object()) {
      if (c.value("type", "") != "function" || !c.contains("function") || !c["function"].is_object() ||
          !c["function"].contains("name") || !c["function"]["name"].is_string() || c.size() != 2 || c["function"].size() != 1) {
        bad("'tool_choice' naming a function must be {\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice");
      }
      choice = "function";
      r.tool_forced = c["function"]["name"].get<std::string>();
    } else {
      if (!c.is_string()) bad("'tool_choice' must be 'none', 'auto', 'required' or name a function", "tool_choice");
      choice = c.get<std::string>();
      if (choice != "none" && choice != "auto" && choice != "required") {
        bad("'tool_choice' must be 'none', 'auto', 'required' or name a function", "tool_choice");
      }
    }
    if (choice != "none" && !has_tools) bad("'tool_choice' is only allowed when 'tools' are specified", "tool_choice");
    r.tool_required = choice == "required";
  }
  if (present(body, "parallel_tool_calls")) {
    if (!has_tools) bad("'parallel_tool_calls' is only allowed when 'tools' are specified", "parallel_tool_calls");
    if (!body["parallel_tool_calls"].is_boolean()) bad("'parallel_tool_calls' must be true or false", "parallel_tool_calls");
    r.parallel_tool_calls = body["parallel_tool_calls"].get<bool>();
  }
  if (!has_tools) return;
  const ojson& tools = body["tools"];
  if (!tools.is_array() || tools.empty()) bad("'tools' must be a non-empty array", "tools");
  if (static_cast<std::int64_t>(tools.size()) > limits.max_tools) {
    bad("'tools' holds " + std::to_string(tools.size()) + " functions; at most " + std::to_string(limits.max_tools) + " are allowed", "tools");
  }
  std::set<std::string> names;
  for (std::size_t i = 0; i < tools.size(); ++i) {
    const std::string param = "tools[" + std::to_string(i) + "]";
    const ojson& t = tools[i];
    if (!t.is_object() || t.value("type", "") != "function") bad(param + " needs 'type': 'function'", param + ".type");
    if (!t.contains("function") || !t["function"].is_object()) bad(param + " needs a 'function' object", param + ".function");
    for (const auto& [key, value] : t.items()) {
      if (key != "type" && key != "function") bad(param + ": '" + key + "' is not supported", param + "." + key);
    }
    const ojson& f = t["function"];
    for (const auto& [key, value] : f.items()) {
      const std::string at = param + ".function." + key;
      if (key == "name" || (key == "description" && value.is_string()) || (key == "parameters" && value.is_object()) ||
          (key == "strict" && (value.is_boolean() || value.is_null()))) {
        continue;
      }
      if (key == "description" || key == "parameters") bad(at + " must be " + (key == "parameters" ? "an object (a JSON Schema)" : "a string"), at);
      bad(param + ".function: '" + key + "' is not supported", at);
    }
    const std::string name = string_field(f, "name", param + ".function");
    check_function_name(name, param + ".function.name");
    if (!names.insert(name).second) bad(param + ": the function '" + name + "' is offered twice", param + ".function.name");
  }
  if (!r.tool_forced.empty() && !names.count(r.tool_forced)) {
    bad("'tool_choice' names the function '" + r.tool_forced + "', which 'tools' does not offer", "tool_choice");
  }
  if (choice != "none") r.tools = tools;
}

// `response_format`: text, a JSON object, or JSON a schema validates.
void read_response_format(const ojson& f, CompletionRequest& r) {
  const std::string type = f.is_object() && f.contains("type") && f["type"].is_string() ? f["type"].get<std::string>() : "";
  if (type == "json_schema") {
    if (!f.contains("json_schema") || !f["json_schema"].is_object() || f.size() != 2) {
      bad("'response_format' json_schema needs a 'json_schema' object: {\"name\", \"schema\", \"strict\", \"description\"}", "response_format");
    }
    const ojson& js = f["json_schema"];
    for (const auto& [key, value] : js.items()) {
      const std::string at = "response_format.json_schema." + key;
      if (key == "name") check_function_name(string_field(js, "name", "response_format.json_schema"), at);
      else if (key == "description" && value.is_string()) continue;
      else if (key == "strict" && (value.is_boolean() || value.is_null())) continue;  // sepal always keeps the schema
      else if (key == "schema" && (value.is_object() || value.is_boolean())) continue;
      else bad("'" + at + "' is not supported (name, schema, strict, description are)", at);
    }
    if (!js.contains("name")) bad("'response_format.json_schema' needs its 'name'", "response_format.json_schema.name");
    auto output = json_schema_output(js.contains("schema") ? js["schema"] : ojson::object());
    if (auto* why = std::get_if<std::string>(&output)) {
      bad("'response_format.json_schema.schema' cannot be followed: " + *why, "response_format.json_schema.schema");
    }
    r.structure = std::get<std::shared_ptr<const StructuredOutput>>(output);
  } else {
    if ((type != "text" && type != "json_object") || f.size() != 1) {
      bad("'response_format' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or {\"type\": \"json_schema\", \"json_schema\": {...}}", "response_format");
    }
    r.json_object = type == "json_object";
    if (r.json_object) r.structure = json_object_output();
  }
  if (type != "text" && !r.tools.is_null()) bad("'response_format' " + type + " cannot be combined with tools", "response_format");
}

void read_prompts(const ojson& body, CompletionRequest& r, const RequestLimits& limits) {
  if (!body.contains("prompt")) bad("'prompt' is a required property", "prompt");
  const ojson& p = body["prompt"];
  const auto ids_of = [](const ojson& a) {
    std::vector<std::int32_t> ids;
    for (const ojson& id : a) {
      if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() > INT32_MAX) {
        bad("token ids in 'prompt' must be non-negative integers", "prompt");
      }
      ids.push_back(static_cast<std::int32_t>(id.get<std::int64_t>()));
    }
    return ids;
  };
  if (p.is_string()) {
    r.prompts.push_back(p.get<std::string>());
  } else if (p.is_array() && !p.empty() && p[0].is_number()) {
    r.prompt_ids.push_back(ids_of(p));
  } else if (p.is_array() && !p.empty() && p[0].is_array()) {
    for (const ojson& one : p) {
      if (!one.is_array() || one.empty()) bad("'prompt' must hold strings, or arrays of token ids", "prompt");
      r.prompt_ids.push_back(ids_of(one));
    }
  } else if (p.is_array() && !p.empty()) {
    for (const ojson& one : p) {
      if (!one.is_string()) bad("'prompt' must be a string, an array of strings, or token ids", "prompt");
      r.prompts.push_back(one.get<std::string>());
    }
  } else {
    bad("'prompt' must be a string, a non-empty array of strings, or token ids", "prompt");
  }
  const auto count = static_cast<std::int64_t>(r.prompts.size() + r.prompt_ids.size());
  if (count > limits.max_prompts) {
    bad("'prompt' holds " + std::to_string(count) + " prompts; this server takes at most " +
            std::to_string(limits.max_prompts) + " in one request",
        "prompt");
  }
}

CompletionRequest parse(const ojson& body, bool chat, const RequestLimits& limits) {
  if (!body.is_object()) bad("the request body must be a JSON object", {});
  static const std::set<std::string> common = {"model", "max_tokens", "temperature", "top_p", "seed", "stop", "n",
                                               "stream", "stream_options", "logprobs", "user", "presence_penalty",
                                               "frequency_penalty", "logit_bias"};
  static const std::set<std::string> chat_only = {"messages", "top_logprobs", "max_completion_tokens", "tools",
                                                  "tool_choice", "parallel_tool_calls", "response_format",
                                                  "chat_template_kwargs"};
  static const std::set<std::string> completion_only = {"prompt", "echo", "best_of", "suffix"};
  for (const auto& [key, value] : body.items()) {
    if (!common.count(key) && !(chat ? chat_only : completion_only).count(key)) {
      bad("Unrecognized request argument supplied: " + key, key);
    }
  }
  CompletionRequest r;
  r.chat = chat;
  if (!body.contains("model") || !body["model"].is_string()) bad("'model' is a required string", "model");
  r.model = body["model"].get<std::string>();
  if (chat) {
    read_messages(body, r);
    read_tools(body, r, limits);
    if (present(body, "response_format")) read_response_format(body["response_format"], r);
    if (present(body, "chat_template_kwargs")) {
      static const std::set<std::string> kSet = {"messages", "tools", "add_generation_prompt", "documents",
                                                 "bos_token", "eos_token", "unk_token", "pad_token"};
      const ojson& kwargs = body["chat_template_kwargs"];
      if (!kwargs.is_object()) bad("'chat_template_kwargs' must be an object of template variables", "chat_template_kwargs");
      for (const auto& [key, value] : kwargs.items()) {
        if (kSet.count(key)) bad("'chat_template_kwargs' may not set '" + key + "': the server sets it", "chat_template_kwargs." + key);
      }
      r.template_kwargs = kwargs;
    }
  } else {
    read_prompts(body, r, limits);
  }
  constexpr std::int64_t kMaxTokens = std::int64_t{1} << 31;
  if (present(body, "max_tokens")) r.max_tokens = integer(body["max_tokens"], "max_tokens", 1, kMaxTokens);
  if (chat && present(body, "max_completion_tokens")) {
    r.max_tokens = integer(body["max_completion_tokens"], "max_completion_tokens", 1, kMaxTokens);
  }
  if (!chat && !r.max_tokens) r.max_tokens = 16;  // the completions API's default
  if (present(body, "temperature")) r.temperature = number(body["temperature"], "temperature", 0.0, 2.0, false);
  if (present(body, "top_p")) r.top_p = number(body["top_p"], "top_p", 0.0, 1.0, true);
  if (present(body, "seed")) {
    if (!body["seed"].is_number_integer()) bad("'seed' must be an integer", "seed");
    r.seed = body["seed"].is_number_unsigned() ? body["seed"].get<std::uint64_t>()
                                               : static_cast<std::uint64_t>(body["seed"].get<std::int64_t>());
  }
  if (present(body, "stop")) {
    const ojson& s = body["stop"];
    if (s.is_string()) r.stop.push_back(s.get<std::string>());
    else if (s.is_array()) {
      for (const ojson& one : s) {
        if (!one.is_string()) bad("'stop' must be a string or an array of strings", "stop");
        r.stop.push_back(one.get<std::string>());
      }
    } else {
      bad("'stop' must be a string or an array of strings", "stop");
    }
    if (static_cast<std::int64_t>(r.stop.size()) > limits.max_stop) {
      bad("'stop' holds more than " + std::to_string(limits.max_stop) + " strings", "stop");
    }
    for (const std::string& one : r.stop) {
      if (one.empty()) bad("'stop' strings must not be empty", "stop");
    }
  }
  if (present(body, "n")) r.n = integer(body["n"], "n", 1, limits.max_n);
  if (present(body, "stream")) {
    if (!body["stream"].is_boolean()) bad("'stream' must be true or false", "stream");
    r.stream = body["stream"].get<bool>();
  }
  if (present(body, "stream_options")) {
    const ojson& o = body["stream_options"];
    if (!r.stream) bad("'stream_options' is only allowed with 'stream': true", "stream_options");
    if (!o.is_object()) bad("'stream_options' must be an object", "stream_options");
    for (const auto& [key, value] : o.items()) {
      if (key != "include_usage" || !value.is_boolean()) bad("'stream_options' takes include_usage: true or false", "stream_options");
      r.include_usage = value.get<bool>();
    }
  }
  if (chat) {
    const bool wanted = present(body, "logprobs") && (body["logprobs"].is_boolean() ? body["logprobs"].get<bool>()
                                                                                    : (bad("'logprobs' must be true or false", "logprobs"), false));
    if (present(body, "top_logprobs")) {
      if (!wanted) bad("'top_logprobs' needs 'logprobs': true", "top_logprobs");
      r.logprobs = integer(body["top_logprobs"], "top_logprobs", 0, limits.max_top_logprobs_chat);
    } else if (wanted) {
      r.logprobs = 0;
    }
  } else if (present(body, "logprobs")) {
    r.logprobs = integer(body["logprobs"], "logprobs", 0, limits.max_top_logprobs_completions);
  }
  if (present(body, "presence_penalty")) r.presence_penalty = number(body["presence_penalty"], "presence_penalty", -2.0, 2.0, false);
  if (present(body, "frequency_penalty")) r.frequency_penalty = number(body["frequency_penalty"], "frequency_penalty", -2.0, 2.0, false);
  if (present(body, "logit_bias")) {
    const ojson& b = body["logit_bias"];
    if (!b.is_object()) bad("'logit_bias' must be an object of token ids (as strings) and biases", "logit_bias");
    if (static_cast<std::int64_t>(b.size()) > limits.max_logit_bias) {
      bad("'logit_bias' names " + std::to_string(b.size()) + " tokens; this server takes at most " +
              std::to_string(limits.max_logit_bias),
          "logit_bias");
    }
    for (const auto& [key, value] : b.items()) {
      const bool digits = !key.empty() && key.size() <= 10 && key.find_first_not_of("0123456789") == std::string::npos;
      const long long id = digits ? std::stoll(key) : -1;
      if (id < 0 || id > INT32_MAX) bad("'logit_bias' keys must be token ids (non-negative integers, as strings); '" + key + "' is not", "logit_bias");
      if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < -100 || value.get<double>() > 100) {
        bad("'logit_bias' values must be numbers from -100 to 100 (token " + key + ")", "logit_bias");
      }
      r.logit_bias.emplace_back(static_cast<std::int32_t>(id), value.get<float>());
    }
    std::set<std::int32_t> ids;
    for (const auto& entry : r.logit_bias) {
      if (!ids.insert(entry.first).second) bad("'logit_bias' names token " + std::to_string(entry.first) + " twice", "logit_bias");
    }
  }
  if (present(body, "echo") && !(body["echo"].is_boolean() && !body["echo"].get<bool>())) bad("'echo' is not supported", "echo");
  if (present(body, "best_of") && !(body["best_of"].is_number_integer() && body["best_of"].get<std::int64_t>() == 1)) {
    bad("'best_of' is not supported (only 1)", "best_of");
  }
  if (present(body, "suffix")) bad("'suffix' is not supported", "suffix");
  if (present(body, "user") && !body["user"].is_string()) bad("'user' must be a string", "user");
  return r;
}

}  // namespace

std::variant<CompletionRequest, ApiError> parse_completion_request(const std::string& body, bool chat,
                                                                   const RequestLimits& limits) {
  ojson parsed = ojson::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return invalid("We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                   "your HTTP library correctly. The OpenAI API expects a JSON payload.)");
  }
  try {
    return parse(parsed, chat, limits);
  } catch (const Bad& b) {
    return b.error;
  } catch (const ojson::exception& e) {
    return invalid(std::string("the request does not fit the API: ") + e.what());
  }
}

}  // namespace sepal::api
