// The OpenAI API's pieces without HTTP: request checking (every field in range, OpenAI's error
// shape naming the parameter), stop strings over streamed text, chat templates, log probabilities,
// and one choice's text and tokens against the generation loop's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ctime>
#include <optional>
#include <random>
#include <set>

#include "actors/api/chat_template.h"
#include "actors/api/choice_runner.h"
#include "actors/api/harmony.h"
#include "actors/api/json_mode.h"
#include "actors/api/json_schema.h"
#include "actors/api/structured_output.h"
#include "actors/api/openai_request.h"
#include "actors/api/reasoning.h"
#include "actors/api/stop_strings.h"
#include "actors/api/tool_calls.h"
#include "kernels/error.h"
#include "model/draft_source.h"
#include "model/safetensors.h"
#include "tests/test_util.h"

namespace sepal::api {
namespace {

CompletionRequest ok(const std::string& body, bool chat = false) {
  auto r = parse_completion_request(body, chat, RequestLimits{});
  if (auto* e = std::get_if<ApiError>(&r)) ADD_FAILURE() << body << ": " << e->message;
  return std::get_if<CompletionRequest>(&r) ? std::get<CompletionRequest>(r) : CompletionRequest{};
}

ApiError refused(const std::string& body, bool chat = false) {
  auto r = parse_completion_request(body, chat, RequestLimits{});
  if (std::holds_alternative<CompletionRequest>(r)) ADD_FAILURE() << body << ": accepted";
  return std::holds_alternative<ApiError>(r) ? std::get<ApiError>(r) : ApiError{};
}

TEST(ApiRequest, FieldsAreReadAsOpenAIDefinesThem) {
  const CompletionRequest c = ok(R"({"model": "m", "prompt": "Once", "temperature": 0, "stop": "\n", "logprobs": 2,
                                     "seed": -3, "n": 2, "stream": true, "stream_options": {"include_usage": true}})");
  EXPECT_EQ(c.prompts, std::vector<std::string>{"Once"});
  EXPECT_EQ(c.max_tokens, 16);  // the completions API's default
  EXPECT_EQ(c.temperature, 0.0);
  EXPECT_EQ(c.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(c.logprobs, 2);
  EXPECT_EQ(c.seed, static_cast<std::uint64_t>(-3));
  EXPECT_TRUE(c.stream && c.include_usage);
  EXPECT_EQ(c.n, 2);
  const CompletionRequest biased = ok(R"({"model": "m", "prompt": "x", "logit_bias": {"50256": -100, "13": 2.5},
                                          "presence_penalty": 0.5, "frequency_penalty": -1})");
  EXPECT_EQ(biased.logit_bias, (std::vector<std::pair<std::int32_t, float>>{{50256, -100.0f}, {13, 2.5f}}));
  EXPECT_EQ(biased.presence_penalty, 0.5);
  EXPECT_EQ(biased.frequency_penalty, -1.0);
  EXPECT_EQ(ok(R"({"model": "m", "prompt": [1, 2, 3]})").prompt_ids, (std::vector<std::vector<std::int32_t>>{{1, 2, 3}}));
  EXPECT_EQ(ok(R"({"model": "m", "prompt": ["a", "b"]})").prompts.size(), 2u);
  const CompletionRequest chat = ok(R"({"model": "m", "messages": [{"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}]}],
      "logprobs": true, "top_logprobs": 3, "max_completion_tokens": 5})", true);
  ASSERT_EQ(chat.messages.size(), 2u);
  EXPECT_EQ(chat.messages[0].role, "system");
  EXPECT_EQ(chat.messages[1].content, "Hi!");
  EXPECT_EQ(chat.logprobs, 3);
  EXPECT_EQ(chat.max_tokens, 5);
  EXPECT_FALSE(ok(R"({"model": "m", "messages": [{"role": "user", "content": "x"}]})", true).max_tokens);
}

TEST(ApiRequest, BadFieldsNameTheParameter) {
  const auto param = [](const std::string& body, bool chat = false) { return refused(body, chat).param; };
  EXPECT_EQ(refused("{not json").http_status, 400);
  EXPECT_EQ(param(R"({"prompt": "x"})"), "model");
  EXPECT_EQ(param(R"({"model": "m"})"), "prompt");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "max_tokens": -1})"), "max_tokens");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "max_tokens": 1.5})"), "max_tokens");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "temperature": 2.5})"), "temperature");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "top_p": 0})"), "top_p");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "n": 9})"), "n");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]})"), "stop");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "stop": [""]})"), "stop");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "logprobs": 6})"), "logprobs");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "frequency_penalty": 2.5})"), "frequency_penalty");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "logit_bias": {"12": 101}})"), "logit_bias");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "logit_bias": {"-1": 1}})"), "logit_bias");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "logit_bias": {"7": 1, "007": 2}})"), "logit_bias");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "logit_bias": [1]})"), "logit_bias");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "echo": true})"), "echo");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "stream_options": {"include_usage": true}})"), "stream_options");
  EXPECT_EQ(param(R"({"model": "m", "prompt": [-1]})"), "prompt");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "tools": []})"), "tools");
  EXPECT_EQ(param(R"({"model": "m", "prompt": "x", "messages": []})"), "messages");  // not a completions field
  EXPECT_EQ(param(R"({"model": "m", "messages": []})", true), "messages");
  EXPECT_EQ(param(R"({"model": "m", "messages": [{"role": "function", "content": "x"}]})", true), "messages[0].role");
  EXPECT_EQ(param(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", true),
            "top_logprobs");
  EXPECT_EQ(param(R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", true),
            "messages[0].content");
  const nlohmann::json body = error_body(refused(R"({"model": "m", "prompt": "x", "n": 0})"));
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "n");
  EXPECT_TRUE(body["error"]["code"].is_null());
}

// Whatever the pieces, the text shown is the text before the first stop string, and nothing that
// could still be a stop string's beginning is shown early.
constexpr const char* kWeatherTool =
    R"({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})";

std::string chat_with(const std::string& fields) {
  return R"({"model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}], )" + fields + "}";
}

TEST(ApiTools, ToolsCallsAndToolMessagesAreRead) {
  const CompletionRequest r = ok(chat_with(std::string(R"("tools": [)") + kWeatherTool + R"(], "parallel_tool_calls": false)"), true);
  ASSERT_TRUE(r.tools.is_array());
  EXPECT_EQ(r.tools[0]["function"]["name"], "get_weather");
  EXPECT_EQ(r.tools[0]["function"].begin().key(), "name");  // the request's key order, for tojson
  EXPECT_FALSE(r.parallel_tool_calls);
  // tool_choice "none": validated, not shown to the template.
  EXPECT_TRUE(ok(chat_with(std::string(R"("tools": [)") + kWeatherTool + R"(], "tool_choice": "none")"), true).tools.is_null());
  EXPECT_TRUE(ok(chat_with(R"("tool_choice": "none")"), true).tools.is_null());
  // An assistant's calls (arguments as a JSON string, as OpenAI sends them) and the tool's answer,
  // and an assistant message sent back as a reply gave it (refusal: null).
  const CompletionRequest history = ok(R"({"model": "m", "messages": [{"role": "user", "content": "Weather?"},
      {"role": "assistant", "content": null, "refusal": null, "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 2}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]})", true);
  ASSERT_EQ(history.messages.size(), 3u);
  const ChatMessage& call = history.messages[1];
  EXPECT_EQ(call.content, "");
  EXPECT_EQ(call.tool_calls.dump(), R"([{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":{"city":"Paris","days":2}}}])");
  EXPECT_EQ(history.messages[2].role, "tool");
  EXPECT_EQ(history.messages[2].tool_call_id, "call_1");
}

TEST(ApiTools, BadToolsNameTheParameter) {
  const auto param = [](const std::string& fields) { return refused(chat_with(fields), true).param; };
  EXPECT_EQ(param(R"("tools": [])"), "tools");
  EXPECT_EQ(param(R"("tools": [{"type": "retrieval"}])"), "tools[0].type");
  EXPECT_EQ(param(R"("tools": [{"type": "function", "function": {"name": "a b"}}])"), "tools[0].function.name");
  EXPECT_EQ(param(R"("tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}])"), "tools[0].function.parameters");
  EXPECT_EQ(param(R"("tools": [{"type": "function", "function": {"name": "f", "extra": 1}}])"), "tools[0].function.extra");
  EXPECT_EQ(param(std::string(R"("tools": [)") + kWeatherTool + "," + kWeatherTool + "]"), "tools[1].function.name");
  EXPECT_EQ(param(std::string(R"("tools": [)") + kWeatherTool + R"(], "tool_choice": "always")"), "tool_choice");
  EXPECT_EQ(param(std::string(R"("tools": [)") + kWeatherTool + R"(], "tool_choice": {"type": "function", "function": {"name": "nope"}})"),
            "tool_choice");
  EXPECT_EQ(param(std::string(R"("tools": [)") + kWeatherTool + R"(], "tool_choice": {"type": "function", "name": "get_weather"})"),
            "tool_choice");
  EXPECT_EQ(param(R"("tool_choice": "auto")"), "tool_choice");
  EXPECT_EQ(param(R"("tool_choice": "required")"), "tool_choice");
  EXPECT_EQ(param(R"("parallel_tool_calls": true)"), "parallel_tool_calls");
  EXPECT_TRUE(ok(chat_with(R"("response_format": {"type": "json_object"})"), true).json_object);
  EXPECT_FALSE(ok(chat_with(R"("response_format": {"type": "text"})"), true).json_object);
  EXPECT_EQ(param(R"("response_format": {"type": "json_schema", "json_schema": {"schema": {}}})"), "response_format.json_schema.name");
  EXPECT_EQ(param(R"("response_format": {"type": "json_schema", "json_schema": {"name": "x y"}})"), "response_format.json_schema.name");
  EXPECT_EQ(param(R"("response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}})"), "response_format.json_schema.schema");
  EXPECT_EQ(param(R"("response_format": {"type": "json_schema", "json_schema": {"name": "x", "extra": 3}})"), "response_format.json_schema.extra");
  EXPECT_EQ(param(R"("response_format": {"type": "json_schema"})"), "response_format");
  const ApiError pattern = refused(chat_with(R"("response_format": {"type": "json_schema", "json_schema": {"name": "x",
      "schema": {"type": "object", "properties": {"id": {"type": "string", "pattern": "^(a)\\1$"}}}}})"), true);
  EXPECT_EQ(pattern.param, "response_format.json_schema.schema");
  EXPECT_NE(pattern.message.find("at #/properties/id: 'pattern' the escape \\1 (at character 4) is not supported"), std::string::npos)
      << pattern.message;
  EXPECT_EQ(param(std::string(R"("tools": [)") + kWeatherTool + R"(], "response_format": {"type": "json_schema", "json_schema": {"name": "x"}})"),
            "response_format");
  EXPECT_EQ(param(R"("response_format": {"type": "xml"})"), "response_format");
  EXPECT_EQ(param(R"("response_format": "json_object")"), "response_format");
  EXPECT_EQ(param(std::string(R"("tools": [)") + kWeatherTool + R"(], "response_format": {"type": "json_object"})"), "response_format");
  std::string many = R"("tools": [)";
  for (int i = 0; i < 129; ++i) many += (i ? "," : "") + std::string(R"({"type": "function", "function": {"name": "f)") + std::to_string(i) + "\"}}";
  EXPECT_EQ(param(many + "]"), "tools");
  const auto message_param = [](const std::string& message) {
    return refused(R"({"model": "m", "messages": [{"role": "user", "content": "x"}, )" + message + "]}", true).param;
  };
  EXPECT_EQ(message_param(R"({"role": "tool", "content": "18 C"})"), "messages[1].tool_call_id");
  EXPECT_EQ(message_param(R"({"role": "user", "content": "x", "tool_call_id": "c"})"), "messages[1].tool_call_id");
  EXPECT_EQ(message_param(R"({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "[1]"}}]})"),
            "messages[1].tool_calls[0].function.arguments");
  EXPECT_EQ(message_param(R"({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]})"),
            "messages[1].tool_calls[0].function.arguments");
  EXPECT_EQ(message_param(R"({"role": "assistant", "content": "x", "refusal": "no"})"), "messages[1].refusal");
}

TEST(ApiTools, ToolChoiceForcesCallsOrNamesOne) {
  const std::string tools = std::string(R"("tools": [)") + kWeatherTool + R"(, {"type": "function", "function": {"name": "now"}}])";
  const CompletionRequest required = ok(chat_with(tools + R"(, "tool_choice": "required")"), true);
  EXPECT_TRUE(required.tool_required);
  EXPECT_TRUE(required.tool_forced.empty());
  ASSERT_TRUE(required.tools.is_array());
  const CompletionRequest named = ok(chat_with(tools + R"(, "tool_choice": {"type": "function", "function": {"name": "now"}})"), true);
  EXPECT_FALSE(named.tool_required);
  EXPECT_EQ(named.tool_forced, "now");
  const CompletionRequest automatic = ok(chat_with(tools + R"(, "tool_choice": "auto")"), true);
  EXPECT_FALSE(automatic.tool_required || !automatic.tool_forced.empty() || automatic.structure);
}

