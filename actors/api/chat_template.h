#pragma once
// Chat messages as one prompt. A model's tokenizer_config.json (or a GGUF file's
// tokenizer.chat_template) may carry a Jinja `chat_template`; rather than run Jinja, the common
// forms are recognised by their markers and rendered here: ChatML (<|im_start|>), Llama 3
// (<|start_header_id|>), Llama 2 and Mistral ([INST]) and Zephyr (<|user|>). A ChatML template
// that writes a system message of its own when the chat has none (Qwen2's "You are a helpful
// assistant.") is read for that text. A Llama 3 template that trims each message does so here too;
// one that opens every chat with a system block holding its knowledge cutoff and today's date
// (Llama 3.1 and later) gets that block, the chat's first system message inside it, with today's
// date when the template asks for the clock (strftime_now, as transformers gives it) and its
// fixed date_string otherwise. Anything else, or no template, gets the plain form:
//
//   {system messages, one per paragraph}\n\n      (when there are any)
//   User: {content}\n
//   Assistant: {content}\n
//   ...
//   Assistant:
//
// The BOS token is not part of the text: the caller starts the ids with it as for any prompt.
//
// Thread-safety: plain functions and values.

#include <filesystem>
#include <string>
#include <vector>

#include "actors/api/openai_request.h"

namespace sepal::api {

enum class ChatForm { kPlain, kChatMl, kLlama3, kLlama2, kZephyr };

/// "plain", "chatml", "llama3", "llama2", "zephyr".
const char* chat_form_name(ChatForm form);

/// A recognised template.
struct ChatTemplate {
  ChatForm form = ChatForm::kPlain;
  /// ChatML: the system message the template writes when the chat does not start with one
  /// (empty: none).
  std::string default_system;
  /// Llama 3: each message's content is trimmed of surrounding whitespace (Jinja's `trim`).
  bool trims = false;
  /// Llama 3.1 and later: "December 2023" for "Cutting Knowledge Date: December 2023" (empty:
  /// the template writes no such system block).
  std::string knowledge_cutoff;
  /// With knowledge_cutoff: today's date ("%d %b %Y", local time) when true, else fixed_date.
  bool date_from_clock = false;
  std::string fixed_date;
};

/// "chatml with its default system message", "llama3 with its knowledge-date header (today's
/// date)": what serve-api and generate --chat print.
std::string describe_chat_template(const ChatTemplate& chat_template);

/// The template of a chat_template text (empty: plain).
ChatTemplate recognise_chat_template(const std::string& jinja);

/// The template of a model: a folder's tokenizer_config.json chat_template, or a GGUF file's
/// tokenizer.chat_template (a file that does not parse is an error: sepal::Error naming it);
/// plain when there is none. `jinja` gets the template text found, or stays empty.
ChatTemplate chat_template_of_model(const std::filesystem::path& model, std::string* jinja = nullptr);

/// The prompt text of `messages`, ending where the assistant's reply begins.
std::string render_chat(const ChatTemplate& chat_template, const std::vector<ChatMessage>& messages);

}  // namespace sepal::api
