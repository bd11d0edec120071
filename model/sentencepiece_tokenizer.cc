// Tokenizer over the SentencePiece library (the reference implementation of Llama 1/2 tokenizers).
#include <sentencepiece_processor.h>

#include <cstdio>

#include "kernels/error.h"
#include "model/tokenizer.h"

namespace sepal {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581, SentencePiece's space

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::filesystem::path& file) {
    const auto status = processor_.Load(file.string());
    if (!status.ok()) fail("cannot load SentencePiece model ", file.string(), ": ", status.ToString());
    describe_pieces();
  }
  SentencePieceTokenizer(const std::string& serialized, const std::string& where, TextTokens in_text)
      : in_text_(std::move(in_text)) {
    const auto status = processor_.LoadFromSerializedProto(serialized);
    if (!status.ok()) fail("cannot load the SentencePiece model of ", where, ": ", status.ToString());
    describe_pieces();
  }

  // Each piece's bytes, and whether decoding drops a leading space.
  void describe_pieces() {
    const int n = processor_.GetPieceSize();
    token_bytes_.resize(static_cast<std::size_t>(n));
    for (int id = 0; id < n; ++id) {
      const std::string piece = processor_.IdToPiece(id);
      std::string& out = token_bytes_[static_cast<std::size_t>(id)];
      if (processor_.IsControl(id)) continue;  // <s>, </s> decode to nothing
      if (processor_.IsUnknown(id)) {
        out = " \xE2\x81\x87 ";  // SentencePiece renders <unk> as " ⁇ "
        continue;
      }
      unsigned value = 0;
      if (processor_.IsByte(id) && std::sscanf(piece.c_str(), "<0x%2X>", &value) == 1) {
        out = std::string(1, static_cast<char>(value));
        continue;
      }
      for (std::size_t i = 0; i < piece.size();) {
        if (piece.compare(i, kSpaceMarker.size(), kSpaceMarker) == 0) {
          out += ' ';
          i += kSpaceMarker.size();
        } else {
          out += piece[i++];
        }
      }
    }
    // A model that adds a dummy prefix encodes "a" as "▁a": decoding drops that space again.
    std::vector<std::string> pieces;
    processor_.Encode("a", &pieces).IgnoreError();
    strips_leading_space_ = !pieces.empty() && pieces[0].rfind(kSpaceMarker, 0) == 0;
  }

  std::vector<std::int32_t> encode(std::string_view text) const override {
    if (in_text_.empty()) return encode_plain(text);
    std::vector<std::int32_t> ids;
    for (const auto& [segment, id] : split_at_tokens(text, in_text_)) {
      if (id >= 0) {
        ids.push_back(id);
      } else {
        const auto plain = encode_plain(segment);
        ids.insert(ids.end(), plain.begin(), plain.end());
      }
    }
    return ids;
  }

  bool strips_leading_space() const override { return strips_leading_space_; }
  std::int32_t token_id(std::string_view piece) const override {
    const int id = processor_.PieceToId(piece);
    return (id == processor_.unk_id() && piece != processor_.IdToPiece(id)) ? -1 : id;
  }

 private:
  std::vector<std::int32_t> encode_plain(std::string_view text) const {
    std::vector<int> ids;
    const auto status = processor_.Encode(text, &ids);
    if (!status.ok()) fail("SentencePiece cannot encode the text: ", status.ToString());
    return {ids.begin(), ids.end()};
  }

  sentencepiece::SentencePieceProcessor processor_;
  TextTokens in_text_;
  bool strips_leading_space_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& file) {
  return std::make_unique<SentencePieceTokenizer>(file);
}

std::unique_ptr<Tokenizer> sentencepiece_tokenizer_from_proto(const std::string& serialized, const std::string& where,
                                                              TextTokens in_text) {
  return std::make_unique<SentencePieceTokenizer>(serialized, where, std::move(in_text));
}

}  // namespace sepal