TEST(ApiJsonSchema, ResponseFormatCompilesTheSchema) {
  const CompletionRequest r = ok(chat_with(R"("response_format": {"type": "json_schema", "json_schema": {"name": "person",
      "strict": true, "description": "a person", "schema": {"type": "object", "properties": {"name": {"type": "string"}},
      "required": ["name"], "additionalProperties": false}}})"), true);
  ASSERT_TRUE(r.structure);
  EXPECT_FALSE(r.json_object);
  GrammarReader reader(r.structure->grammar, r.structure->start);
  EXPECT_TRUE(reader.feed(R"({"name": "Ada"})"));
  EXPECT_TRUE(reader.complete());
  GrammarReader other(r.structure->grammar, r.structure->start);
  EXPECT_FALSE(other.feed(R"({"age")"));
  EXPECT_TRUE(ok(chat_with(R"("response_format": {"type": "json_schema", "json_schema": {"name": "any"}})"), true).structure);
}

// The reader keeps every way to go on: an ambiguous grammar, right recursion that costs no depth,
// left recursion found before reading, nesting bounded.
TEST(ApiGrammar, TheReaderFollowsEveryWayAndBoundsItsWork) {
  Grammar g;
  const Grammar::Rule ab = g.new_rule(), start = g.new_rule();
  g.add(ab, g.literal("a"));
  g.add(ab, g.literal("ab"));
  std::vector<Grammar::Symbol> seq = {Grammar::call(ab)};
  for (const auto& s : g.literal("bc")) seq.push_back(s);
  g.add(start, seq);  // "abc" (a, bc) or "abbc" (ab, bc)
  for (const std::string text : {"abc", "abbc"}) {
    GrammarReader r(g, start);
    EXPECT_TRUE(r.feed(text)) << text;
    EXPECT_TRUE(r.complete()) << text;
    EXPECT_FALSE(r.can_continue()) << text;
  }
  GrammarReader partial(g, start);
  EXPECT_TRUE(partial.feed("ab"));
  EXPECT_FALSE(partial.complete());
  EXPECT_FALSE(partial.feed('x'));
  EXPECT_TRUE(partial.feed("c"));  // a refused byte changed nothing
  EXPECT_FALSE(g.left_recursive());

  const Grammar::Rule list = g.new_rule();  // list ::= "" | "x" list
  g.add(list, {});
  g.add(list, {g.literal("x")[0], Grammar::call(list)});
  GrammarReader many(g, list);
  EXPECT_TRUE(many.feed(std::string(100000, 'x')));
  EXPECT_TRUE(many.complete() && many.can_continue());

  Grammar left;
  const Grammar::Rule l = left.new_rule(), opt = left.new_rule();
  left.add(opt, {});
  left.add(l, {Grammar::call(opt), Grammar::call(l), left.literal("y")[0]});  // l ::= opt l "y", opt nullable
  left.add(l, left.literal("y"));
  EXPECT_EQ(left.left_recursive(), l);

  // Lengths: "abc" or "abbc" is 3 to 4 bytes; a repeat multiplies; recursion has none.
  EXPECT_EQ(g.length_bounds(start), (std::pair<std::uint64_t, std::uint64_t>{3, 4}));
  EXPECT_EQ(g.length_bounds(g.repeat(start, 2, 5)), (std::pair<std::uint64_t, std::uint64_t>{6, 20}));
  EXPECT_EQ(g.length_bounds(list), std::nullopt);
  EXPECT_EQ(g.length_bounds(g.new_rule()), std::nullopt);  // matches nothing

  Grammar json;
  JsonSchemaGrammar schema(json);
  const Grammar::Rule any = schema.any_value();
  GrammarReader nested(json, any);
  EXPECT_TRUE(nested.feed(std::string(64, '[') + "1" + std::string(64, ']')));
  EXPECT_TRUE(nested.complete());
  GrammarReader deep(json, any);
  EXPECT_FALSE(deep.feed(std::string(1000, '[')));
}

// Integer bounds: every integer in a window is accepted exactly when it lies in the bounds, in
// JSON's form only (no leading zeros, no "-0").
TEST(ApiJsonSchema, IntegerBoundsAcceptExactlyTheirRange) {
  const std::pair<std::int64_t, std::int64_t> ranges[] = {{0, 0}, {-5, 5}, {7, 7}, {99, 1000}, {-1000, -100}, {1, 9},
                                                          {10, 99}, {123, 45678}, {-37, 0}, {-20000, 19999}};
  for (const auto& [lo, hi] : ranges) {
    Grammar g;
    JsonSchemaGrammar json(g);
    const Grammar::Rule rule = json.compile(nlohmann::ordered_json{{"type", "integer"}, {"minimum", lo}, {"maximum", hi}});
    const auto accepts = [&](const std::string& text) {
      GrammarReader r(g, rule);
      return r.feed(text) && r.complete();
    };
    for (std::int64_t n = -21000; n <= 50000; ++n) {
      ASSERT_EQ(accepts(std::to_string(n)), lo <= n && n <= hi) << n << " in [" << lo << ", " << hi << "]";
    }
    EXPECT_FALSE(accepts("0" + std::to_string(std::max<std::int64_t>(lo, 1))));
    EXPECT_FALSE(accepts("-0"));
  }
}

// Number bounds, fractional, negative and exclusive: every number on a grid of 0.00001 is accepted
// exactly when it lies in the bounds, written with and without trailing zeros; an exclusive
// bound also refuses a text that reads back as the bound's double.
TEST(ApiJsonSchema, NumberBoundsAcceptExactlyTheirRange) {
  struct Case {
    const char* schema;
    std::int64_t lo, hi;  // in units of 0.00001; INT64_MIN / INT64_MAX where unbounded
    bool lo_open, hi_open;
  };
  constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::max();
  const Case cases[] = {
      {R"({"minimum": -1.5, "maximum": 2.25})", -150000, 225000, false, false},
      {R"({"exclusiveMinimum": -1, "exclusiveMaximum": 1})", -100000, 100000, true, true},
      {R"({"minimum": 0.1, "maximum": 0.3})", 10000, 30000, false, false},
      {R"({"minimum": -0.75, "maximum": -0.25})", -75000, -25000, false, false},
      {R"({"exclusiveMinimum": 0, "maximum": 0.001})", 0, 100, true, false},
      {R"({"minimum": 3.14159, "maximum": 3.1416})", 314159, 314160, false, false},
      {R"({"minimum": 2, "exclusiveMaximum": 2.5, "maximum": 7})", 200000, 250000, false, true},
      {R"({"maximum": -2.5})", -kNone, -250000, false, false},
      {R"({"exclusiveMinimum": 10.05, "minimum": 3})", 1005000, kNone, true, false},
      {R"({"minimum": -0.00003, "maximum": 0.00002})", -3, 2, false, false},
  };
  const auto text_of = [](std::int64_t units, int min_fraction) {
    const std::int64_t magnitude = units < 0 ? -units : units;
    const std::string digits = std::to_string(magnitude % 100000);
    std::string fraction(5 - digits.size(), '0');
    fraction.append(digits);
    while (!fraction.empty() && fraction.back() == '0') fraction.pop_back();
    if (static_cast<int>(fraction.size()) < min_fraction) fraction.append(static_cast<std::size_t>(min_fraction) - fraction.size(), '0');
    std::string text = units < 0 ? "-" : "";
    text.append(std::to_string(magnitude / 100000));
    if (!fraction.empty()) text.append(".").append(fraction);
    return text;
  };
  for (const Case& c : cases) {
    Grammar g;
    JsonSchemaGrammar json(g);
    nlohmann::ordered_json schema = nlohmann::ordered_json::parse(c.schema);
    schema["type"] = "number";
    const Grammar::Rule rule = json.compile(schema);
    const auto accepts = [&](const std::string& text) {
      GrammarReader r(g, rule);
      return r.feed(text) && r.complete();
    };
    const auto inside = [&](std::int64_t v) {
      return (c.lo == -kNone || (c.lo_open ? v > c.lo : v >= c.lo)) && (c.hi == kNone || (c.hi_open ? v < c.hi : v <= c.hi));
    };
    std::vector<std::int64_t> values;
    for (std::int64_t v = -1200000; v <= 1200000; v += 1000) values.push_back(v + 7);
    for (std::int64_t v = -1200000; v <= 1200000; v += 1000) values.push_back(v);
    for (const std::int64_t bound : {c.lo, c.hi}) {
      if (bound == kNone || bound == -kNone) continue;
      for (std::int64_t v = bound - 300; v <= bound + 300; ++v) values.push_back(v);
    }
    for (const std::int64_t v : values) {
      for (const int min_fraction : {0, 7}) {
        const std::string text = text_of(v, min_fraction);
        ASSERT_EQ(accepts(text), inside(v)) << text << " under " << c.schema;
      }
    }
    EXPECT_FALSE(accepts("1e0")) << c.schema;  // bounded numbers come without exponents
    EXPECT_FALSE(accepts("01")) << c.schema;
  }
  Grammar g;
  JsonSchemaGrammar json(g);
  const Grammar::Rule open = json.compile(nlohmann::ordered_json::parse(R"({"type": "number", "exclusiveMinimum": 1.5, "maximum": 2})"));
  const auto accepts = [&](const std::string& text) {
    GrammarReader r(g, open);
    return r.feed(text) && r.complete();
  };
  EXPECT_FALSE(accepts("1.5000000000000001"));  // reads back as 1.5
  EXPECT_TRUE(accepts("1.5000000000000002"));
  EXPECT_TRUE(accepts("2.0000"));
  EXPECT_FALSE(accepts("2.0000000000000001"));
  // Keywords without a type speak of their type: a pattern alone allows only its strings.
  for (const auto& [schema, good, bad] : {std::tuple{R"({"pattern": "^ab$"})", R"("ab")", R"("b")"},
                                          std::tuple{R"({"pattern": "^ab$"})", R"("ab")", "1"},
                                          std::tuple{R"({"format": "date"})", R"("2024-02-28")", "[]"},
                                          std::tuple{R"({"exclusiveMaximum": 0})", "-1", R"("x")"},
                                          std::tuple{R"({"prefixItems": [{"type": "null"}]})", "[null, 1]", "[1]"}}) {
    Grammar typeless;
    JsonSchemaGrammar compiler(typeless);
    const Grammar::Rule rule = compiler.compile(nlohmann::ordered_json::parse(schema));
    GrammarReader yes(typeless, rule), no(typeless, rule);
    EXPECT_TRUE(yes.feed(good) && yes.complete()) << schema << " " << good;
    EXPECT_FALSE(no.feed(bad) && no.complete()) << schema << " " << bad;
  }
  for (const char* impossible : {R"({"type": "number", "minimum": 2, "maximum": 1})", R"({"type": "number", "exclusiveMinimum": 1, "exclusiveMaximum": 1})",
                                 R"({"type": "number", "minimum": 1e17})", R"({"minimum": "1"})"}) {
    Grammar none;
    JsonSchemaGrammar refused(none);
    EXPECT_THROW(refused.compile(nlohmann::ordered_json::parse(impossible)), SchemaError) << impossible;
  }
}

