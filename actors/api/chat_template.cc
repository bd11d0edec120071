#include "actors/api/chat_template.h"

#include <algorithm>
#include <ctime>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "actors/api/harmony.h"
#include "actors/api/reasoning.h"
#include "kernels/error.h"
#include "model/gguf.h"

namespace sepal::api {

const char* chat_form_name(ChatForm form) {
  switch (form) {
    case ChatForm::kPlain: return "plain";
    case ChatForm::kChatMl: return "chatml";
    case ChatForm::kLlama3: return "llama3";
    case ChatForm::kLlama2: return "llama2";
    case ChatForm::kZephyr: return "zephyr";
  }
  return "?";
}

namespace {

// A system message written as one literal in the template, '<|im_start|>system\n TEXT <|im_end|>'
// (Jinja's \n escape, or a real newline), where the chat has none of its own: the text, or empty
// when the template writes none (its system block takes the first message's content instead).
std::string chatml_default_system(const std::string& jinja) {
  for (const std::string& open : {std::string("'<|im_start|>system\\n"), std::string("'<|im_start|>system\n"),
                                  std::string("\"<|im_start|>system\\n"), std::string("\"<|im_start|>system\n")}) {
    const char quote = open[0];
    for (std::size_t at = jinja.find(open); at != std::string::npos; at = jinja.find(open, at + 1)) {
      const std::size_t start = at + open.size();
      const std::size_t end = jinja.find("<|im_end|>", start);
      const std::size_t closing = jinja.find(quote, start);
      if (end == std::string::npos || closing < end || end == start) continue;  // not one literal
      std::string text = jinja.substr(start, end - start);
      if (text.find_first_of("{}") != std::string::npos) continue;
      // Jinja string escapes that such a text may hold.
      std::string out;
      for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\\' && i + 1 < text.size()) {
          const char c = text[++i];
          out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
          out += text[i];
        }
      }
      return out;
    }
  }
  return {};
}

// The text of a Jinja string literal from `at` up to (not including) `stop`: the closing quote,
// or "\\n" for a line's end (Jinja's escape, or a newline in the literal itself); empty when the
// text runs into anything else that ends a literal, or into the template's end.
std::string literal_until(const std::string& jinja, std::size_t at, const std::string& stop) {
  std::string out;
  for (std::size_t i = at; i < jinja.size(); ++i) {
    if (jinja.compare(i, stop.size(), stop) == 0 || (stop == "\\n" && jinja[i] == '\n')) return out;
    if (jinja[i] == '"' || jinja[i] == '\'' || jinja[i] == '\n' || jinja[i] == '{' || jinja[i] == '}') return {};
    out += jinja[i];
  }
  return {};
}

// Llama 3.1's system block: "Cutting Knowledge Date: CUTOFF\n" and "Today Date: " + date_string,
// the date from strftime_now when the template calls it, else its `set date_string = "..."`.
void read_knowledge_header(const std::string& jinja, ChatTemplate& t) {
  const std::string cutoff_marker = "Cutting Knowledge Date: ";
  const std::size_t cutoff = jinja.find(cutoff_marker);
  if (cutoff == std::string::npos || jinja.find("Today Date: ") == std::string::npos) return;
  t.knowledge_cutoff = literal_until(jinja, cutoff + cutoff_marker.size(), "\\n");
  if (t.knowledge_cutoff.empty()) return;
  t.date_from_clock = jinja.find("strftime_now") != std::string::npos;
  for (const std::string& set : {std::string("set date_string = \""), std::string("set date_string = '")}) {
    if (const std::size_t at = jinja.find(set); at != std::string::npos && t.fixed_date.empty())
      t.fixed_date = literal_until(jinja, at + set.size(), set.substr(set.size() - 1));
  }
  if (!t.date_from_clock && t.fixed_date.empty()) t.knowledge_cutoff.clear();  // a date we cannot read
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char text[32];
  return std::strftime(text, sizeof(text), "%d %b %Y", &local) > 0 ? std::string(text) : std::string();
}

std::string trimmed(const std::string& s, bool trim) {
  if (!trim) return s;
  const char* space = " \t\n\r\f\v";
  const std::size_t first = s.find_first_not_of(space);
  if (first == std::string::npos) return {};
  return s.substr(first, s.find_last_not_of(space) - first + 1);
}

}  // namespace

std::string describe_chat_template(const ChatTemplate& t) {
  if (t.jinja) return t.harmony ? "the model's own (Jinja), harmony's channels" : "the model's own (Jinja)";
  std::string text = chat_form_name(t.form);
  if (!t.default_system.empty()) text += " with its default system message";
  if (!t.knowledge_cutoff.empty())
    text += " with its knowledge-date header (" + (t.date_from_clock ? std::string("today's date") : t.fixed_date) + ")";
  if (!t.jinja_error.empty()) text += " (recognised: the model's template could not be run: " + t.jinja_error + ")";
  return text;
}

