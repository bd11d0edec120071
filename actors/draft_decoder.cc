#include "actors/draft_decoder.h"

#include <algorithm>

#include "actors/tree_step.h"

namespace sepal {
namespace {

constexpr std::int64_t kMaxTreeSize = 4096;

DraftTree to_message(const TokenTree& tree, bool anticipated) {
  return DraftTree{tree.tokens, tree.parents, tree.mass, tree.next_guess, anticipated};
}

std::vector<std::int32_t> path_tokens(const TokenTree& tree, std::span<const std::int32_t> path) {
  std::vector<std::int32_t> tokens;
  for (const std::int32_t node : path) tokens.push_back(tree.tokens[static_cast<std::size_t>(node)]);
  return tokens;
}

}  // namespace

DraftDecoder::DraftDecoder(PeerId self, DraftFactory factory, bool anticipate)
    : self_(self), factory_(std::move(factory)), anticipate_(anticipate) {}

Result<DraftOpened> DraftDecoder::handle(ActorContext& ctx, const OpenDraft& m) {
  if (ctx.sender().peer != self_) return error(StatusCode::kRefused, "the draft decoder takes requests from its own process only");
  if (m.prompt.empty()) return error(StatusCode::kInvalidArgument, "a draft needs a prompt of at least one token");
  if (m.capacity < static_cast<std::int64_t>(m.prompt.size()) || m.capacity > (std::int64_t{1} << 31)) {
    return error(StatusCode::kInvalidArgument, "a draft of ", m.capacity, " positions cannot hold a prompt of ",
                 m.prompt.size(), " tokens");
  }
  Draft d;
  d.source = factory_(m.capacity);
  d.source->start(m.prompt);
  const std::uint64_t id = ++next_id_;
  drafts_.emplace(id, std::move(d));
  return DraftOpened{id};
}

Result<DraftTree> DraftDecoder::handle(ActorContext& ctx, const ProposeTree& m) {
  if (ctx.sender().peer != self_) return error(StatusCode::kRefused, "the draft decoder takes requests from its own process only");
  auto it = drafts_.find(m.draft);
  if (it == drafts_.end()) return error(StatusCode::kNotFound, "no draft ", m.draft);
  Draft& d = it->second;
  if (m.size < 1 || m.size > kMaxTreeSize) return error(StatusCode::kInvalidArgument, "a tree of ", m.size, " nodes");
  if (m.root < 0) return error(StatusCode::kInvalidArgument, "a tree's root must be a token id, not ", m.root);
  if (!m.keep.empty()) {
    if (std::string why = tree_path_error(m.keep, d.tree.parents); !why.empty()) {
      return error(StatusCode::kInvalidArgument, "draft ", m.draft, ": ", why);
    }
  }
  const std::vector<std::int32_t> kept = path_tokens(d.tree, m.keep);
  std::optional<Guess> guess = std::move(d.guess);
  d.guess.reset();
  bool anticipated = false;
  if (guess && guess->tokens == kept && guess->root == m.root && guess->size == m.size) {
    d.tree = std::move(guess->tree);
    anticipated = true;
  } else {
    if (guess) d.source->rewind(guess->length, kept);  // back from the guessed path to the kept one
    else d.source->keep(m.keep);
    d.tree = d.source->propose(m.root, m.size);
  }
  d.size = m.size;
  return to_message(d.tree, anticipated);
}

void DraftDecoder::handle(ActorContext& ctx, const AnticipateTree& m) {
  if (!anticipate_ || ctx.sender().peer != self_) return;
  auto it = drafts_.find(m.draft);
  if (it == drafts_.end() || it->second.guess || it->second.tree.tokens.empty()) return;
  Draft& d = it->second;
  const std::optional<TreeOutcome> outcome = likely_outcome(d.tree);
  if (!outcome) return;
  Guess g;
  g.length = d.source->length();
  g.tokens = path_tokens(d.tree, outcome->path);
  g.root = outcome->next;
  g.size = d.size;
  try {
    d.source->keep(outcome->path);
    g.tree = d.source->propose(g.root, g.size);
  } catch (const std::exception&) {
    g.root = -1;  // matches no request: the next ProposeTree rewinds to the path the target kept
  }
  d.guess = std::move(g);
}

Result<DraftClosed> DraftDecoder::handle(ActorContext& ctx, const CloseDraft& m) {
  if (ctx.sender().peer != self_) return error(StatusCode::kRefused, "the draft decoder takes requests from its own process only");
  if (drafts_.erase(m.draft) == 0) return error(StatusCode::kNotFound, "no draft ", m.draft);
  return DraftClosed{m.draft};
}

ActorRef<DraftDecoderProtocol> add_draft_decoder(ActorSystem& system, DraftFactory factory, bool anticipate) {
  return system.adopt_with_id(kDraftDecoderActorId, std::make_unique<DraftDecoder>(system.self(), std::move(factory), anticipate));
}

}  // namespace sepal