// multipleOf on integers: exactly the multiples within the bounds, and every digit the reader
// takes leads on to one (no prefix it accepts is a dead end).
TEST(ApiJsonSchema, MultiplesAcceptExactlyTheirValuesAndNeverDeadEnd) {
  struct Case {
    std::int64_t k, lo, hi;
  };
  const Case cases[] = {{2, -20, 20}, {3, 0, 1000}, {7, -1000, 49999}, {10, 5, 95}, {12, -20000, -13}, {97, 96, 20000},
                        {1000, -20000, 49999}, {13, 40000, 40100}, {9, -9, -9},
                        // Many lengths at once (the reader must not drop the negative ones' way).
                        {7, -9999999999999999, 9999999999999999}, {3, -100, 9999999999999999}, {11, -9999999999999999, 30}};
  for (const Case& c : cases) {
    Grammar g;
    JsonSchemaGrammar json(g);
    const Grammar::Rule rule = json.compile(nlohmann::ordered_json{{"type", "integer"}, {"multipleOf", c.k}, {"minimum", c.lo}, {"maximum", c.hi}});
    std::set<std::string> prefixes;
    for (std::int64_t n = -21000; n <= 50000; ++n) {
      const std::string text = std::to_string(n);
      GrammarReader r(g, rule);
      const bool inside = c.lo <= n && n <= c.hi && n % c.k == 0;
      ASSERT_EQ(r.feed(text) && r.complete(), inside) << n << " multipleOf " << c.k << " in [" << c.lo << ", " << c.hi << "]";
      if (inside) {
        for (std::size_t i = 0; i <= text.size(); ++i) prefixes.insert(text.substr(0, i));
      }
    }
    if (c.lo < -21000 || c.hi > 50000) continue;  // the prefixes of multiples beyond the window are not listed
    std::vector<std::string> frontier = {""};
    while (!frontier.empty()) {
      const std::string p = frontier.back();
      frontier.pop_back();
      ASSERT_TRUE(prefixes.count(p)) << "'" << p << "' is accepted but no multiple of " << c.k << " in bounds begins so";
      for (const char ch : std::string("-0123456789")) {
        GrammarReader r(g, rule);
        if (r.feed(p + ch)) frontier.push_back(p + ch);
      }
    }
  }
  Grammar g;
  JsonSchemaGrammar json(g);
  const Grammar::Rule five = json.compile(nlohmann::ordered_json::parse(R"({"type": "number", "multipleOf": 5, "minimum": -2.5})"));
  for (const auto& [text, want] : {std::pair{"0", true}, std::pair{"25", true}, std::pair{"-5", false}, std::pair{"2.5", false},
                                   std::pair{"10.0", false}, std::pair{"7", false}}) {
    GrammarReader r(g, five);
    EXPECT_EQ(r.feed(text) && r.complete(), want) << text;  // whole multiples, written as integers
  }
  for (const char* refused : {R"({"type": "integer", "multipleOf": 0.5})", R"({"type": "integer", "multipleOf": 0})",
                              R"({"type": "integer", "multipleOf": 5000})", R"({"type": "integer", "multipleOf": 7, "minimum": 1, "maximum": 6})"}) {
    Grammar none;
    JsonSchemaGrammar compiler(none);
    EXPECT_THROW(compiler.compile(nlohmann::ordered_json::parse(refused)), SchemaError) << refused;
  }
}

// uniqueItems over an enum: exactly the arrays of distinct values in the enum's order within
// minItems and maxItems, and no prefix the reader takes is a dead end (minItems still reachable).
TEST(ApiJsonSchema, UniqueItemsAcceptExactlyOrderedSetsAndNeverDeadEnd) {
  const std::string letters = "abcde";
  struct Bounds {
    std::optional<int> min, max;
  };
  for (const Bounds& b : {Bounds{}, Bounds{1, {}}, Bounds{2, 3}, Bounds{{}, 2}, Bounds{5, {}}, Bounds{3, 3}, Bounds{0, 0}}) {
    nlohmann::ordered_json schema = {{"type", "array"}, {"items", {{"enum", {"a", "b", "c", "d", "e"}}}}, {"uniqueItems", true}};
    if (b.min) schema["minItems"] = *b.min;
    if (b.max) schema["maxItems"] = *b.max;
    Grammar g;
    JsonSchemaGrammar json(g);
    const Grammar::Rule rule = json.compile(schema);
    std::set<std::string> prefixes;
    std::vector<std::vector<int>> arrays = {{}};  // every array of up to 6 letters, repeats allowed
    for (std::size_t at = 0; at < arrays.size(); ++at) {
      if (arrays[at].size() < 6) {
        for (int l = 0; l < 5; ++l) {
          auto longer = arrays[at];
          longer.push_back(l);
          arrays.push_back(longer);
        }
      }
    }
    for (const auto& a : arrays) {
      std::string text = "[";
      for (std::size_t i = 0; i < a.size(); ++i) text += std::string(i ? "," : "") + "\"" + letters[static_cast<std::size_t>(a[i])] + "\"";
      text += "]";
      const bool inside = std::is_sorted(a.begin(), a.end()) && std::adjacent_find(a.begin(), a.end()) == a.end() &&
                          static_cast<int>(a.size()) >= b.min.value_or(0) && static_cast<int>(a.size()) <= b.max.value_or(5);
      GrammarReader r(g, rule);
      ASSERT_EQ(r.feed(text) && r.complete(), inside) << text << " " << schema.dump();
      if (inside) {
        for (std::size_t i = 0; i <= text.size(); ++i) prefixes.insert(text.substr(0, i));
      }
    }
    std::vector<std::string> frontier = {""};
    while (!frontier.empty()) {
      const std::string p = frontier.back();
      frontier.pop_back();
      ASSERT_TRUE(prefixes.count(p)) << "'" << p << "' is accepted but no array of " << schema.dump() << " begins so";
      for (const char ch : std::string("[],\"abcde")) {
        GrammarReader r(g, rule);
        if (r.feed(p + ch)) frontier.push_back(p + ch);
      }
    }
  }
}

// Hundreds of enum values and 128 functions stay reachable: their texts are read as one trie,
// so the reader never holds more ways than its bound.
TEST(ApiJsonSchema, ManyChoicesStayReachable) {
  nlohmann::ordered_json values = nlohmann::ordered_json::array();
  for (int i = 0; i < 300; ++i) values.push_back("value_" + std::to_string(i));
  for (int i = 0; i < 100; ++i) values.push_back(i * 7);
  values.push_back(nullptr);
  values.push_back(nlohmann::ordered_json{{"k", 1}});
  Grammar g;
  JsonSchemaGrammar json(g);
  const Grammar::Rule rule = json.compile(nlohmann::ordered_json{{"enum", values}});
  const auto accepts = [&](const std::string& text) {
    GrammarReader r(g, rule);
    return r.feed(text) && r.complete();
  };
  for (const auto& v : values) EXPECT_TRUE(accepts(v.dump())) << v.dump();
  for (const char* other : {"\"value_300\"", "\"value_\"", "8", "700", "\"value_1\" ", "{\"k\": 2}"}) EXPECT_FALSE(accepts(other)) << other;

  nlohmann::ordered_json tools = nlohmann::ordered_json::array();
  for (int i = 0; i < 128; ++i) {
    tools.push_back({{"type", "function"}, {"function", {{"name", "tool_" + std::to_string(i)}, {"parameters", {{"type", "object"}, {"properties", {{"n", {{"type", "integer"}}}}}, {"required", {"n"}}}}}}});
  }
  const auto forced = forced_calls_output(ToolCallFormat::kHermes, tools, "", false);
  const auto& output = *std::get<std::shared_ptr<const StructuredOutput>>(forced);
  for (int i = 0; i < 128; ++i) {
    GrammarReader r(output.grammar, output.start);
    const std::string text = "<tool_call>\n{\"name\": \"tool_" + std::to_string(i) + "\", \"arguments\": {\"n\": 3}}\n</tool_call>";
    EXPECT_TRUE(r.feed(text) && r.complete()) << text;
  }
  GrammarReader unknown(output.grammar, output.start);
  EXPECT_FALSE(unknown.feed("<tool_call>\n{\"name\": \"tool_128\""));
}

// The constraint's mask, walked over the vocabulary's trie with its answers kept by state, is
// the one trying every token on a copy of the reader gives, at every step of random replies on
// real tokenizers.
TEST(ApiJsonSchema, TheTrieWalkAllowsExactlyTheTokensThatFit) {
  // bloom-synth's cut vocabulary has no brackets: a string or an integer there.
  const std::pair<const char*, const char*> cases[] = {
      {"stories260K", R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
          "tags": {"type": "array", "items": {"enum": ["a", "b c", 1]}}, "n": {"type": ["integer", "null"]}},
          "required": ["name"], "additionalProperties": false})"},
      {"bloom-synth", R"({"anyOf": [{"type": "string", "maxLength": 12}, {"type": "integer"}]})"}};
  for (const auto& [model, schema] : cases) {
    auto compiled = json_schema_output(nlohmann::ordered_json::parse(schema));
    ASSERT_TRUE(std::holds_alternative<std::shared_ptr<const StructuredOutput>>(compiled)) << std::get<std::string>(compiled);
    const StructuredOutput& output = *std::get<std::shared_ptr<const StructuredOutput>>(compiled);
    const auto dir = test::models_dir() / model;
    const ModelConfig config = read_model_config(dir);
    const auto tokenizer = load_tokenizer(dir);
    const VocabTrie trie(*tokenizer, config.vocab_size);
    std::mt19937_64 random(5);
    for (int reply = 0; reply < 6; ++reply) {
      GrammarConstraint constraint(output, trie, config.eos_token_ids);
      GrammarReader shadow(output.grammar, output.start);
      for (int step = 0; step < 80; ++step) {
        std::vector<char> mask(static_cast<std::size_t>(config.vocab_size), 0);
        constraint.allowed(mask);
        std::vector<std::int32_t> fits;
        for (std::int32_t id = 0; id < config.vocab_size; ++id) {
          const bool eos = std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) != config.eos_token_ids.end();
          GrammarReader copy = shadow;
          const std::string& bytes = id < tokenizer->vocab_size() ? tokenizer->token_bytes(id) : std::string();
          const bool want = (eos && shadow.complete()) || (!bytes.empty() && copy.feed(bytes));
          ASSERT_EQ(mask[static_cast<std::size_t>(id)] != 0, want) << model << " reply " << reply << " step " << step << " id " << id;
          if (want) fits.push_back(id);
        }
        ASSERT_FALSE(fits.empty()) << model << " reply " << reply << " step " << step;
        const std::int32_t id = fits[random() % fits.size()];
        if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) != config.eos_token_ids.end()) break;
        constraint.take(id);
        ASSERT_TRUE(shadow.feed(tokenizer->token_bytes(id)));
      }
    }
  }
}

TEST(ApiTools, TheFormatIsTheOneTheTemplateTeaches) {
  EXPECT_EQ(tool_call_format_of("{% for t in tools %}{{ t | tojson }}{% endfor %}<tool_call>"), ToolCallFormat::kHermes);
  EXPECT_EQ(tool_call_format_of(R"(<|start_header_id|>{% if tools %}{"name": function name, "parameters": ...}{% endif %})"),
            ToolCallFormat::kLlama3Json);
  EXPECT_EQ(tool_call_format_of("[AVAILABLE_TOOLS]{{ tools | tojson }}<|action|>"), ToolCallFormat::kNone);
  EXPECT_EQ(tool_call_format_of("<|im_start|>{{ m.content }}"), ToolCallFormat::kNone);
  // A named tool_use template (as Hermes 2 Pro ships) runs for requests with tools.
  const ChatTemplate t = chat_template_of_text("{{ messages[0].content }}|default", {}, "{{ tools[0].function.name }}<tool_call>|tools");
  EXPECT_EQ(t.tool_format, ToolCallFormat::kHermes);
  const std::vector<ChatMessage> chat = {{"user", "Hi"}};
  EXPECT_EQ(std::get<std::string>(render_chat(t, chat, false)), "Hi|default");
  const auto tools = nlohmann::ordered_json::parse(std::string("[") + kWeatherTool + "]");
  EXPECT_EQ(std::get<std::string>(render_chat(t, chat, false, tools)), "get_weather<tool_call>|tools");
  // A model whose template is not run takes no tools and no tool messages.
  const ChatTemplate fallback = recognise_chat_template("<|im_start|>");
  EXPECT_TRUE(std::holds_alternative<jinja::TemplateError>(render_chat(fallback, chat, false, tools)));
  ChatMessage answer{"tool", "18 C"};
  answer.tool_call_id = "c";
  EXPECT_TRUE(std::holds_alternative<jinja::TemplateError>(render_chat(fallback, {chat[0], answer}, false)));
}

TEST(ApiTools, HermesCallsAreReadFromTheReply) {
  const std::set<std::string> names = {"get_weather", "local_time"};
  auto r = parse_tool_calls(ToolCallFormat::kHermes,
                            "I will check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>\n"
                            "<tool_call>\n{\"name\": \"local_time\", \"arguments\": {\"zone\": \"Europe/Paris\"}}\n</tool_call>",
                            names);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->content, "I will check.");
  ASSERT_EQ(r->calls.size(), 2u);
  EXPECT_EQ(r->calls[0].name, "get_weather");
  EXPECT_EQ(r->calls[0].arguments, R"({"city":"Paris","unit":"c"})");  // the model's key order
  EXPECT_EQ(r->calls[1].arguments, R"({"zone":"Europe/Paris"})");
  EXPECT_EQ(r->calls[0].id.rfind("call_", 0), 0u);
  EXPECT_EQ(r->calls[0].id.size(), 29u);
  EXPECT_NE(r->calls[0].id, r->calls[1].id);
  // Only calls: no content. A call the end of the reply left open still counts.
  r = parse_tool_calls(ToolCallFormat::kHermes, "<tool_call>\n{\"name\": \"local_time\", \"arguments\": {}}", names);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->content);
  EXPECT_EQ(r->calls[0].arguments, "{}");
  // Left as text: no call, a name not offered, JSON that does not parse, arguments not an object.
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kHermes, "It is sunny.", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kHermes, "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kHermes, "<tool_call>{\"name\": \"local_time\", \"arguments\": {</tool_call>", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kHermes, "<tool_call>{\"name\": \"local_time\", \"arguments\": [1]}</tool_call>", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kHermes, "<tool_call>{\"name\": \"local_time\"} </tool_call><tool_call>x</tool_call>", names));
}

