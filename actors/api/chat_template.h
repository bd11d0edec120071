#pragma once
// Chat messages as one prompt. A model's tokenizer_config.json may carry a Jinja `chat_template`;
// rather than run Jinja, the common forms are recognised by their markers and rendered here:
// ChatML (<|im_start|>), Llama 3 (<|start_header_id|>), Llama 2 and Mistral ([INST]) and Zephyr
// (<|user|>). Anything else, or no template, gets the plain form:
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

/// The form of a chat_template text (empty: plain).
ChatForm recognise_chat_template(const std::string& jinja);

/// The form for a model folder: its tokenizer_config.json's chat_template, if the file has one
/// (a file that does not parse is an error: sepal::Error naming it); plain otherwise, also for a
/// GGUF file. `jinja` gets the template text found, or stays empty.
ChatForm chat_form_of_model(const std::filesystem::path& model, std::string* jinja = nullptr);

/// The prompt text of `messages`, ending where the assistant's reply begins.
std::string render_chat(ChatForm form, const std::vector<ChatMessage>& messages);

}  // namespace sepal::api
