#include "model/utf8.h"

#include <locale.h>
#include <utf8proc.h>
#include <wctype.h>

#include <cstdlib>
#include <vector>

#include "kernels/error.h"

namespace sepal {
namespace {

// Decodes valid UTF-8 into code points.
std::vector<char32_t> code_points(std::string_view text) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const int len = utf8_sequence_length(lead);
    char32_t c = len == 1 ? lead : len == 2 ? lead & 0x1F : len == 3 ? lead & 0x0F : lead & 0x07;
    for (int k = 1; k < len; ++k) c = (c << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    out.push_back(c);
    i += static_cast<std::size_t>(len);
  }
  return out;
}

}  // namespace

void utf8_append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

namespace {

locale_t unicode_locale() {
  static const locale_t locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
  if (!locale) fail("Unicode lowercase needs the C.UTF-8 locale, which this system does not have");
  return locale;
}

bool cased(char32_t c, locale_t l) {
  const auto w = static_cast<wint_t>(c);
  return towlower_l(w, l) != w || towupper_l(w, l) != w;
}

// Unicode's Case_Ignorable, for the characters that occur between letters in practice: the
// apostrophes, the middle dot, the soft hyphen, combining marks, and modifier letters.
bool case_ignorable(char32_t c) {
  return c == U'\'' || c == U'.' || c == U':' || c == U'^' || c == U'`' || c == 0x00AD || c == 0x00B7 ||
         c == 0x2018 || c == 0x2019 || c == 0x2024 || c == 0x2027 || (c >= 0x0300 && c <= 0x036F) ||
         (c >= 0x02B0 && c <= 0x02FF) || (c >= 0x1AB0 && c <= 0x1AFF) || (c >= 0x1DC0 && c <= 0x1DFF) ||
         (c >= 0x20D0 && c <= 0x20FF) || (c >= 0xFE20 && c <= 0xFE2F) || c == 0x200B || c == 0x200C || c == 0x200D;
}

// Rust's final-sigma condition: a cased letter before (skipping case-ignorables) and none after.
bool final_sigma(const std::vector<char32_t>& cps, std::size_t i, locale_t l) {
  bool before = false;
  for (std::size_t j = i; j-- > 0;) {
    if (case_ignorable(cps[j])) continue;
    before = cased(cps[j], l);
    break;
  }
  if (!before) return false;
  for (std::size_t j = i + 1; j < cps.size(); ++j) {
    if (case_ignorable(cps[j])) continue;
    return !cased(cps[j], l);
  }
  return true;
}

}  // namespace

int utf8_sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

bool utf8_valid_sequence(const unsigned char* s, int len) {
  for (int i = 1; i < len; ++i) {
    if ((s[i] & 0xC0) != 0x80) return false;
  }
  if (len == 3) {
    if (s[0] == 0xE0 && s[1] < 0xA0) return false;
    if (s[0] == 0xED && s[1] >= 0xA0) return false;
  }
  if (len == 4) {
    if (s[0] == 0xF0 && s[1] < 0x90) return false;
    if (s[0] == 0xF4 && s[1] >= 0x90) return false;
  }
  return true;
}

std::optional<std::size_t> first_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (std::size_t i = 0; i < text.size();) {
    const int len = utf8_sequence_length(s[i]);
    if (len == 0 || i + static_cast<std::size_t>(len) > text.size() || !utf8_valid_sequence(s + i, len)) return i;
    i += static_cast<std::size_t>(len);
  }
  return std::nullopt;
}

std::string utf8_lowercase(std::string_view text) {
  if (first_invalid_utf8(text)) fail("lowercase: the text is not valid UTF-8");
  const locale_t l = unicode_locale();
  const std::vector<char32_t> cps = code_points(text);
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    if (c < 0x80) {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    } else if (c == 0x0130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE: two code points
      utf8_append(out, U'i');
      utf8_append(out, 0x0307);
    } else if (c == 0x03A3) {  // GREEK CAPITAL LETTER SIGMA
      utf8_append(out, final_sigma(cps, i, l) ? 0x03C2 : 0x03C3);
    } else {
      utf8_append(out, static_cast<char32_t>(towlower_l(static_cast<wint_t>(c), l)));
    }
  }
  return out;
}

std::string utf8_uppercase(std::string_view text) {
  if (first_invalid_utf8(text)) fail("uppercase: the text is not valid UTF-8");
  const locale_t l = unicode_locale();
  std::string out;
  out.reserve(text.size());
  for (const char32_t c : code_points(text)) {
    if (c < 0x80) out += static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
    else utf8_append(out, static_cast<char32_t>(towupper_l(static_cast<wint_t>(c), l)));
  }
  return out;
}

std::string utf8_normalize(std::string_view text, UnicodeForm form) {
  if (text.empty() || first_invalid_utf8(text)) return std::string(text);
  int options = UTF8PROC_STABLE;
  switch (form) {
    case UnicodeForm::kNfc: options |= UTF8PROC_COMPOSE; break;
    case UnicodeForm::kNfd: options |= UTF8PROC_DECOMPOSE; break;
    case UnicodeForm::kNfkc: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case UnicodeForm::kNfkd: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          static_cast<utf8proc_ssize_t>(text.size()), &out,
                                          static_cast<utf8proc_option_t>(options));
  if (n < 0) {
    std::free(out);
    fail("Unicode normalization failed: ", utf8proc_errmsg(n));
  }
  std::string result(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
  std::free(out);
  return result;
}

}  // namespace sepal