TEST(ApiTools, Llama3JsonCallsAreTheWholeReply) {
  const std::set<std::string> names = {"get_weather", "local_time"};
  auto r = parse_tool_calls(ToolCallFormat::kLlama3Json, " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Lima; Peru\"}}", names);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->content);
  ASSERT_EQ(r->calls.size(), 1u);
  EXPECT_EQ(r->calls[0].arguments, R"({"city":"Lima; Peru"})");
  r = parse_tool_calls(ToolCallFormat::kLlama3Json,
                       "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}; {\"name\": \"local_time\", \"arguments\": {\"zone\": \"UTC\"}}",
                       names);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->calls.size(), 2u);
  EXPECT_EQ(r->calls[1].name, "local_time");
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kLlama3Json, "The weather: {\"name\": \"get_weather\", \"parameters\": {}}", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kLlama3Json, "{\"name\": \"get_weather\", \"parameters\": {}} and more", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kLlama3Json, "{\"weather\": 1}", names));
}

// What Mistral's and Granite's calls share: text, then the format's marker and a JSON array of
// calls (or one call) to the end, the text before as the content; left as text where text follows
// the calls, the array is empty, or the marker is missing; streamed, text up to the marker.
void expect_marked_list_calls(ToolCallFormat format, const std::string& marker, const std::set<std::string>& names) {
  SCOPED_TRACE(marker);
  auto r = parse_tool_calls(format,
                            "Checking. " + marker + "[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}, "
                            "{\"name\": \"local_time\", \"arguments\": {\"zone\": \"CET\"}}]",
                            names);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->content, "Checking.");
  ASSERT_EQ(r->calls.size(), 2u);
  EXPECT_EQ(r->calls[0].arguments, R"({"city":"Rome"})");
  EXPECT_EQ(r->calls[1].name, "local_time");
  r = parse_tool_calls(format, marker + " {\"name\": \"local_time\", \"arguments\": {}}", names);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->content);
  EXPECT_FALSE(parse_tool_calls(format, marker + "[{\"name\": \"local_time\", \"arguments\": {}}] and", names));
  EXPECT_FALSE(parse_tool_calls(format, marker + "[]", names));
  EXPECT_FALSE(parse_tool_calls(format, marker + "[{\"name\": \"get_time\", \"arguments\": {}}]", names));
  EXPECT_FALSE(parse_tool_calls(format, "[{\"name\": \"local_time\", \"arguments\": {}}]", names));
  ToolCallStream stream(format);
  EXPECT_EQ(stream.push("Checking. " + marker.substr(0, 5)), "Checking. ");
  EXPECT_EQ(stream.push(marker.substr(5) + "[{"), "");
  EXPECT_EQ(stream.held(), marker + "[{");
}

TEST(ApiTools, MistralCallsFollowTheirToken) {
  const std::set<std::string> names = {"get_weather", "local_time"};
  EXPECT_EQ(tool_call_format_of("{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}{% endif %}[TOOL_CALLS]"), ToolCallFormat::kMistral);
  expect_marked_list_calls(ToolCallFormat::kMistral, kMistralToolCalls, names);
  const auto r = parse_tool_calls(ToolCallFormat::kMistral, "[TOOL_CALLS][{\"name\": \"local_time\", \"arguments\": {}}]", names);
  ASSERT_TRUE(r);
  for (const ToolCall& c : r->calls) {  // the ids Mistral's templates accept
    EXPECT_EQ(c.id.size(), 9u);
    EXPECT_EQ(c.id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), std::string::npos);
  }
}

// Granite 3's calls: text, then <|tool_call|> (a special token, written into the text) and a JSON
// array of calls, or one; the template that writes the token teaches the format. Mistral's v11
// form is not Granite's.
TEST(ApiTools, GraniteCallsFollowTheirToken) {
  const std::set<std::string> names = {"get_weather", "local_time"};
  EXPECT_EQ(tool_call_format_of("{%- if tools %}{{- '<|start_of_role|>available_tools<|end_of_role|>' }}{{ tools | tojson }}"
                                "{%- endif %}{%- if message.tool_calls %}{{- '<|tool_call|>' + message.tool_calls | tojson }}{%- endif %}"),
            ToolCallFormat::kGranite);
  EXPECT_STREQ(tool_call_format_name(ToolCallFormat::kGranite), "granite");
  expect_marked_list_calls(ToolCallFormat::kGranite, kGraniteToolCall, names);
  const auto r = parse_tool_calls(ToolCallFormat::kGranite, "<|tool_call|>[{\"name\": \"local_time\", \"arguments\": {}}]", names);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->calls[0].id.substr(0, 5), "call_");
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kGranite, "<|tool_call|>local_time[ARGS]{}", names));
}

// GPT-OSS's harmony replies: analysis messages are the reasoning, final ones (and commentary to no
// one) the content, messages to an offered function with an object body the calls; anything else
// stays as written. Read whole, or in pieces of any size, the parts are the same.
TEST(ApiHarmony, MessagesSplitIntoReasoningContentAndCalls) {
  const std::set<std::string> names = {"get_weather", "local_time"};
  const std::string channel = "<|channel|>", message = "<|message|>", end = "<|end|>", start = "<|start|>assistant";
  struct Case {
    std::string text;
    std::optional<std::string> reasoning;
    std::string content;
    std::vector<std::pair<std::string, std::string>> calls;  // name, arguments
  };
  const std::vector<Case> cases = {
      {channel + "analysis" + message + "Say hi." + end + start + channel + "final" + message + "Hello!", "Say hi.", "Hello!", {}},
      {channel + "analysis" + message + "Need it." + end + start + channel + "commentary to=functions.get_weather <|constrain|>json" +
           message + "{\"city\": \"Paris\", \"unit\": \"celsius\"}",
       "Need it.", "", {{"get_weather", R"({"city":"Paris","unit":"celsius"})"}}},
      // the recipient before the channel; the turn's <|call|> in the text
      {" to=functions.local_time" + channel + "commentary json" + message + "{\"zone\": \"Asia/Tokyo\"}<|call|>", std::nullopt, "",
       {{"local_time", R"({"zone":"Asia/Tokyo"})"}}},
      // a preamble, then a call
      {channel + "commentary" + message + "Checking." + end + start + channel + "commentary to=functions.get_weather" + message +
           "{}",
       std::nullopt, "Checking.", {{"get_weather", "{}"}}},
      // a function not offered, and arguments that do not parse: as written
      {channel + "commentary to=functions.book_flight" + message + "{\"to\": \"Rome\"}", std::nullopt,
       channel + "commentary to=functions.book_flight" + message + "{\"to\": \"Rome\"}", {}},
      {channel + "commentary to=functions.get_weather" + message + "{\"city\": ", std::nullopt,
       channel + "commentary to=functions.get_weather" + message + "{\"city\": ", {}},
      // cut while thinking; a reply with no header (JSON a grammar forced); plain text
      {channel + "analysis" + message + "Hmm, let me", "Hmm, let me", "", {}},
      {"{\"a\": [1, 2]}", std::nullopt, "{\"a\": [1, 2]}", {}},
      {"Hello there <|end|>", std::nullopt, "Hello there <|end|>", {}},
      {"to be<|message|>x", std::nullopt, "to be<|message|>x", {}},  // text that only begins like a header
      {"t", std::nullopt, "t", {}},
      {channel + "analysis" + message + "Done." + end + start + channel + "fin", "Done.", "", {}},  // cut in a header
      {channel + "final" + message + "A <|e and a |> stay.<|return|>", std::nullopt, "A <|e and a |> stay.", {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    const HarmonyReply whole = read_harmony(c.text, names);
    EXPECT_EQ(whole.reasoning, c.reasoning);
    EXPECT_EQ(whole.content, c.content);
    ASSERT_EQ(whole.calls.size(), c.calls.size());
    for (std::size_t i = 0; i < c.calls.size(); ++i) {
      EXPECT_EQ(whole.calls[i].name, c.calls[i].first);
      EXPECT_EQ(whole.calls[i].arguments, c.calls[i].second);
      EXPECT_EQ(whole.calls[i].id.substr(0, 5), "call_");
    }
    for (std::size_t size : {std::size_t{1}, std::size_t{3}, std::size_t{7}}) {  // in pieces
      HarmonyStream stream(names);
      std::string reasoning, content;
      for (std::size_t at = 0; at < c.text.size(); at += size) {
        const HarmonyStream::Piece piece = stream.push(c.text.substr(at, size));
        reasoning += piece.reasoning;
        content += piece.content;
        // No piece shows a special token, or the start of one, of a message it reads.
        if (c.content.find("<|") == std::string::npos) {
          EXPECT_EQ(content.find("<|"), std::string::npos) << content;
        }
      }
      const HarmonyStream::Piece rest = stream.finish();
      EXPECT_EQ(reasoning + rest.reasoning, c.reasoning.value_or(""));
      EXPECT_EQ(content + rest.content, c.content);
      EXPECT_EQ(stream.calls().size(), c.calls.size());
    }
  }
  // The message serve-api returns: content null when only reasoning or calls came.
  std::string finish = "stop";
  const auto called = harmony_message(read_harmony(cases[1].text, names), true, finish);
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_TRUE(called["content"].is_null());
  EXPECT_EQ(called["reasoning_content"], "Need it.");
  EXPECT_EQ(called["tool_calls"][0]["function"]["name"], "get_weather");
  finish = "stop";
  const auto answered = harmony_message(read_harmony(cases[0].text, names), true, finish);
  EXPECT_EQ(finish, "stop");
  EXPECT_EQ(answered["content"], "Hello!");
  EXPECT_FALSE(answered.contains("tool_calls"));
  // Without tools offered, a call is text.
  EXPECT_TRUE(read_harmony(cases[1].text, {}).calls.empty());
}

// A harmony template (its messages have channels, its calls go to functions.NAME) teaches the
// harmony format; forced calls are one message to a function, its arguments the body.
TEST(ApiHarmony, TemplatesTeachItAndForcedCallsFollowIt) {
  const std::string harmony = "{{- '<|start|>system<|message|>' }}{% if tools %}namespace functions{% endif %}"
                              "{{- '<|start|>assistant to=' + 'functions.' + name + '<|channel|>commentary json<|message|>' }}";
  EXPECT_TRUE(template_writes_harmony(harmony));
  EXPECT_EQ(tool_call_format_of(harmony), ToolCallFormat::kHarmony);
  EXPECT_STREQ(tool_call_format_name(ToolCallFormat::kHarmony), "harmony");
  EXPECT_FALSE(template_writes_harmony("{{ '<|im_start|>' + message.content + '<|im_end|>' }}"));
  const auto tools = nlohmann::ordered_json::parse(R"([
      {"type": "function", "function": {"name": "run", "parameters": {"type": "object",
          "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false}}},
      {"type": "function", "function": {"name": "rest", "parameters": {"type": "object", "properties": {},
          "additionalProperties": false}}}])");
  const auto accepts = [](const StructuredOutput& output, const std::string& text) {
    GrammarReader r(output.grammar, output.start);
    return r.feed(text) && r.complete();
  };
  const auto forced = forced_calls_output(ToolCallFormat::kHarmony, tools, "", true, CallMarkers{});
  ASSERT_TRUE(std::holds_alternative<std::shared_ptr<const StructuredOutput>>(forced)) << std::get<std::string>(forced);
  const StructuredOutput& calls = *std::get<std::shared_ptr<const StructuredOutput>>(forced);
  const std::string run = "<|channel|>commentary to=functions.run <|constrain|>json<|message|>{\"n\": 3}";
  EXPECT_TRUE(accepts(calls, run));
  EXPECT_TRUE(accepts(calls, "<|channel|>commentary to=functions.rest <|constrain|>json<|message|>{}"));
  EXPECT_FALSE(accepts(calls, run + "<|end|><|start|>assistant" + run));  // one call: it ends the turn
  EXPECT_FALSE(accepts(calls, "<|channel|>commentary to=functions.walk <|constrain|>json<|message|>{}"));
  EXPECT_FALSE(accepts(calls, "<|channel|>commentary to=functions.run <|constrain|>json<|message|>{\"n\": \"3\"}"));
  const HarmonyReply read = read_harmony(run, {"run", "rest"});
  ASSERT_EQ(read.calls.size(), 1u);
  EXPECT_EQ(read.calls[0].arguments, R"({"n":3})");
  // Where the tokens decode to nothing, the grammar reads markers for them.
  const auto marked = forced_calls_output(ToolCallFormat::kHarmony, tools, "rest", false, CallMarkers{-1, -1, -1, false, 7, 8, 9});
  const StructuredOutput& one = *std::get<std::shared_ptr<const StructuredOutput>>(marked);
  std::vector<std::int32_t> ids = one.markers;
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::int32_t>{7, 8, 9}));
  const auto m = [&](std::int32_t id) {
    const auto at = std::find(one.markers.begin(), one.markers.end(), id) - one.markers.begin();
    return std::string(1, static_cast<char>(marker_byte(static_cast<std::size_t>(at))));
  };
  EXPECT_TRUE(accepts(one, m(7) + "commentary to=functions.rest " + m(8) + "json" + m(9) + "{}"));
  EXPECT_FALSE(accepts(one, "<|channel|>commentary to=functions.rest <|constrain|>json<|message|>{}"));
}

// Without max_tokens a reply may run to the end of the context; a LongRoPE model's, to the end of
// its original context while the prompt is within it (its session keeps the short factors).
TEST(ApiRequest, TheDefaultLengthKeepsAShortConversationOfALongRopeModelShort) {
  ModelConfig plain;
  plain.max_position_embeddings = 128;
  EXPECT_EQ(default_max_tokens(plain, 10), 118);
  ModelConfig phi = plain;
  phi.rope_scaling.long_freq_factors = {1.0, 2.0};
  phi.rope_scaling.original_max_position_embeddings = 32;
  EXPECT_EQ(default_max_tokens(phi, 10), 22);
  EXPECT_FALSE(phi.long_rope_for(10 + 22));
  EXPECT_EQ(default_max_tokens(phi, 32), 96);  // a prompt that fills the original context: the whole context
  EXPECT_EQ(default_max_tokens(phi, 40), 88);
}

// Mistral's tokenizer v11 on: a call each, `[TOOL_CALLS]name[ARGS]{...}`, [CALL_ID]id before
// [ARGS] in some templates, and without [ARGS] where the text lost it.
TEST(ApiTools, MistralV11CallsNameTheirFunctionBeforeTheArguments) {
  const std::set<std::string> names = {"get_weather", "local_time"};
  auto r = parse_tool_calls(ToolCallFormat::kMistral,
                            R"(Checking.[TOOL_CALLS]get_weather[ARGS]{"city": "Rome", "note": "a } and a [TOOL_CALLS]"})"
                            "[TOOL_CALLS]local_time[CALL_ID]a1B2c3D4e[ARGS]{\"zone\": {\"name\": \"CET\"}}\n",
                            names);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->content, "Checking.");
  ASSERT_EQ(r->calls.size(), 2u);
  EXPECT_EQ(r->calls[0].name, "get_weather");
  EXPECT_EQ(r->calls[0].arguments, R"({"city":"Rome","note":"a } and a [TOOL_CALLS]"})");
  EXPECT_EQ(r->calls[1].name, "local_time");
  EXPECT_EQ(r->calls[1].arguments, R"({"zone":{"name":"CET"}})");
  EXPECT_EQ(r->calls[1].id.size(), 9u);
  r = parse_tool_calls(ToolCallFormat::kMistral, "[TOOL_CALLS]local_time{}", names);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->calls.size(), 1u);
  EXPECT_EQ(r->calls[0].arguments, "{}");
  EXPECT_FALSE(r->content);
  // Left as text: an unknown function, arguments that are not an object or do not close, a name
  // without arguments, text after the last call.
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kMistral, "[TOOL_CALLS]get_time[ARGS]{}", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kMistral, "[TOOL_CALLS]get_weather[ARGS]\"Rome\"", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kMistral, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Ro", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kMistral, "[TOOL_CALLS]get_weather", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kMistral, "[TOOL_CALLS]local_time[ARGS]{} and then", names));
  EXPECT_FALSE(parse_tool_calls(ToolCallFormat::kMistral, "[TOOL_CALLS]local_time[ARGS]{}[TOOL_CALLS]", names));
  std::string finish = "stop";
  const nlohmann::json m = assistant_message(ToolCallFormat::kMistral, "[TOOL_CALLS]local_time[ARGS]{\"zone\": \"UTC\"}",
                                             names, true, finish);
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], R"({"zone":"UTC"})");
}

