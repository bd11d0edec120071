#pragma once
// The draft decoder: the actor that drafts the token trees of speculative decoding for every
// generation of its process (actors/protocol/draft_decoder.h). Each generation opens a draft
// (model/draft_source.h, made by the factory it is given) and asks for a tree after each token
// the target chose. Between the two, while the hosts verify a tree (AnticipateTree), it guesses
// the outcome (model/token_tree.h likely_outcome: the path the draft itself finds likeliest and
// its next token), keeps that path and drafts the next tree from it. When the guess was right
// the next ProposeTree is answered at once; otherwise the draft rewinds to the path the target
// kept and drafts as usual, so a wrong guess costs the rewind, and the text is never affected
// (the target alone chooses tokens).
//
// It runs on the client's node; its handlers compute (a model draft's forward steps) on the
// actor system's threads while the generation's thread waits on the network.
//
// Thread-safety: an actor; use it through messages (or DraftDecoderSession below).

#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "actors/protocol/draft_decoder.h"
#include "model/draft_source.h"
#include "runtime/actor_system.h"

namespace sepal {

/// Makes the draft of a session of `capacity` positions.
using DraftFactory = std::function<std::unique_ptr<DraftSource>(std::int64_t capacity)>;

class DraftDecoder final : public TypedActor<DraftDecoder, DraftDecoderProtocol> {
 public:
  /// `anticipate`: prepare trees during verification (else AnticipateTree is ignored).
  DraftDecoder(PeerId self, DraftFactory factory, bool anticipate = true);
  std::string name() const override { return "draft decoder"; }

  Result<DraftOpened> handle(ActorContext& ctx, const OpenDraft& m);
  Result<DraftTree> handle(ActorContext& ctx, const ProposeTree& m);
  void handle(ActorContext& ctx, const AnticipateTree& m);
  Result<DraftClosed> handle(ActorContext& ctx, const CloseDraft& m);

 private:
  struct Guess {
    std::int64_t length = 0;             ///< the draft's length before the guessed path
    std::vector<std::int32_t> tokens;    ///< the guessed path's tokens
    std::int32_t root = -1;              ///< the guessed next token
    std::int64_t size = 0;
    TokenTree tree;                      ///< the tree drafted from it
  };
  struct Draft {
    std::unique_ptr<DraftSource> source;
    TokenTree tree;  ///< the last tree proposed
    std::int64_t size = 0;
    std::optional<Guess> guess;
  };

  const PeerId self_;
  DraftFactory factory_;
  const bool anticipate_;
  std::map<std::uint64_t, Draft> drafts_;
  std::uint64_t next_id_ = 0;
};

/// Adds a draft decoder to `system` under kDraftDecoderActorId.
ActorRef<DraftDecoderProtocol> add_draft_decoder(ActorSystem& system, DraftFactory factory, bool anticipate = true);

}  // namespace sepal
