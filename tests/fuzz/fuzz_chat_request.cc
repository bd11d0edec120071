// Fuzz target: a chat completions request body (HTTP input) with tools. Parsing must give a
// request or an ApiError; a parsed chat then renders through a template that shows tools, calls
// and tool messages, and each message's text, read as a model's reply, goes through both call
// formats whole and streamed in pieces, and through JSON mode's grammar, the request's JSON
// schema (compiled while parsing) and the grammar of forced calls in each format. Any exception,
// a crash or a sanitizer report is a finding; so is a stream that loses or invents text, an
// object JSON mode's grammar completes that is not JSON, a text a schema's grammar completes
// that is not JSON, or forced calls the grammar completes that the format's reader does not read
// as calls, or a reasoning split (or a harmony reply's messages) whose streamed pieces join to other
// parts than the whole split's.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <variant>

#include "actors/api/chat_template.h"
#include "actors/api/harmony.h"
#include "actors/api/openai_request.h"
#include "actors/api/reasoning.h"
#include "actors/api/structured_output.h"
#include "actors/api/tool_calls.h"

namespace {

using namespace sepal::api;

const ChatTemplate& tool_template() {
  static const ChatTemplate t = chat_template_of_text(
      "{% if tools %}{% for t in tools %}{{ t | tojson }}\n{% endfor %}{% endif %}"
      "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
      "{% for c in m.tool_calls or [] %}<tool_call>{\"name\": \"{{ c.function.name }}\", \"arguments\": {{ c.function.arguments | tojson }}}</tool_call>{% endfor %}"
      "{% if m.tool_call_id is defined %}[{{ m.tool_call_id }}]{% endif %}{% endfor %}<|assistant|>"
      "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% else %}{{ extra }}{% endif %}",
      nlohmann::ordered_json::object());
  return t;
}

bool completes(const StructuredOutput& output, const std::string& text) {
  GrammarReader reader(output.grammar, output.start);
  return reader.feed(text) && reader.complete();
}

// A stream's pieces of `text` (pushed `piece` bytes at a time, then finished) join to the whole
// reading's reasoning and content, and it thought where the whole one did.
template <typename Stream, typename Whole>
void expect_stream_joins(Stream& stream, const std::string& text, std::size_t piece, const Whole& whole) {
  std::string reasoning, content;
  for (std::size_t at = 0; at < text.size(); at += piece) {
    const auto p = stream.push(text.substr(at, piece));
    reasoning += p.reasoning;
    content += p.content;
  }
  const auto rest = stream.finish();
  if (reasoning + rest.reasoning != whole.reasoning.value_or("") || content + rest.content != whole.content ||
      stream.thought() != whole.reasoning.has_value()) {
    __builtin_trap();
  }
}

void read_reply(const std::string& text, const std::set<std::string>& names) {
  for (const ToolCallFormat format : {ToolCallFormat::kHermes, ToolCallFormat::kLlama3Json, ToolCallFormat::kMistral}) {
    std::string finish = "stop";
    (void)assistant_message(format, text, names, true, finish);
    ToolCallStream stream(format);
    std::string shown;
    const std::size_t piece = 1 + text.size() % 7;
    for (std::size_t at = 0; at < text.size(); at += piece) shown += stream.push(text.substr(at, piece));
    if (shown + stream.held() != text) __builtin_trap();
    (void)held_delta(format, stream.held(), names, false, finish);
  }
  // The reasoning split, whole and streamed in pieces, from the reply's start and inside <think>;
  // a harmony reply (GPT-OSS) the same way.
  for (const bool open : {false, true}) {
    ReasoningStream stream(open);
    expect_stream_joins(stream, text, 1 + text.size() % 5, split_reasoning(text, open));
  }
  HarmonyStream harmony(names);
  const HarmonyReply whole = read_harmony(text, names);
  expect_stream_joins(harmony, text, 1 + text.size() % 3, whole);
  if (harmony.calls().size() != whole.calls.size()) __builtin_trap();
  // JSON mode's grammar: an object it completes is JSON.
  if (completes(*json_object_output(), text) && !nlohmann::json::accept(text)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  auto parsed = parse_completion_request(body, /*chat=*/true, RequestLimits{});
  auto* request = std::get_if<CompletionRequest>(&parsed);
  if (!request) return 0;
  (void)render_chat(tool_template(), request->messages, false, request->tools, request->template_kwargs);
  std::set<std::string> names;
  if (request->tools.is_array()) {
    for (const auto& t : request->tools) names.insert(t["function"]["name"].get<std::string>());
  }
  for (const ChatMessage& m : request->messages) read_reply(m.content, names);
  if (request->structure) {
    for (const ChatMessage& m : request->messages) {
      if (completes(*request->structure, m.content) && !nlohmann::json::accept(m.content)) __builtin_trap();
    }
  }
  if (request->tools.is_array()) {
    for (const ToolCallFormat format : {ToolCallFormat::kHermes, ToolCallFormat::kLlama3Json, ToolCallFormat::kMistral,
                                        ToolCallFormat::kHarmony}) {
      auto forced = forced_calls_output(format, request->tools, request->tool_forced, request->parallel_tool_calls);
      auto* output = std::get_if<std::shared_ptr<const StructuredOutput>>(&forced);
      if (!output) continue;
      for (const ChatMessage& m : request->messages) {
        if (completes(**output, m.content) && !parse_tool_calls(format, m.content, names)) __builtin_trap();
      }
    }
  }
  return 0;
}