// The reply as the API answers it: a message with its calls, or the text as it was.
TEST(ApiTools, RepliesWithCallsAreAnsweredAsOpenAIDoes) {
  const std::set<std::string> names = {"get_weather", "local_time"};
  const std::string two = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>\n"
                          "<tool_call>{\"name\": \"local_time\", \"arguments\": {\"zone\": \"UTC\"}}</tool_call>";
  std::string finish = "stop";
  nlohmann::json m = assistant_message(ToolCallFormat::kHermes, two, names, true, finish);
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_TRUE(m["refusal"].is_null());
  ASSERT_EQ(m["tool_calls"].size(), 2u);
  EXPECT_EQ(m["tool_calls"][0]["type"], "function");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], R"({"city":"Oslo"})");
  EXPECT_FALSE(m["tool_calls"][0].contains("index"));
  finish = "stop";
  EXPECT_EQ(assistant_message(ToolCallFormat::kHermes, two, names, false, finish)["tool_calls"].size(), 1u);  // parallel_tool_calls: false
  finish = "length";
  m = assistant_message(ToolCallFormat::kHermes, "<tool_call>{\"name\": \"get_weather\", \"argu", names, true, finish);
  EXPECT_EQ(finish, "length");  // cut short: the text as it is
  EXPECT_EQ(m["content"], "<tool_call>{\"name\": \"get_weather\", \"argu");
  EXPECT_FALSE(m.contains("tool_calls"));
  finish = "stop";
  m = assistant_message(ToolCallFormat::kNone, two, names, true, finish);  // no tools in the request
  EXPECT_EQ(m["content"], two);
  EXPECT_EQ(finish, "stop");
  // Streamed: the held end of the reply becomes the calls' delta, indexed.
  finish = "stop";
  const std::string held = two.substr(0) + " Done.";
  nlohmann::json d = held_delta(ToolCallFormat::kHermes, held, names, true, finish);
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(d["content"], "Done.");
  ASSERT_EQ(d["tool_calls"].size(), 2u);
  EXPECT_EQ(d["tool_calls"][1]["index"], 1);
  EXPECT_EQ(d["tool_calls"][1]["function"]["arguments"], R"({"zone":"UTC"})");
  finish = "stop";
  EXPECT_EQ(held_delta(ToolCallFormat::kHermes, "<tool_call>oops", names, true, finish), (nlohmann::json{{"content", "<tool_call>oops"}}));
  EXPECT_EQ(finish, "stop");
}

// JSON mode's grammar (actors/api/structured_output.h) read byte by byte.
class JsonObjectText {
 public:
  bool feed(unsigned char c) { return reader_.feed(c); }
  bool feed(const std::string& text) { return reader_.feed(text); }
  bool complete() const { return reader_.complete(); }

 private:
  GrammarReader reader_{json_object_output()->grammar, json_object_output()->start};
};

// JSON mode's grammar: every prefix of an object is taken, the first byte no object can continue
// with is refused, and complete() holds only once the top-level object has closed.
TEST(ApiJsonMode, ObjectsAreReadByteByByte) {
  const std::vector<std::string> objects = {
      "{}", " {\"a\": 1}", "{\"a\":[1,2.5,-3e+2,0.1E-9,true,false,null,\"x\\\"\\u00e9\\n\"],\"b\":{\"c\":{}}}",
      "{\n  \"k\": [ ],\n\t\"l\": \"\xc3\xa9\"\n}", "{\"a\" : -0 , \"b\":[[[]]]}"};
  for (const std::string& text : objects) {
    JsonObjectText p;
    for (std::size_t i = 0; i < text.size(); ++i) {
      EXPECT_FALSE(p.complete()) << text << " at " << i;
      ASSERT_TRUE(p.feed(static_cast<unsigned char>(text[i]))) << text << " at " << i;
    }
    EXPECT_TRUE(p.complete()) << text;
    EXPECT_TRUE(nlohmann::json::parse(text).is_object()) << text;
    EXPECT_FALSE(p.feed(' '));  // nothing after the object
  }
  // Each refused where the first bad byte is (the state stays before it).
  const std::vector<std::pair<std::string, std::size_t>> bad = {
      {"[1]", 0}, {"\"a\"", 0}, {"{a", 1}, {"{\"a\" 1", 5}, {"{\"a\":}", 5}, {"{\"a\":1,}", 7}, {"{\"a\":01", 6},
      {"{\"a\":1.}", 7}, {"{\"a\":1e}", 7}, {"{\"a\":tru}", 8}, {"{\"a\":\"\\x\"}", 7}, {"{\"a\":\"\\u12g", 10},
      {"{\"a\":[1}", 7}, {"{\"a\":{]", 6}, {"{\"a\":\"\x01\"}", 6}, {"{\"a\":-}", 6}, {"{}}", 2}, {"{\"a\":1]", 6}};
  for (const auto& [text, at] : bad) {
    JsonObjectText p;
    for (std::size_t i = 0; i < at; ++i) ASSERT_TRUE(p.feed(static_cast<unsigned char>(text[i]))) << text << " at " << i;
    EXPECT_FALSE(p.feed(static_cast<unsigned char>(text[at]))) << text << " at " << at;
    EXPECT_EQ(p.complete(), text == "{}}") << text;
  }
  // Strings are UTF-8 (a character may come in pieces) with proper surrogate escapes.
  EXPECT_TRUE(JsonObjectText().feed("{\"\xf0\x9f\x98"));
  EXPECT_FALSE(JsonObjectText().feed("{\"\xf0\x9f\x98\""));   // the character is unfinished
  EXPECT_FALSE(JsonObjectText().feed("{\"\xc0\xaf"));           // overlong
  EXPECT_FALSE(JsonObjectText().feed("{\"\xed\xa0\x80"));      // a surrogate in UTF-8
  EXPECT_TRUE(JsonObjectText().feed("{\"\\ud83d\\ude00\":1}"));
  EXPECT_FALSE(JsonObjectText().feed("{\"\\ud83d\""));          // a high surrogate alone
  EXPECT_FALSE(JsonObjectText().feed("{\"\\ude00"));             // a low one alone
  EXPECT_FALSE(JsonObjectText().feed("{\"\\ud83d\\n"));
  // White space between tokens: one space, or a newline and up to 20 spaces or tabs.
  EXPECT_TRUE(JsonObjectText().feed("{\n" + std::string(20, ' ') + "\"a\":1}"));
  EXPECT_FALSE(JsonObjectText().feed("{\n" + std::string(21, ' ')));
  EXPECT_FALSE(JsonObjectText().feed("{  "));
  EXPECT_FALSE(JsonObjectText().feed("{\t"));
  EXPECT_TRUE(JsonObjectText().feed("{\"a  b\": \"  \"}"));  // inside strings, anything
  // Nesting past the limit.
  std::string deep = "{\"a\":";
  for (int i = 1; i < JsonSchemaGrammar::kMaxNesting; ++i) deep += "[";
  JsonObjectText p;
  EXPECT_TRUE(p.feed(deep));
  EXPECT_FALSE(p.feed('['));
  EXPECT_TRUE(p.feed(']'));
}

// Whatever bytes it takes whole, a complete object is one nlohmann parses (random mutations of
// valid objects).
TEST(ApiJsonMode, WhatItCompletesParses) {
  const std::string base = "{\"a\": [1, -2.5e3, true, null, \"s\\\"t\"], \"b\": {\"c\": false}}";
  const std::string alphabet = "{}[]\":,-+.0123456789eEtrufalsn\\ \n\tx";
  Rng rng(7);
  int completed = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    std::string text = base;
    for (int k = 0; k < 3; ++k) {
      const auto at = static_cast<std::size_t>(rng.next() % text.size());
      const char c = alphabet[rng.next() % alphabet.size()];
      switch (rng.next() % 3) {
        case 0: text[at] = c; break;
        case 1: text.insert(at, 1, c); break;
        default: text.erase(at, 1);
      }
    }
    JsonObjectText p;
    const bool took = p.feed(text);
    if (took && p.complete()) {
      ++completed;
      EXPECT_TRUE(nlohmann::json::accept(text)) << text;
    } else if (!took) {
      // Refused text: nlohmann rejects it too unless it only broke the white-space rule.
      if (nlohmann::json::accept(text) && nlohmann::json::parse(text).is_object()) {
        EXPECT_NE(text.find_first_of("\t\n "), std::string::npos) << text;
      }
    }
  }
  EXPECT_GT(completed, 100);
}