ChatTemplate recognise_chat_template(const std::string& jinja) {
  ChatTemplate t;
  if (jinja.find("<|im_start|>") != std::string::npos) {
    t.form = ChatForm::kChatMl;
    t.default_system = chatml_default_system(jinja);
  } else if (jinja.find("<|start_header_id|>") != std::string::npos) {
    t.form = ChatForm::kLlama3;
    t.trims = jinja.find("trim") != std::string::npos;
    read_knowledge_header(jinja, t);
  } else if (jinja.find("[INST]") != std::string::npos) {
    t.form = ChatForm::kLlama2;
  } else if (jinja.find("<|user|>") != std::string::npos) {
    t.form = ChatForm::kZephyr;
  }
  return t;
}

ChatTemplate chat_template_of_text(const std::string& jinja, nlohmann::ordered_json special_tokens,
                                   const std::string& tool_use) {
  ChatTemplate t = recognise_chat_template(jinja);
  if (special_tokens.is_object()) t.special_tokens = std::move(special_tokens);
  if (jinja.empty()) return t;
  auto parsed = jinja::Template::parse(jinja);
  if (auto* error = std::get_if<jinja::TemplateError>(&parsed)) {
    t.jinja_error = error->message;
    return t;
  }
  t.jinja = std::make_shared<const jinja::Template>(std::move(std::get<jinja::Template>(parsed)));
  t.tool_format = tool_call_format_of(jinja);
  t.mistral_v11 = t.tool_format == ToolCallFormat::kMistral && jinja.find(kMistralArgs) != std::string::npos;
  t.thinks = template_thinks(jinja);
  t.harmony = template_writes_harmony(jinja);
  if (!tool_use.empty()) {
    auto tool_parsed = jinja::Template::parse(tool_use);
    if (auto* tool_template = std::get_if<jinja::Template>(&tool_parsed)) {
      t.tool_use = std::make_shared<const jinja::Template>(std::move(*tool_template));
      t.tool_format = tool_call_format_of(tool_use);
      t.mistral_v11 = t.tool_format == ToolCallFormat::kMistral && tool_use.find(kMistralArgs) != std::string::npos;
    }
  }
  return t;
}

