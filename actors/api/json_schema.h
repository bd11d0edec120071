#pragma once
// JSON Schema as a grammar (actors/api/grammar.h): the rule for JSON texts a schema validates, for
// structured outputs and forced tool calls. The grammar is sound, not complete: every text it
// matches is valid under the schema, while some valid texts are left out, as in llama.cpp's and
// Outlines' converters:
//   - an object's properties come in the schema's order, the required ones always, others may be
//     left out; properties the schema does not list are written only where it names none
//     (`additionalProperties` a schema, true or absent, and no `properties`);
//   - integers have at most 16 digits, fractions 16 and exponents 3;
//   - a value the schema leaves open (`{}`, `additionalProperties: true`) nests up to kMaxNesting
//     containers;
//   - white space between tokens is one space, or a newline and up to 20 spaces or tabs (the
//     rule llama.cpp's JSON grammar uses; without it a model can fill its reply with it);
//   - where more than GrammarReader::kMaxHeads ways begin alike (an anyOf of more than 64
//     schemas, an object of more than 64 optional properties), the later ones may be out of
//     reach; enums and function names are laid out as tries (Grammar::choice) and are not.
// Taken: type (one or a list; without one, the type the keywords speak of), properties, required,
// additionalProperties, minProperties and maxProperties (over the properties `properties` lists;
// for objects of any names, maxProperties and a minProperties of at most 1, since their members
// may repeat a name), items, prefixItems (and draft 7's items as an array, with
// additionalItems), minItems, maxItems, minLength, maxLength, minimum, maximum,
// exclusiveMinimum and exclusiveMaximum (exact on integers; on numbers any decimal bounds, the
// numbers then written without exponents, each exclusive bound taken as the next double inward
// so that a validator comparing doubles agrees), multipleOf of a whole number up to
// kMaxMultiple (exact on integers; numbers then written as integers), format (date, time,
// date-time, duration, uuid, ipv4, ipv6, hostname, email: sound subsets, see format()), pattern (actors/api/regex_grammar.h), enum, const, anyOf,
// oneOf where a required property of constant value tells the schemas apart (a discriminated
// union, as Pydantic writes them), allOf of one schema, $ref to "#" or a
// JSON pointer in the same document ($defs, definitions; recursion allowed), boolean schemas,
// and annotations (title, description, default, examples, $schema, $id, $comment, deprecated,
// readOnly, writeOnly, discriminator). Any other keyword (not, patternProperties, ...) is refused with
// its name and place: sepal does not drop a constraint it cannot keep. Keywords of another type
// than the value's are ignored, as JSON Schema says (minLength on an integer, say).
//
// Thread-safety: one compiler per grammar being built.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "actors/api/grammar.h"

namespace sepal::api {

/// Why a schema cannot be followed: "at #/properties/age: 'minimum' is not supported".
struct SchemaError {
  std::string message;
};

class JsonSchemaGrammar {
 public:
  static constexpr std::int64_t kMaxRepeat = 1024;       ///< minLength..maxItems bounds
  static constexpr std::size_t kMaxElements = 1 << 21;   ///< the grammar's size
  static constexpr int kMaxNesting = 64;                 ///< containers in an open value
  static constexpr std::int64_t kMaxMultiple = 1000;     ///< multipleOf
  explicit JsonSchemaGrammar(Grammar& grammar) : g_(grammar) {}

  /// The rule for the JSON texts `schema` validates, its $refs resolved within itself; throws
  /// SchemaError.
  Grammar::Rule compile(const nlohmann::ordered_json& schema);
  /// Optional white space between tokens.
  Grammar::Rule whitespace();
  /// Any JSON value (up to kMaxNesting containers deep); any object (the object one of them).
  Grammar::Rule any_value();
  Grammar::Rule any_object();
  /// A JSON string (the quotes included).
  Grammar::Rule string();

 private:
  using Symbols = std::vector<Grammar::Symbol>;
  Grammar::Rule rule_of(std::initializer_list<Symbols> alternatives);
  Grammar::Rule string_char();
  Grammar::Rule digits(std::int64_t min, std::int64_t max);
  Grammar::Rule integer();
  Grammar::Rule number();
  Grammar::Rule natural_range(std::int64_t lo, std::int64_t hi);
  Grammar::Rule multiples_range(std::int64_t lo, std::int64_t hi, std::int64_t k);
  Symbols same_length(const std::string& from, const std::string& to);
  Grammar::Rule fraction_digits(const std::optional<std::string>& lo, const std::optional<std::string>& hi, int k,
                                bool allow_empty);
  Grammar::Rule magnitude_range(const std::string& lo_whole, const std::string& lo_fraction, const std::string& hi_whole,
                                const std::string& hi_fraction);
  Grammar::Rule integer_of(const nlohmann::ordered_json& schema, const std::string& at);
  Grammar::Rule number_of(const nlohmann::ordered_json& schema, const std::string& at);
  Grammar::Rule literal_value(const nlohmann::ordered_json& value);
  Grammar::Rule object_of(const nlohmann::ordered_json& schema, const std::string& at, int depth);
  Grammar::Rule array_of(const nlohmann::ordered_json& schema, const std::string& at, int depth);
  Grammar::Rule unique_items(const nlohmann::ordered_json& schema, const std::string& at, std::int64_t min,
                             std::optional<std::int64_t> max);
  Grammar::Rule string_of(const nlohmann::ordered_json& schema, const std::string& at);
  Grammar::Rule format(const std::string& name, const std::string& at);
  // An object of members of any names with `value`s, from `min` to `max` of them.
  Grammar::Rule members(Grammar::Rule value, std::int64_t min = 0, std::optional<std::int64_t> max = std::nullopt);
  Grammar::Rule counted_members(const nlohmann::ordered_json& properties, const std::set<std::string>& required, std::int64_t min,
                                std::optional<std::int64_t> max, const std::string& at, int depth);
  Grammar::Rule schema_rule(const nlohmann::ordered_json& schema, const std::string& at, int depth);
  Grammar::Rule reference(const std::string& ref, const std::string& at);
  const nlohmann::ordered_json* resolved(const nlohmann::ordered_json& schema) const;
  bool tells_apart(const nlohmann::ordered_json& schemas) const;
  [[noreturn]] void fail(const std::string& at, const std::string& why) const;
  void check_size(const std::string& at) const;

  Grammar& g_;
  const nlohmann::ordered_json* root_ = nullptr;
  std::map<std::string, Grammar::Rule> refs_;
  std::optional<Grammar::Rule> ws_, value_, object_, string_, char_, integer_, number_;
};

}  // namespace sepal::api
