#include "actors/api/stop_strings.h"

#include <algorithm>

namespace sepal::api {

std::string StopStrings::push(const std::string& text) {
  if (stopped_) return {};
  held_ += text;
  // The earliest stop string: the text before it is shown, the rest never.
  std::size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  // Hold back the longest end of the text that begins some stop string.
  std::size_t keep = 0;
  for (const std::string& s : stops_) {
    for (std::size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k) {
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStrings::finish() {
  std::string out = stopped_ ? std::string{} : held_;
  held_.clear();
  return out;
}

}  // namespace sepal::api
