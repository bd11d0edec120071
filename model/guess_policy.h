#pragma once
// Which guessed rows a model draft's step should run (model/draft_source.h). A guessed row costs
// what one more row adds to a step (b) and, when the tree takes it, saves a later step of one row
// (a + b); so a kind of guess is worth running while the share of its rows the tree took exceeds
// b / (a + b). The policy learns a and b from the draft's own steps (a least-squares line of
// seconds against rows, recent steps weighing most) and each kind's share from what the trees
// took. Every kExploreEvery-th step runs every guess, so that what was learnt stays current.
//
// It decides only how many steps a tree costs, never which tree grows.
// Thread-safety: belongs to one draft.

#include <cstdint>
#include <vector>

namespace sepal {

class GuessPolicy {
 public:
  static constexpr std::int64_t kExploreEvery = 16;

  /// Kinds of guess, numbered [0, kinds). `learning` false: every guess runs (tests count steps
  /// that do not depend on the machine's speed).
  explicit GuessPolicy(std::int64_t kinds, bool learning = true);
  /// Whether the step now being put together should run a guess of `kind`.
  bool worth(std::int64_t kind) const;
  /// A step of `rows` rows took `seconds`.
  void ran(std::int64_t rows, double seconds);
  /// A guessed row of `kind` was taken by the tree, or not.
  void guessed(std::int64_t kind, bool taken);

  /// What was learnt (for benchmarks and tests): seconds of a step's fixed part and per row, and
  /// the share of a kind's guesses taken.
  double step_seconds() const { return a_; }
  double row_seconds() const { return b_; }
  double taken_share(std::int64_t kind) const;

 private:
  bool exploring() const { return steps_ < kExploreEvery || steps_ % kExploreEvery == 0; }

  std::vector<double> taken_, offered_;  // per kind, recent guesses weighing most
  double sw_ = 0, sn_ = 0, snn_ = 0, st_ = 0, snt_ = 0;  // weighted sums for the line
  double a_ = 0, b_ = 0;
  std::int64_t steps_ = 0;
  bool learning_ = true;
};

}  // namespace sepal
