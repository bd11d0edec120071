#pragma once
// Stop strings over streamed text: text goes in as the model produces it; what comes out is
// what may be shown, holding back any end that could still become a stop string, and the stream
// ends where the first stop string begins (which is never shown).
//
// Thread-safety: a value owned by one generation.

#include <string>
#include <vector>

namespace sepal::api {

class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  /// Takes the next piece of text; returns what may be shown now.
  std::string push(const std::string& text);
  /// The text held back, at the end of the stream (nothing once a stop string matched).
  std::string finish();
  /// Whether a stop string matched (nothing more may be shown).
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace sepal::api
