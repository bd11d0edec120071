#pragma once
// A JSON Schema `pattern` (an ECMA-262 regular expression) as a grammar of the JSON string texts
// (between the quotes, escaped as JSON escapes them) whose value the expression matches whole.
// A pattern matches anywhere in a string; a string that is one whole match contains one, so the
// grammar is sound, and a leading ^ and trailing $ change nothing.
//
// Taken: literal characters (UTF-8), escapes of punctuation, \n \t \r \f \v \uXXXX, \d \w \s and
// their negations, classes of ASCII characters and ranges (negated ones), '.', groups ((...) and
// (?:...)), alternation, and the quantifiers ? * + {n} {n,} {n,m} (lazy or not;
// bounds up to 1024). Negated classes, '.', \D, \W and \S write printable ASCII only. Anything
// else (back-references, look-arounds, named groups, \b, \p{...}, ^ or $ inside, non-ASCII in
// a class) is
// refused with its place.
//
// Thread-safety: a plain function.

#include <string>

#include "actors/api/grammar.h"

namespace sepal::api {

/// Adds the rules of `pattern` to `grammar` and returns the one for whole string texts; throws
/// SchemaError (actors/api/json_schema.h) with what it cannot take.
Grammar::Rule pattern_rule(Grammar& grammar, const std::string& pattern, const std::string& at);

}  // namespace sepal::api
