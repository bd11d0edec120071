#pragma once
// UTF-8 text: validation, lowercase as Hugging Face's tokenizers do it (Rust's
// str::to_lowercase: Unicode's full lowercase mapping, with the final-sigma rule), and the Unicode
// normalization forms.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace sepal {

/// Appends code point c (at most U+10FFFF) to out as UTF-8.
void utf8_append(std::string& out, char32_t c);

/// Length of the UTF-8 sequence a lead byte starts, or 0 if it cannot start one.
int utf8_sequence_length(unsigned char lead);

/// Whether s[0..len) is one complete, valid sequence (no overlongs, surrogates or > U+10FFFF).
bool utf8_valid_sequence(const unsigned char* s, int len);

/// The offset of the first byte that is not part of valid UTF-8, or nullopt for valid text.
std::optional<std::size_t> first_invalid_utf8(std::string_view text);

/// Unicode lowercase of valid UTF-8 text: each code point's lowercase mapping (the C.UTF-8
/// locale's tables), U+0130 to "i\u0307", and capital sigma to final sigma at the end of a word
/// (after a cased letter, not before one; apostrophes, combining marks and other case-ignorable
/// characters in between are skipped). Throws sepal::Error when this system has no C.UTF-8
/// locale.
std::string utf8_lowercase(std::string_view text);

/// Unicode uppercase of valid UTF-8 text, code point by code point (the simple mapping: "ß" stays
/// itself, where Python's str.upper() writes "SS"). Throws sepal::Error as utf8_lowercase does.
std::string utf8_uppercase(std::string_view text);

/// Unicode normalization forms (Hugging Face's NFC, NFD, NFKC and NFKD normalizers).
enum class UnicodeForm { kNfc, kNfd, kNfkc, kNfkd };

/// `text` in the normalization form (utf8proc's Unicode tables). Text that is not valid UTF-8
/// cannot be normalized and is returned as it is (Hugging Face's tokenizers take only valid text).
std::string utf8_normalize(std::string_view text, UnicodeForm form);

}  // namespace sepal