namespace {

constexpr const char* kSpecialTokens[] = {"bos_token", "eos_token", "unk_token", "pad_token"};

nlohmann::json read_json_object(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json parsed = nlohmann::json::parse(text.str(), nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) fail(file.string(), ": not a JSON object");
  return parsed;
}

// A special token as tokenizer_config.json and special_tokens_map.json write it: a string, or an
// AddedToken object's "content".
std::string token_text(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return {};
  const nlohmann::json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

}  // namespace

ChatTemplate chat_template_of_model(const std::filesystem::path& model, std::string* jinja) {
  nlohmann::ordered_json special = nlohmann::ordered_json::object();
  if (is_gguf_file(model)) {
    const GgufFile file = GgufFile::open(model);
    const std::string found = file.string("tokenizer.chat_template").value_or("");
    const std::string tool_use = file.string("tokenizer.chat_template.tool_use").value_or("");
    if (jinja) *jinja = found;
    const auto* tokens = file.array("tokenizer.ggml.tokens");
    const char* ids[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                         "tokenizer.ggml.padding_token_id"};
    for (std::size_t i = 0; i < 4; ++i) {
      const auto id = file.integer(ids[i]);
      if (!tokens || !id || *id < 0 || static_cast<std::size_t>(*id) >= tokens->size()) continue;
      if (const auto* text = std::get_if<std::string>(&(*tokens)[static_cast<std::size_t>(*id)])) special[kSpecialTokens[i]] = *text;
    }
    return chat_template_of_text(found, std::move(special), tool_use);
  }
  if (!std::filesystem::is_directory(model)) return {};
  const std::filesystem::path file = model / "tokenizer_config.json";
  const nlohmann::json config = std::filesystem::exists(file) ? read_json_object(file) : nlohmann::json::object();
  nlohmann::json token_map = nlohmann::json::object();
  if (std::filesystem::exists(model / "special_tokens_map.json")) token_map = read_json_object(model / "special_tokens_map.json");
  for (const char* key : kSpecialTokens) {
    std::string text = token_text(config, key);
    if (text.empty()) text = token_text(token_map, key);
    if (!text.empty()) special[key] = text;
  }
  std::string found, tool_use;
  if (config.contains("chat_template")) {
    const nlohmann::json& t = config["chat_template"];
    if (t.is_string()) {
      found = t.get<std::string>();
    } else if (t.is_array()) {  // named templates: the default one, and the one for tools
      for (const auto& named : t) {
        if (!named.is_object() || !named.contains("template") || !named["template"].is_string()) continue;
        const std::string name = named.value("name", "");
        if (name == "default") found = named["template"].get<std::string>();
        if (name == "tool_use") tool_use = named["template"].get<std::string>();
      }
    }
  }
  // Newer folders keep the template in a file of its own, which transformers takes over the
  // config's; multimodal models' processors, in chat_template.json.
  if (const auto own = model / "chat_template.jinja"; std::filesystem::exists(own)) {
    std::ifstream in(own, std::ios::binary);
    if (!in.is_open()) fail(own.string(), ": cannot be read");
    std::stringstream text;
    text << in.rdbuf();
    found = text.str();
  } else if (const auto processor = model / "chat_template.json"; found.empty() && std::filesystem::exists(processor)) {
    const nlohmann::json t = read_json_object(processor);
    if (!t.contains("chat_template") || !t["chat_template"].is_string()) fail(processor.string(), ": no chat_template string");
    found = t["chat_template"].get<std::string>();
  }
  if (jinja) *jinja = found;
  return chat_template_of_text(found, std::move(special), tool_use);
}

std::variant<std::string, jinja::TemplateError> render_chat(const ChatTemplate& chat_template,
                                                            const std::vector<ChatMessage>& messages,
                                                            bool model_adds_bos, const nlohmann::ordered_json& tools,
                                                            const nlohmann::ordered_json& kwargs) {
  if (chat_template.jinja) {
    // The messages as transformers hands them over: their fields as the request sent them; the
    // variables apply_chat_template's keyword arguments would set, then the server's own.
    nlohmann::ordered_json context = kwargs.is_object() ? kwargs : nlohmann::ordered_json::object();
    context["messages"] = nlohmann::ordered_json::array();
    for (const ChatMessage& m : messages) {
      nlohmann::ordered_json message = {{"role", m.role}, {"content", m.content}};
      if (!m.name.empty()) message["name"] = m.name;
      if (!m.tool_calls.is_null()) message["tool_calls"] = m.tool_calls;
      if (!m.tool_call_id.empty()) message["tool_call_id"] = m.tool_call_id;
      if (m.reasoning_content) {
        message["reasoning_content"] = *m.reasoning_content;
        if (chat_template.harmony) message["thinking"] = *m.reasoning_content;  // what GPT-OSS's template reads
      }
      context["messages"].push_back(std::move(message));
    }
    context["add_generation_prompt"] = true;
    context["tools"] = tools;
    context["documents"] = nullptr;
    for (const auto& [key, value] : chat_template.special_tokens.items()) context[key] = value;
    const jinja::Template& run = !tools.is_null() && chat_template.tool_use ? *chat_template.tool_use : *chat_template.jinja;
    auto rendered = run.render(context);
    if (auto* text = std::get_if<std::string>(&rendered)) {
      const std::string bos = chat_template.special_tokens.value("bos_token", std::string());
      if (model_adds_bos && !bos.empty() && text->compare(0, bos.size(), bos) == 0) text->erase(0, bos.size());
    }
    return rendered;
  }
  const bool tool_messages = std::any_of(messages.begin(), messages.end(), [](const ChatMessage& m) {
    return m.role == "tool" || !m.tool_calls.is_null();
  });
  if (!tools.is_null() || tool_messages) {
    return jinja::TemplateError{"tools and tool calls need the model's own chat template, and this model's is " +
                                    describe_chat_template(chat_template),
                                false};
  }
  return render_recognised(chat_template, messages);
}

std::string render_recognised(const ChatTemplate& chat_template, const std::vector<ChatMessage>& messages) {
  std::string out;
  switch (chat_template.form) {
    case ChatForm::kChatMl:
      if (!chat_template.default_system.empty() && (messages.empty() || messages.front().role != "system")) {
        out += "<|im_start|>system\n" + chat_template.default_system + "<|im_end|>\n";
      }
      for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      return out + "<|im_start|>assistant\n";
    case ChatForm::kLlama3: {
      std::size_t first = 0;
      if (!chat_template.knowledge_cutoff.empty()) {
        // The first message, when it is a system message, goes inside the template's own block.
        std::string system;
        if (!messages.empty() && messages.front().role == "system") {
          system = trimmed(messages.front().content, true);
          first = 1;
        }
        out += "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: " + chat_template.knowledge_cutoff +
               "\nToday Date: " + (chat_template.date_from_clock ? today() : chat_template.fixed_date) + "\n\n" +
               system + "<|eot_id|>";
      }
      for (std::size_t i = first; i < messages.size(); ++i) {
        out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" +
               trimmed(messages[i].content, chat_template.trims) + "<|eot_id|>";
      }
      return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
    }
    case ChatForm::kZephyr:
      for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + "</s>\n";
      return out + "<|assistant|>\n";
    case ChatForm::kLlama2: {
      // System text goes into the first user turn; each user turn opens an [INST] block.
      std::string system;
      bool first_turn = true;
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          system += (system.empty() ? "" : "\n") + m.content;
        } else if (m.role == "user") {
          if (!first_turn) out += "<s>";
          out += "[INST] ";
          if (!system.empty()) {
            out += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
            system.clear();
          }
          out += m.content + " [/INST]";
          first_turn = false;
        } else {
          out += " " + m.content + " </s>";
        }
      }
      return out;
    }
    case ChatForm::kPlain: {
      std::string system;
      for (const ChatMessage& m : messages) {
        if (m.role == "system") system += (system.empty() ? "" : "\n\n") + m.content;
      }
      if (!system.empty()) out += system + "\n\n";
      for (const ChatMessage& m : messages) {
        if (m.role == "user") out += "User: " + m.content + "\n";
        else if (m.role == "assistant") out += "Assistant: " + m.content + "\n";
      }
      return out + "Assistant:";
    }
  }
  return out;
}

}  // namespace sepal::api
