#pragma once
// Chat messages as one prompt. A model's tokenizer_config.json (or a GGUF file's
// tokenizer.chat_template) carries its Jinja `chat_template`: it is run as transformers runs it
// (actors/api/jinja_template.h), with the messages, add_generation_prompt, tools and documents
// (none) and the tokenizer's special tokens (bos_token, eos_token, unk_token, pad_token), so the
// prompt is the text apply_chat_template gives. A template the engine cannot parse falls back to
// the common forms, recognised by their markers: ChatML (<|im_start|>; with the system message
// the template writes when a chat has none, Qwen2's "You are a helpful assistant."), Llama 3
// (<|start_header_id|>; messages trimmed where the template trims, and Llama 3.1's system block
// with its knowledge cutoff and today's date, or its fixed date_string), Llama 2 and Mistral
// ([INST]) and Zephyr (<|user|>). Anything else, or no template, gets the plain form:
//
//   {system messages, one per paragraph}\n\n      (when there are any)
//   User: {content}\n
//   Assistant: {content}\n
//   ...
//   Assistant:
//
// BOS: the caller starts every prompt's ids with the model's BOS token where the model has one,
// so a BOS the template writes at the start is left out of the text then.
//
// Thread-safety: plain functions and values; a ChatTemplate may render on several threads.

#include <filesystem>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/api/jinja_template.h"
#include "actors/api/openai_request.h"
#include "actors/api/tool_calls.h"

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
  /// The template itself, run (null: the model has none, or it did not parse and `form` is used).
  std::shared_ptr<const jinja::Template> jinja;
  /// Why a template the model has could not be run (empty otherwise).
  std::string jinja_error;
  /// The model's named "tool_use" template, run instead of `jinja` for requests with tools, as
  /// transformers does (null: none, or it did not parse).
  std::shared_ptr<const jinja::Template> tool_use;
  /// The tool-call format the template that runs with tools teaches (kNone: requests with tools
  /// are refused).
  ToolCallFormat tool_format = ToolCallFormat::kNone;
  /// Mistral: that template writes calls as tokenizer v11 does (`[TOOL_CALLS]name[ARGS]{...}`).
  bool mistral_v11 = false;
  /// Whether the template teaches thinking in <think> ... </think> (actors/api/reasoning.h).
  bool thinks = false;
  /// Whether the template writes harmony (GPT-OSS: messages with channels; actors/api/harmony.h):
  /// replies are read as harmony messages, their special tokens written into the text.
  bool harmony = false;
  /// The special tokens a template sees: {"bos_token": "<s>", "eos_token": "</s>", ...}.
  nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object();
};

/// "the model's own (Jinja)", "chatml with its default system message (recognised: the template
/// could not be run: ...)": what serve-api and generate --chat print.
std::string describe_chat_template(const ChatTemplate& chat_template);

/// The form of a chat_template text recognised by its markers (empty: plain); no Jinja is run.
ChatTemplate recognise_chat_template(const std::string& jinja);

/// A chat_template text to run, with its recognised form as the fallback should it not parse, and
/// the model's "tool_use" template (empty: none).
ChatTemplate chat_template_of_text(const std::string& jinja, nlohmann::ordered_json special_tokens,
                                   const std::string& tool_use = {});

/// The template of a model: a folder's chat_template.jinja, else its tokenizer_config.json
/// chat_template (the one named "default" and the one named "tool_use" where it holds several),
/// else its chat_template.json's (a multimodal processor's), and special tokens
/// (special_tokens_map.json's where the config names none), or a GGUF file's
/// tokenizer.chat_template (and tokenizer.chat_template.tool_use) and the tokens its ids name (a file that does not parse is an error:
/// sepal::Error naming it); plain when there is none. `jinja` gets the template text found, or
/// stays empty.
ChatTemplate chat_template_of_model(const std::filesystem::path& model, std::string* jinja = nullptr);

/// The recognised form's text of `messages` (no Jinja run): what render_chat writes for a model
/// whose template could not be run, or that has none.
std::string render_recognised(const ChatTemplate& chat_template, const std::vector<ChatMessage>& messages);

/// The prompt text of `messages`, ending where the assistant's reply begins; without a leading BOS
/// when `model_adds_bos`. `tools` (null: none) is the template's `tools`, as the request sent
/// them. A template's error (its raise_exception, such as roles that do not alternate) comes back
/// as the second alternative, as does a chat with tools or tool calls for a model whose template
/// is not run. `kwargs` (an object) are more variables for the template (a recognised form has
/// none: they change nothing, as variables a template does not read).
std::variant<std::string, jinja::TemplateError> render_chat(const ChatTemplate& chat_template,
                                                            const std::vector<ChatMessage>& messages,
                                                            bool model_adds_bos,
                                                            const nlohmann::ordered_json& tools = nullptr,
                                                            const nlohmann::ordered_json& kwargs = nlohmann::ordered_json::object());

}  // namespace sepal::api