// The stream shows what cannot be a call at once and holds the rest, whatever the pieces.
TEST(ApiTools, StreamedTextIsHeldFromWhereACallMayBegin) {
  const auto split = [](ToolCallFormat format, const std::string& text, std::size_t piece) {
    ToolCallStream stream(format);
    std::string shown;
    for (std::size_t at = 0; at < text.size(); at += piece) shown += stream.push(text.substr(at, piece));
    return std::make_pair(shown, stream.held());
  };
  const std::string hermes = "Checking <tool<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>";
  for (std::size_t piece : {1u, 2u, 5u, 100u}) {
    EXPECT_EQ(split(ToolCallFormat::kHermes, hermes, piece),
              std::make_pair(std::string("Checking <tool"), hermes.substr(hermes.find("<tool_call>")))) << piece;
    EXPECT_EQ(split(ToolCallFormat::kHermes, "No call here <tool", piece), std::make_pair(std::string("No call here "), std::string("<tool")));
    EXPECT_EQ(split(ToolCallFormat::kLlama3Json, " \n{\"name\": \"f\"}", piece), std::make_pair(std::string(), std::string(" \n{\"name\": \"f\"}")));
    EXPECT_EQ(split(ToolCallFormat::kLlama3Json, "  It is {sunny}.", piece), std::make_pair(std::string("  It is {sunny}."), std::string()));
    EXPECT_EQ(split(ToolCallFormat::kNone, "<tool_call>{", piece), std::make_pair(std::string("<tool_call>{"), std::string()));
  }
}

TEST(ApiStopStrings, CutAtTheFirstStopWhateverThePieces) {
  const std::string text = "Once upon a time. The end. More";
  for (std::size_t piece = 1; piece <= 5; ++piece) {
    StopStrings stops({"The end", "e. T"});
    std::string shown;
    for (std::size_t i = 0; i < text.size() && !stops.stopped(); i += piece) {
      const std::string out = stops.push(text.substr(i, piece));
      shown += out;
      EXPECT_EQ(text.compare(0, shown.size(), shown), 0);
      EXPECT_EQ(shown.find("e. T"), std::string::npos);
    }
    shown += stops.finish();
    EXPECT_TRUE(stops.stopped());
    EXPECT_EQ(shown, "Once upon a tim") << "pieces of " << piece;
  }
  StopStrings none({"xyz"});
  std::string shown = none.push("abx");
  EXPECT_EQ(shown, "ab");  // "x" may begin the stop string
  shown += none.push("y");
  shown += none.finish();
  EXPECT_EQ(shown, "abxy");
}

TEST(ApiChatTemplate, CommonFormsAreRecognisedAndRendered) {
  EXPECT_EQ(recognise_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}...").form, ChatForm::kChatMl);
  EXPECT_EQ(recognise_chat_template("{{ '<|start_header_id|>' + message['role'] }}").form, ChatForm::kLlama3);
  EXPECT_EQ(recognise_chat_template("{{ bos_token + '[INST] ' + content }}").form, ChatForm::kLlama2);
  EXPECT_EQ(recognise_chat_template("{{ '<|user|>\\n' + message['content'] }}").form, ChatForm::kZephyr);
  EXPECT_EQ(recognise_chat_template("{{ something else }}").form, ChatForm::kPlain);
  const std::vector<ChatMessage> m = {{"system", "Be kind."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Tell"}};
  EXPECT_EQ(render_recognised({ChatForm::kPlain, {}}, m), "Be kind.\n\nUser: Hi\nAssistant: Hello\nUser: Tell\nAssistant:");
  EXPECT_EQ(render_recognised({ChatForm::kChatMl, {}}, m),
            "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
            "<|im_start|>user\nTell<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_recognised({ChatForm::kLlama2, {}}, m),
            "[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Tell [/INST]");
  EXPECT_EQ(render_recognised({ChatForm::kLlama3, {}}, {{"user", "Hi"}}),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(render_recognised({ChatForm::kZephyr, {}}, {{"user", "Hi"}}), "<|user|>\nHi</s>\n<|assistant|>\n");
  // A folder without tokenizer_config.json, and one whose config has no template: plain.
  EXPECT_EQ(chat_template_of_model(test::models_dir() / "stories260K").form, ChatForm::kPlain);
  EXPECT_EQ(chat_template_of_model(test::models_dir() / "tinystories-656K").form, ChatForm::kPlain);
  test::TempDir dir;
  test::write_file(dir / "tokenizer_config.json", R"({"chat_template": "{% for m in messages %}<|im_start|>{% endfor %}"})");
  std::string jinja;
  EXPECT_EQ(chat_template_of_model(dir.path(), &jinja).form, ChatForm::kChatMl);
  EXPECT_NE(jinja.find("<|im_start|>"), std::string::npos);
  // chat_template.jinja, where a folder has one, is the template (as transformers takes it);
  // chat_template.json (a multimodal processor's) where the config names none.
  test::write_file(dir / "chat_template.jinja", "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}\n");
  EXPECT_EQ(chat_template_of_model(dir.path(), &jinja).form, ChatForm::kLlama2);
  EXPECT_EQ(jinja, "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}\n");
  std::filesystem::remove(dir / "chat_template.jinja");
  test::write_file(dir / "tokenizer_config.json", R"({"eos_token": "</s>"})");
  test::write_file(dir / "chat_template.json", R"({"chat_template": "{{ bos_token }}{% for m in messages %}<|im_start|>{% endfor %}"})");
  EXPECT_EQ(chat_template_of_model(dir.path(), &jinja).form, ChatForm::kChatMl);
  test::write_file(dir / "chat_template.json", R"({"chat_template": 5})");
  EXPECT_THROW(chat_template_of_model(dir.path()), Error);
  std::filesystem::remove(dir / "chat_template.json");
  test::write_file(dir / "tokenizer_config.json", "{broken");
  EXPECT_THROW(chat_template_of_model(dir.path()), Error);
}

// A ChatML template that writes its own system message when a chat has none (Qwen2's form: one
// literal, with Jinja's \\n or a real newline): that text, before the chat, only then; a template
// whose system block holds the first message's content has none.
TEST(ApiChatTemplate, AChatMlTemplatesOwnSystemMessageIsWrittenWhenTheChatHasNone) {
  const std::string qwen_like =
      "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
      "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
      "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
      "{%- endfor %}";
  const ChatTemplate t = recognise_chat_template(qwen_like);
  EXPECT_EQ(t.form, ChatForm::kChatMl);
  EXPECT_EQ(t.default_system, "You are a helpful assistant.");
  EXPECT_EQ(render_recognised(t, {{"user", "Hi"}}),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(render_recognised(t, {{"system", "Be brief."}, {"user", "Hi"}}),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(recognise_chat_template("{{ \"<|im_start|>system\nLine one\\tand two<|im_end|>\" }}").default_system,
            "Line one\tand two");
  EXPECT_EQ(recognise_chat_template("{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>' }}").default_system, "");
  EXPECT_EQ(recognise_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}...").default_system, "");
}

// Llama 3 templates trim each message; Llama 3.1's and later open every chat with a system block
// holding the knowledge cutoff and a date (today's when the template calls strftime_now, else its
// date_string), the chat's first system message inside it.
TEST(ApiChatTemplate, Llama31sKnowledgeDateHeaderAndTrimmedMessages) {
  const std::string llama30 =
      "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
      "+ message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor %}";
  const ChatTemplate t30 = recognise_chat_template(llama30);
  EXPECT_TRUE(t30.trims);
  EXPECT_EQ(t30.knowledge_cutoff, "");
  EXPECT_EQ(render_recognised(t30, {{"system", " Be brief.\n"}, {"user", "Hi "}}),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  const std::string header =
      "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
      "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}{{- system_message }}{{- \"<|eot_id|>\" }}"
      "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
      "message['content'] | trim + '<|eot_id|>' }}{%- endfor %}";
  const ChatTemplate t31 =
      recognise_chat_template("{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}" + header);
  EXPECT_EQ(t31.knowledge_cutoff, "December 2023");
  EXPECT_FALSE(t31.date_from_clock);
  EXPECT_EQ(describe_chat_template(t31), "llama3 with its knowledge-date header (26 Jul 2024)");
  const std::string system_block = "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ";
  EXPECT_EQ(render_recognised(t31, {{"system", " Be brief. "}, {"user", "Hi"}, {"system", "late"}}),
            system_block + "26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>system<|end_header_id|>\n\nlate<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(render_recognised(t31, {{"user", "Hi"}}),
            system_block + "26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  const ChatTemplate t32 = recognise_chat_template(
      "{%- if strftime_now is defined %}{%- set date_string = strftime_now(\"%d %b %Y\") %}{%- else %}"
      "{%- set date_string = \"26 Jul 2024\" %}{%- endif %}" + header);
  EXPECT_TRUE(t32.date_from_clock);
  EXPECT_EQ(describe_chat_template(t32), "llama3 with its knowledge-date header (today's date)");
  char today[32];
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::strftime(today, sizeof(today), "%d %b %Y", &local);
  const std::string rendered = render_recognised(t32, {{"user", "Hi"}});
  EXPECT_EQ(rendered.substr(0, system_block.size() + std::strlen(today)), system_block + today) << rendered;
  // A header whose date cannot be read is left out rather than written wrong.
  EXPECT_EQ(recognise_chat_template(header).knowledge_cutoff, "");
}

// A model's template is run as Jinja: its own logic decides the text (here a system message kept
// for the last user turn, as Mistral's templates do), it sees the special tokens, and a BOS it
// writes first is left to the caller when the model adds one. One the engine cannot parse falls
// back to its recognised form and says why; a template's raise_exception reaches the caller.
// Reasoning: the text between <think> and </think> at the reply's start (or from it, when the
// prompt opened thinking) is reasoning; the rest, without the white space after the tag, is the
// answer. Streamed in pieces cut anywhere, the pieces join to the same split.
TEST(ApiReasoning, ThinkingIsSplitFromTheAnswerWholeAndStreamed) {
  struct Case {
    std::string text;
    bool open;
    std::optional<std::string> reasoning;
    std::string content;
  };
  const Case cases[] = {
      {"<think>\nLet me see.\n</think>\n\nIt is 4.", false, "\nLet me see.\n", "It is 4."},
      {"  <think>a</think>b", false, "a", "b"},
      {"Plain answer, no <think> here", false, std::nullopt, "Plain answer, no <think> here"},
      {"  plain", false, std::nullopt, "  plain"},
      {"<think>cut off while thinking", false, "cut off while thinking", ""},
      {"Okay, so 2+2.\n</think>\n\n4", true, "Okay, so 2+2.\n", "4"},
      {"still thinking </thi", true, "still thinking </thi", ""},
      {"</think></think>x", true, "", "</think>x"},
      {"<thi", false, std::nullopt, "<thi"},
      {"\n\n", false, std::nullopt, "\n\n"},
      {"<think></think>   ", false, "", ""},
      {"<think>é 中</think>\n<tool_call>{}</tool_call>", false, "é 中", "<tool_call>{}</tool_call>"},
  };
  for (const Case& c : cases) {
    const ReasoningSplit whole = split_reasoning(c.text, c.open);
    EXPECT_EQ(whole.reasoning, c.reasoning) << c.text;
    EXPECT_EQ(whole.content, c.content) << c.text;
    for (std::size_t cut = 0; cut <= c.text.size(); ++cut) {
      for (std::size_t cut2 = cut; cut2 <= c.text.size(); cut2 += 3) {
        ReasoningStream stream(c.open);
        std::string reasoning, content;
        for (const std::string& piece : {c.text.substr(0, cut), c.text.substr(cut, cut2 - cut), c.text.substr(cut2)}) {
          const ReasoningStream::Piece p = stream.push(piece);
          reasoning += p.reasoning;
          content += p.content;
        }
        const ReasoningStream::Piece rest = stream.finish();
        reasoning += rest.reasoning;
        content += rest.content;
        EXPECT_EQ(stream.thought(), c.reasoning.has_value()) << c.text << " cut at " << cut << ", " << cut2;
        EXPECT_EQ(reasoning, c.reasoning.value_or("")) << c.text << " cut at " << cut << ", " << cut2;
        EXPECT_EQ(content, c.content) << c.text << " cut at " << cut << ", " << cut2;
      }
    }
  }
  EXPECT_TRUE(prompt_opens_thinking("<|Assistant|><think>\n"));
  EXPECT_FALSE(prompt_opens_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
  EXPECT_FALSE(prompt_opens_thinking("<|im_start|>assistant\n"));
  EXPECT_TRUE(template_thinks("{{ '<think>\\n\\n</think>\\n\\n' }}"));
  EXPECT_FALSE(template_thinks("{{ '<think>' }}"));
}

// chat_template_kwargs reach the template as variables (Qwen3's enable_thinking), and may not
// set the server's own.
TEST(ApiReasoning, ChatTemplateKwargsAreTemplateVariables) {
  const ChatTemplate t = chat_template_of_text(
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
      "{% if add_generation_prompt %}<|im_start|>assistant\n"
      "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}",
      {});
  ASSERT_NE(t.jinja, nullptr) << t.jinja_error;
  EXPECT_TRUE(t.thinks);
  const std::vector<ChatMessage> chat = {{"user", "Hi"}};
  EXPECT_EQ(std::get<std::string>(render_chat(t, chat, false)), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const CompletionRequest r = ok(chat_with(R"("chat_template_kwargs": {"enable_thinking": false})"), true);
  EXPECT_EQ(std::get<std::string>(render_chat(t, chat, false, nullptr, r.template_kwargs)),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(refused(chat_with(R"("chat_template_kwargs": ["enable_thinking"])"), true).param, "chat_template_kwargs");
  EXPECT_EQ(refused(chat_with(R"("chat_template_kwargs": {"messages": []})"), true).param, "chat_template_kwargs.messages");
  EXPECT_EQ(refused(chat_with(R"("chat_template_kwargs": {"add_generation_prompt": false})"), true).param,
            "chat_template_kwargs.add_generation_prompt");
  EXPECT_EQ(refused(R"({"model": "m", "prompt": "x", "chat_template_kwargs": {}})", false).param, "chat_template_kwargs");

  // An assistant message sent back with its reasoning_content: the template sees it.
  const ChatTemplate past = chat_template_of_text(
      "{% for m in messages %}{% if m.reasoning_content is defined %}<think>{{ m.reasoning_content }}</think>{% endif %}"
      "{{ m.content }}|{% endfor %}",
      {});
  const CompletionRequest back = ok(R"({"model": "m", "messages": [{"role": "user", "content": "2+2?"},
      {"role": "assistant", "content": "4", "reasoning_content": "add them"}, {"role": "assistant", "content": "x", "reasoning_content": null},
      {"role": "user", "content": "ok"}]})", true);
  EXPECT_EQ(std::get<std::string>(render_chat(past, back.messages, false)), "2+2?|<think>add them</think>4|x|ok|");
  EXPECT_EQ(refused(R"({"model": "m", "messages": [{"role": "assistant", "content": "4", "reasoning_content": 3}]})", true).param,
            "messages[0].reasoning_content");
  EXPECT_EQ(refused(R"({"model": "m", "messages": [{"role": "user", "content": "4", "reasoning_content": "x"}]})", true).param,
            "messages[0].reasoning_content");
}

TEST(ApiChatTemplate, AModelsTemplateRunsAsJinja) {
  const std::string mistral_like =
      "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}"
      "{%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}"
      "{%- for message in loop_messages %}"
      "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
      "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif %}"
      "{%- if message['role'] == 'user' %}"
      "{%- if loop.last and system is defined %}{{- '[INST]' + system + '\\n\\n' + message['content'] + '[/INST]' }}"
      "{%- else %}{{- '[INST]' + message['content'] + '[/INST]' }}{%- endif %}"
      "{%- else %}{{- message['content'] + eos_token }}{%- endif %}{%- endfor %}";
  const ChatTemplate t = chat_template_of_text(mistral_like, {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
  ASSERT_NE(t.jinja, nullptr) << t.jinja_error;
  EXPECT_EQ(describe_chat_template(t), "the model's own (Jinja)");
  const std::vector<ChatMessage> chat = {{"system", "Sys"}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Again"}};
  const auto with_bos = render_chat(t, chat, false);
  ASSERT_TRUE(std::holds_alternative<std::string>(with_bos));
  EXPECT_EQ(std::get<std::string>(with_bos), "<s>[INST]Hi[/INST]Hello</s>[INST]Sys\n\nAgain[/INST]");
  EXPECT_EQ(std::get<std::string>(render_chat(t, chat, true)), "[INST]Hi[/INST]Hello</s>[INST]Sys\n\nAgain[/INST]");
  const auto refused = render_chat(t, {{"user", "a"}, {"user", "b"}}, true);
  ASSERT_TRUE(std::holds_alternative<jinja::TemplateError>(refused));
  EXPECT_EQ(std::get<jinja::TemplateError>(refused).message, "Conversation roles must alternate user/assistant/user/assistant/...");

  const ChatTemplate fallback = chat_template_of_text("{% include 'chatml.jinja' %}<|im_start|>", {});
  EXPECT_EQ(fallback.jinja, nullptr);
  EXPECT_EQ(fallback.form, ChatForm::kChatMl);
  EXPECT_NE(fallback.jinja_error.find("'include' is not supported"), std::string::npos) << fallback.jinja_error;
  EXPECT_NE(describe_chat_template(fallback).find("chatml (recognised: the model's template could not be run: line 1:"), std::string::npos)
      << describe_chat_template(fallback);
  EXPECT_EQ(std::get<std::string>(render_chat(fallback, {{"user", "Hi"}}, true)), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");

  // A folder's special tokens: tokenizer_config.json's (strings or AddedToken objects), else
  // special_tokens_map.json's.
  test::TempDir dir;
  test::write_file(dir / "tokenizer_config.json",
                   R"({"chat_template": "{{ bos_token }}|{{ eos_token }}|{{ unk_token }}|{{ pad_token is defined }}", )"
                   R"("bos_token": {"content": "<B>", "lstrip": false}, "eos_token": "<E>"})");
  test::write_file(dir / "special_tokens_map.json", R"({"unk_token": "<U>", "eos_token": "<not this>"})");
  const ChatTemplate folder = chat_template_of_model(dir.path());
  ASSERT_NE(folder.jinja, nullptr) << folder.jinja_error;
  EXPECT_EQ(std::get<std::string>(render_chat(folder, {{"user", "Hi"}}, false)), "<B>|<E>|<U>|False");
}

// A GGUF file's template is its tokenizer.chat_template metadata.
TEST(ApiChatTemplate, AGgufFilesTemplateIsItsMetadata) {
  const test::TempDir dir;
  std::string bytes = "GGUF";
  const auto u32 = [&](std::uint32_t v) { bytes.append(reinterpret_cast<const char*>(&v), 4); };
  const auto u64 = [&](std::uint64_t v) { bytes.append(reinterpret_cast<const char*>(&v), 8); };
  const auto str = [&](const std::string& s) { u64(s.size()); bytes += s; };
  u32(3);
  u64(0);  // tensors
  u64(4);  // metadata
  str("general.architecture");
  u32(8);
  str("llama");
  str("tokenizer.chat_template");
  u32(8);
  str("{{ bos_token }}{% for m in messages %}{{ '<|im_start|>' + m.role }}{% endfor %}|{{ eos_token is defined }}");
  str("tokenizer.ggml.tokens");
  u32(9);  // an array
  u32(8);  // of strings
  u64(3);
  str("<unk>");
  str("<B>");
  str("x");
  str("tokenizer.ggml.bos_token_id");
  u32(4);  // uint32
  u32(1);
  bytes.resize((bytes.size() + 31) / 32 * 32, '\0');
  test::write_file(dir / "chat.gguf", bytes);
  std::string jinja;
  const ChatTemplate t = chat_template_of_model(dir / "chat.gguf", &jinja);
  EXPECT_EQ(t.form, ChatForm::kChatMl);
  EXPECT_NE(jinja.find("<|im_start|>"), std::string::npos);
  // The special tokens are the vocabulary's at the ids the metadata names.
  EXPECT_EQ(std::get<std::string>(render_chat(t, {{"user", "Hi"}}, false)), "<B><|im_start|>user|False");
  EXPECT_EQ(chat_template_of_model(test::models_dir() / "stories260K" / "original" / "stories260K.gguf").form, ChatForm::kPlain);
}

TEST(ApiLogprobs, AreTheLogSoftmaxAndTheLikeliestAlternatives) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f};
  const TokenLogprob t = token_logprob(logits.data(), 4, 2, 3);
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x));
  EXPECT_NEAR(t.logprob, 2.0 - std::log(sum), 1e-7);  // f32 exponentials (kernels/softmax.h), summed in double
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, 1);  // ties: the lower id first
  EXPECT_EQ(t.top[1].first, 3);
  EXPECT_EQ(t.top[2].first, 2);
  EXPECT_TRUE(token_logprob(logits.data(), 4, 0, 0).top.empty());
}

// stories260K in this process at f32: its config, ends, blocks and tokenizer.
struct Stories260K {
  std::filesystem::path dir = test::models_dir() / "stories260K";
  ModelConfig config = read_model_config(dir);
  Checkpoint checkpoint = Checkpoint::open(dir);
  ModelEnds ends = ModelEnds::load(checkpoint, config, DType::kF32);
  BlockStack blocks = BlockStack::load(checkpoint, config, 0, config.num_layers, DType::kF32);
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(dir);
};

// A choice's text is what the generation loop writes after the prompt, its streamed pieces add up
// to it, and a stop string ends it early with finish_reason "stop".
// JSON mode on a real model: every choice is the likeliest token whose bytes keep the text a JSON
// object's beginning (worked out here from JsonObjectText and the token bytes, as the mask should be),
// the reply stays such a beginning, and a draft changes no id.
TEST(ApiChoice, JsonModeChoosesTheLikeliestTokenThatKeepsAnObject) {
  const Stories260K loaded;
  const ModelConfig& config = loaded.config;
  const ModelEnds& ends = loaded.ends;
  const BlockStack& blocks = loaded.blocks;
  const auto& tokenizer = loaded.tokenizer;
  ASSERT_EQ(missing_json_token(*tokenizer), 0);
  GenerationRequest g;
  for (const std::int32_t id : tokenizer->encode("Tell me about a cat.")) g.prompt_ids.push_back(id);
  g.prompt_ids.insert(g.prompt_ids.begin(), config.bos_token_id);
  g.max_new_tokens = 60;
  const VocabTrie trie(*tokenizer, config.vocab_size);
  GrammarConstraint constraint(*json_object_output(), trie, config.eos_token_ids);
  g.constraint = &constraint;
  std::vector<std::vector<float>> seen;
  LocalPipeline pipeline(blocks, session_capacity(config, g));
  const auto result = generate(ends, pipeline, g, [](std::int32_t) {}, nullptr,
                               [&](std::int32_t, const float* logits) { seen.emplace_back(logits, logits + config.vocab_size); });
  ASSERT_EQ(seen.size(), result.generated_ids.size());
  JsonObjectText text;
  for (std::size_t step = 0; step < seen.size(); ++step) {
    std::int32_t best = -1;
    for (std::int32_t id = 0; id < config.vocab_size; ++id) {
      const std::string& bytes = tokenizer->token_bytes(id);
      JsonObjectText next = text;
      const bool eos = std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) != config.eos_token_ids.end();
      const bool fits = text.complete() ? eos : !bytes.empty() && next.feed(bytes);
      if (fits && (best < 0 || seen[step][id] > seen[step][best])) best = id;
    }
    ASSERT_EQ(result.generated_ids[step], best) << "step " << step;
    if (!text.complete()) {
      ASSERT_TRUE(text.feed(tokenizer->token_bytes(best)));
    }
  }
  EXPECT_EQ(tokenizer->decode(result.generated_ids).find_first_not_of(' '), tokenizer->decode(result.generated_ids).find('{'));
  GrammarConstraint again(*json_object_output(), trie, config.eos_token_ids);
  g.constraint = &again;
  ModelDraft draft(blocks, 1, ends, session_capacity(config, g));
  Speculation speculation{&draft, 8, {}};
  LocalPipeline second(blocks, session_capacity(config, g));
  EXPECT_EQ(generate(ends, second, g, [](std::int32_t) {}, &speculation).generated_ids, result.generated_ids);
}

// A JSON schema on a real model: every greedy choice is the likeliest token the grammar allows
// (worked out here by trying every token on a copy of the reader), the reply is an object the
// schema validates, sampled replies too, and a draft changes no id.
// Forced calls in the form of Mistral's tokenizer v11: each call [TOOL_CALLS]name[ARGS]{...}, the
// special tokens (which decode to nothing) allowed exactly where the grammar reads their marker
// bytes; a greedy reply of stories260K under the constraint is such a call, which the parser reads
// back. The array form of v0.3 opens with its marker the same way.
TEST(ApiChoice, ForcedMistralV11CallsWriteTheirSpecialTokensWhereTheGrammarReadsThem) {
  const Stories260K loaded;
  const ModelConfig& config = loaded.config;
  const auto& tokenizer = loaded.tokenizer;
  // BOS, which decodes to nothing, stands for [TOOL_CALLS], and the token of "." for [ARGS]:
  // none of the calls' texts below holds a '.', so only the marker can allow it.
  const std::int32_t calls = config.bos_token_id;
  ASSERT_TRUE(tokenizer->token_bytes(calls).empty());
  const std::vector<std::int32_t> dot = tokenizer->encode(".");
  const std::int32_t args = dot.back();
  ASSERT_EQ(tokenizer->token_bytes(args), ".");
  const auto tools = nlohmann::ordered_json::parse(R"([
      {"type": "function", "function": {"name": "run", "parameters": {"type": "object",
          "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false}}},
      {"type": "function", "function": {"name": "rest", "parameters": {"type": "object", "properties": {},
          "additionalProperties": false}}}])");
  const auto parallel = forced_calls_output(ToolCallFormat::kMistral, tools, "", true, CallMarkers{calls, args, -1, true});
  ASSERT_TRUE(std::holds_alternative<std::shared_ptr<const StructuredOutput>>(parallel)) << std::get<std::string>(parallel);
  const StructuredOutput& several = *std::get<std::shared_ptr<const StructuredOutput>>(parallel);
  EXPECT_EQ(several.markers, (std::vector<std::int32_t>{calls, args}));
  const std::string tc(1, static_cast<char>(marker_byte(0))), ar(1, static_cast<char>(marker_byte(1)));
  const auto accepts = [](const StructuredOutput& output, const std::string& text) {
    GrammarReader r(output.grammar, output.start);
    return r.feed(text) && r.complete();
  };
  EXPECT_TRUE(accepts(several, tc + "run" + ar + "{\"n\": 3}"));
  EXPECT_TRUE(accepts(several, tc + "run" + ar + "{\"n\": 3}" + tc + "rest" + ar + "{}"));
  EXPECT_FALSE(accepts(several, "run" + ar + "{\"n\": 3}"));
  EXPECT_FALSE(accepts(several, tc + "run{\"n\": 3}"));
  EXPECT_FALSE(accepts(several, tc + "run[ARGS]{\"n\": 3}"));  // the token, not its name's text
  EXPECT_FALSE(accepts(several, tc + "[{\"name\": \"run\", \"arguments\": {\"n\": 3}}]"));
  EXPECT_FALSE(accepts(several, tc + "run" + ar + "{\"n\": \"3\"}"));

  // A greedy reply under the constraint: one call, the markers where the grammar reads them.
  const auto one = forced_calls_output(ToolCallFormat::kMistral, tools, "run", false, CallMarkers{calls, args, -1, true});
  const auto output = std::get<std::shared_ptr<const StructuredOutput>>(one);
  const VocabTrie trie(*tokenizer, config.vocab_size);
  GrammarConstraint constraint(*output, trie, config.eos_token_ids);
  std::vector<char> allowed(static_cast<std::size_t>(config.vocab_size), 0);
  constraint.allowed(allowed);
  EXPECT_EQ(std::count(allowed.begin(), allowed.end(), 1), 1);  // [TOOL_CALLS] alone
  EXPECT_EQ(allowed[static_cast<std::size_t>(calls)], 1);
  GenerationRequest g;
  g.prompt_ids = tokenizer->encode("Tom ran to the park.");
  g.prompt_ids.insert(g.prompt_ids.begin(), config.bos_token_id);
  g.max_new_tokens = 60;
  g.constraint = &constraint;
  LocalPipeline pipeline(loaded.blocks, session_capacity(config, g));
  const GenerationResult result = generate(loaded.ends, pipeline, g, [](std::int32_t) {});
  ASSERT_EQ(result.stop, StopReason::kEos);
  std::string text;
  for (std::size_t i = 0; i + 1 < result.generated_ids.size(); ++i) {
    const std::int32_t id = result.generated_ids[i];
    text += id == calls ? kMistralToolCalls : id == args ? kMistralArgs : tokenizer->token_bytes(id);
  }
  EXPECT_EQ(result.generated_ids.front(), calls);
  EXPECT_EQ(std::count(result.generated_ids.begin(), result.generated_ids.end(), args), 1) << text;
  const auto parsed = parse_tool_calls(ToolCallFormat::kMistral, text, {"run", "rest"});
  ASSERT_TRUE(parsed.has_value()) << text;
  ASSERT_EQ(parsed->calls.size(), 1u) << text;
  EXPECT_EQ(parsed->calls[0].name, "run");
  EXPECT_TRUE(nlohmann::json::parse(parsed->calls[0].arguments)["n"].is_number_integer()) << text;

  // v0.3's array, after its one [TOOL_CALLS].
  const auto array = forced_calls_output(ToolCallFormat::kMistral, tools, "", false, CallMarkers{calls, args, -1, false});
  const StructuredOutput& listed = *std::get<std::shared_ptr<const StructuredOutput>>(array);
  EXPECT_EQ(listed.markers, (std::vector<std::int32_t>{calls}));
  EXPECT_TRUE(accepts(listed, tc + "[{\"name\": \"run\", \"arguments\": {\"n\": 3}}]"));
  EXPECT_FALSE(accepts(listed, "[{\"name\": \"run\", \"arguments\": {\"n\": 3}}]"));
  EXPECT_FALSE(accepts(listed, tc + "run" + ar + "{\"n\": 3}"));

  // Granite's array after its <|tool_call|>, several calls when parallel: the marker where the
  // token decodes to nothing, its text where it does not.
  const auto granite = forced_calls_output(ToolCallFormat::kGranite, tools, "", true, CallMarkers{calls, -1, -1, false});
  ASSERT_TRUE(std::holds_alternative<std::shared_ptr<const StructuredOutput>>(granite)) << std::get<std::string>(granite);
  const StructuredOutput& granite_calls = *std::get<std::shared_ptr<const StructuredOutput>>(granite);
  EXPECT_EQ(granite_calls.markers, (std::vector<std::int32_t>{calls}));
  EXPECT_TRUE(accepts(granite_calls, tc + "[{\"name\": \"run\", \"arguments\": {\"n\": 3}}]"));
  EXPECT_TRUE(accepts(granite_calls, tc + "[{\"name\": \"run\", \"arguments\": {\"n\": 3}}, {\"name\": \"rest\", \"arguments\": {}}]"));
  EXPECT_FALSE(accepts(granite_calls, "[{\"name\": \"run\", \"arguments\": {\"n\": 3}}]"));
  EXPECT_FALSE(accepts(granite_calls, tc + "[{\"name\": \"run\", \"parameters\": {\"n\": 3}}]"));
  const auto as_text = forced_calls_output(ToolCallFormat::kGranite, tools, "rest", false, CallMarkers{});
  const StructuredOutput& text_marker = *std::get<std::shared_ptr<const StructuredOutput>>(as_text);
  EXPECT_TRUE(text_marker.markers.empty());
  EXPECT_TRUE(accepts(text_marker, "<|tool_call|>[{\"name\": \"rest\", \"arguments\": {}}]"));
  EXPECT_FALSE(accepts(text_marker, "<|tool_call|>[{\"name\": \"run\", \"arguments\": {\"n\": 3}}]"));
}

TEST(ApiChoice, JsonSchemaRepliesAreTheLikeliestTheSchemaAllows) {
  const Stories260K loaded;
  const ModelConfig& config = loaded.config;
  const ModelEnds& ends = loaded.ends;
  const BlockStack& blocks = loaded.blocks;
  const auto& tokenizer = loaded.tokenizer;
  auto compiled = json_schema_output(nlohmann::ordered_json::parse(R"({"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}, "pet": {"enum": ["cat", "dog"]}},
      "required": ["name", "age", "pet"], "additionalProperties": false})"));
  ASSERT_TRUE(std::holds_alternative<std::shared_ptr<const StructuredOutput>>(compiled));
  const auto output = std::get<std::shared_ptr<const StructuredOutput>>(compiled);
  const VocabTrie trie(*tokenizer, config.vocab_size);
  const auto is_eos = [&](std::int32_t id) {
    return std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) != config.eos_token_ids.end();
  };
  GenerationRequest g;
  g.prompt_ids = tokenizer->encode("Tom had a dog.");
  g.prompt_ids.insert(g.prompt_ids.begin(), config.bos_token_id);
  g.max_new_tokens = 120;
  GrammarConstraint constraint(*output, trie, config.eos_token_ids);
  g.constraint = &constraint;
  std::vector<std::vector<float>> seen;
  LocalPipeline pipeline(blocks, session_capacity(config, g));
  const auto result = generate(ends, pipeline, g, [](std::int32_t) {}, nullptr,
                               [&](std::int32_t, const float* logits) { seen.emplace_back(logits, logits + config.vocab_size); });
  ASSERT_EQ(result.stop, StopReason::kEos);
  GrammarReader text(output->grammar, output->start);
  for (std::size_t step = 0; step < seen.size(); ++step) {
    std::int32_t best = -1;
    for (std::int32_t id = 0; id < config.vocab_size; ++id) {
      GrammarReader next = text;
      const bool fits = (is_eos(id) && text.complete()) || (!tokenizer->token_bytes(id).empty() && next.feed(tokenizer->token_bytes(id)));
      if (fits && (best < 0 || seen[step][id] > seen[step][best])) best = id;
    }
    ASSERT_EQ(result.generated_ids[step], best) << "step " << step;
    if (!is_eos(best)) {
      ASSERT_TRUE(text.feed(tokenizer->token_bytes(best)));
    }
  }
  const auto check_reply = [](const std::string& reply) {
    const auto j = nlohmann::json::parse(reply, nullptr, false);
    ASSERT_TRUE(j.is_object()) << reply;
    EXPECT_EQ(j.size(), 3u) << reply;
    EXPECT_TRUE(j["name"].is_string() && j["name"].get<std::string>().size() <= 8 * 4) << reply;
    EXPECT_TRUE(j["age"].is_number_integer()) << reply;
    EXPECT_TRUE(j["pet"] == "cat" || j["pet"] == "dog") << reply;
  };
  std::vector<std::int32_t> ids(result.generated_ids.begin(), result.generated_ids.end() - 1);
  check_reply(tokenizer->decode(ids));
  GrammarConstraint again(*output, trie, config.eos_token_ids);
  g.constraint = &again;
  ModelDraft draft(blocks, 1, ends, session_capacity(config, g));
  Speculation speculation{&draft, 8, {}};
  LocalPipeline second(blocks, session_capacity(config, g));
  EXPECT_EQ(generate(ends, second, g, [](std::int32_t) {}, &speculation).generated_ids, result.generated_ids);
  // Through the API's choice runner: greedy and sampled replies are objects the schema validates.
  ServedModel model{"m", &config, tokenizer.get(), &ends,
                    [&](std::int64_t capacity) { return std::make_unique<LocalPipeline>(blocks, capacity); }, true,
                    ChatForm::kPlain};
  CompletionRequest r;
  r.structure = output;
  for (const double temperature : {0.0, 1.0}) {
    r.temperature = temperature;
    for (std::uint64_t seed = 0; seed < 3; ++seed) {
      const ChoiceResult c = run_choice(model, nullptr, g.prompt_ids, r, 200, seed, {});
      EXPECT_EQ(c.finish_reason, "stop") << c.text;
      check_reply(c.text);
    }
  }
}

TEST(ApiChoice, TextPiecesAndStopsFollowTheGenerationLoop) {
  const Stories260K loaded;
  const ModelConfig& config = loaded.config;
  const ModelEnds& ends = loaded.ends;
  const BlockStack& blocks = loaded.blocks;
  const auto& tokenizer = loaded.tokenizer;
  ServedModel model{"m", &config, tokenizer.get(), &ends,
                    [&](std::int64_t capacity) { return std::make_unique<LocalPipeline>(blocks, capacity); }, true,
                    ChatForm::kPlain};
  CompletionRequest r;
  r.temperature = 0;
  r.logprobs = 2;
  const std::vector<std::int32_t> prompt = prompt_ids_of(model, "Once upon a time");
  std::string pieces;
  std::size_t streamed_tokens = 0;
  const ChoiceResult c = run_choice(model, nullptr, prompt, r, 20, 0, [&](const ChoiceDelta& d) {
    pieces += d.text;
    streamed_tokens += d.tokens.size();
    return true;
  });
  // The loop's own text, as `sepal generate` writes it after the prompt.
  GenerationRequest g{prompt, {}, 0, 20, SamplingParams{}, {}, 0};
  LocalPipeline pipeline(blocks, session_capacity(config, g));
  TextStream stream(*tokenizer);
  std::string all;
  for (const std::int32_t id : prompt) all += stream.push(id);
  const std::size_t prompt_text = all.size();
  const GenerationResult want = generate(ends, pipeline, g, [&](std::int32_t id) { all += stream.push(id); });
  all += stream.finish();
  EXPECT_EQ(c.text, all.substr(prompt_text));
  EXPECT_EQ(pieces, c.text);
  EXPECT_EQ(c.completion_tokens, static_cast<std::int64_t>(want.generated_ids.size()));
  EXPECT_EQ(c.finish_reason, "length");
  ASSERT_EQ(c.tokens.size(), want.generated_ids.size());
  EXPECT_EQ(streamed_tokens, c.tokens.size());
  for (std::size_t i = 0; i < c.tokens.size(); ++i) {
    EXPECT_EQ(c.tokens[i].id, want.generated_ids[i]);
    EXPECT_EQ(c.tokens[i].top.at(0).first, want.generated_ids[i]);  // greedy: the likeliest
  }
  const std::string stop = c.text.substr(c.text.size() / 2, 3);
  r.stop = {stop};
  const ChoiceResult stopped = run_choice(model, nullptr, prompt, r, 20, 0, {});
  EXPECT_EQ(stopped.text, c.text.substr(0, c.text.find(stop)));
  EXPECT_EQ(stopped.finish_reason, "stop");
  // A client that leaves: the choice ends at once.
  int calls = 0;
  EXPECT_THROW(run_choice(model, nullptr, prompt, r, 20, 0, [&](const ChoiceDelta&) { return ++calls < 2; }), ClientGone);
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace sepal::api
