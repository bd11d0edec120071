#include "actors/block_host.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "actors/adapter_payload.h"
#include "actors/hidden_codec.h"
#include "actors/protocol/client_driver.h"
#include "actors/push_grant.h"
#include "actors/tree_step.h"
#include "runtime/log.h"
#include "kernels/error.h"

namespace sepal {

double measure_block_throughput(const BlockStack& blocks) {
  const ModelConfig& c = blocks.config();
  constexpr int kPositions = 4;
  KvCache cache = blocks.new_cache(kPositions + 1);
  std::vector<float> hidden(static_cast<std::size_t>(c.hidden_size), 0.01f);
  blocks.forward(hidden.data(), 1, cache);  // warm up
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kPositions; ++i) blocks.forward(hidden.data(), 1, cache);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double blocks_run = static_cast<double>(kPositions * (blocks.last() - blocks.first()));
  return seconds > 0 ? blocks_run / seconds : 0.0;
}

BlockHost::BlockHost(std::shared_ptr<const BlockStack> blocks, BlockHostOptions options)
    : blocks_(std::move(blocks)), options_(std::move(options)) {}

void BlockHost::set_blocks(std::shared_ptr<const BlockStack> blocks, double tokens_per_second) {
  std::lock_guard lock(mutex_);
  blocks_ = std::move(blocks);
  for (const auto& [key, session] : sessions_) {
    if (!moved_sessions_.insert(key).second) continue;
    moved_order_.push_back(key);
    if (moved_order_.size() > kMaxMovedSessions) {
      moved_sessions_.erase(moved_order_.front());
      moved_order_.pop_front();
    }
  }
  sessions_.clear();
  held_adapters_.clear();
  if (tokens_per_second > 0) tokens_per_second_ = tokens_per_second;
}

void BlockHost::set_leaving() {
  std::lock_guard lock(mutex_);
  leaving_ = true;
  sessions_.clear();
  held_adapters_.clear();
}

HostInfoReply BlockHost::info() {
  std::lock_guard lock(mutex_);
  return info_locked();
}

void BlockHost::limit_cache_budget(std::int64_t bytes) {
  std::lock_guard lock(mutex_);
  options_.cache_budget_bytes = std::min(options_.cache_budget_bytes, std::max<std::int64_t>(bytes, 0));
}

std::int64_t BlockHost::cache_bytes_used() const {
  std::int64_t total = 0;
  for (const auto& [key, s] : sessions_) total += s.bytes();
  for (const HeldAdapter& h : held_adapters_) total += static_cast<std::int64_t>(h.adapter.values.bytes);
  return total;
}

std::int64_t BlockHost::client_cache_bytes(PeerId client, std::int64_t* sessions) const {
  std::int64_t bytes = 0;
  *sessions = 0;
  for (const auto& [key, s] : sessions_) {
    if (key.first != client) continue;
    bytes += s.bytes();
    ++*sessions;
  }
  return bytes;
}

void BlockHost::expire_idle(Scheduler::Clock::time_point now) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (now - it->second.last_used > options_.idle_timeout) it = sessions_.erase(it);
    else ++it;
  }
  std::erase_if(held_adapters_, [&](const HeldAdapter& h) { return now - h.last_used > options_.idle_timeout; });
}

Result<std::optional<BlockAdapters>> BlockHost::training_adapters(PeerId client, const AdapterPayload& p,
                                                                  std::int64_t first, std::int64_t last,
                                                                  Scheduler::Clock::time_point now) {
  const ModelConfig& config = blocks_->config();
  auto same = [&](const HeldAdapter& h) {
    return h.client == client && h.key == p.held && h.first == first && h.last == last;
  };
  if (p.held != 0 && !has_adapter(p)) {
    for (HeldAdapter& h : held_adapters_) {
      if (!same(h)) continue;
      h.last_used = now;
      return received_adapters(h.adapter, config, first, last);
    }
    return error(StatusCode::kFailedPrecondition, "adapters ", p.held, " of blocks [", first, ", ", last,
                 ") are not held here (never sent, or freed); send them again");
  }
  auto adapters = received_adapters(p, config, first, last);
  if (!adapters.is_ok() || !adapters.value() || p.held == 0) return adapters;
  std::erase_if(held_adapters_, same);
  std::vector<HeldAdapter>::iterator oldest = held_adapters_.end();
  std::size_t kept = 0;
  for (auto it = held_adapters_.begin(); it != held_adapters_.end(); ++it) {
    if (it->client != client) continue;
    ++kept;
    if (oldest == held_adapters_.end() || it->last_used < oldest->last_used) oldest = it;
  }
  if (kept >= kHeldAdaptersPerClient) held_adapters_.erase(oldest);
  // Kept only where the budget has room (the pass still runs: the sender resends them next time).
  if (cache_bytes_used() + static_cast<std::int64_t>(p.values.bytes) <= options_.cache_budget_bytes) {
    HeldAdapter h{client, p.held, first, last, p, now};
    h.adapter.values = TensorPayload::copy_of(ElementType::kF32, p.values.shape, p.values.as<float>(),
                                              static_cast<std::size_t>(p.values.elements()));
    held_adapters_.push_back(std::move(h));
  }
  return adapters;
}

HostInfoReply BlockHost::info_locked() const {
  HostInfoReply r;
  r.model = options_.model_name;
  if (blocks_) {
    r.first = blocks_->first();
    r.last = blocks_->last();
    r.hidden_size = blocks_->config().hidden_size;
  }
  r.tokens_per_second = tokens_per_second_;
  r.sessions = static_cast<std::int64_t>(sessions_.size());
  r.cache_bytes_free = options_.cache_budget_bytes - cache_bytes_used();
  r.leaving = leaving_;
  r.numerics = options_.numerics;
  return r;
}

Result<BlockHost::Session*> BlockHost::find(SessionKey key, Scheduler::Clock::time_point now) {
  expire_idle(now);
  auto it = sessions_.find(key);
  if (it == sessions_.end()) {
    if (leaving_) return error(StatusCode::kUnavailable, "the host is leaving; session ", key.second, " ended");
    if (moved_sessions_.count(key) && blocks_) {
      return error(StatusCode::kNotFound, "session ", key.second, " ended when this host moved to blocks [",
                   blocks_->first(), ", ", blocks_->last(), ")");
    }
    return error(StatusCode::kNotFound, "no session ", key.second, " from peer ", key.first,
                 " (never opened, closed, ended by a change of blocks, or idle for longer than the timeout)");
  }
  it->second.last_used = now;
  return &it->second;
}

Result<HostInfoReply> BlockHost::handle(ActorContext& ctx, const HostInfo&) {
  std::lock_guard lock(mutex_);
  expire_idle(ctx.system().scheduler().now());
  return info_locked();
}

Result<SessionOpened> BlockHost::handle(ActorContext& ctx, const OpenSession& m) {
  std::lock_guard lock(mutex_);
  expire_idle(ctx.system().scheduler().now());
  if (leaving_) return error(StatusCode::kUnavailable, "the host is leaving the swarm");
  if (!blocks_) return error(StatusCode::kUnavailable, "the host serves no blocks yet");
  const ModelConfig& c = blocks_->config();
  if (m.max_length <= 0 || m.max_length > c.max_position_embeddings) {
    return error(StatusCode::kInvalidArgument, "session length ", m.max_length,
                 " must be between 1 and max_position_embeddings (", c.max_position_embeddings, ")");
  }
  const bool whole = m.first == 0 && m.last == 0;
  const std::int64_t first = whole ? blocks_->first() : m.first, last = whole ? blocks_->last() : m.last;
  if (first < blocks_->first() || last > blocks_->last() || first >= last) {
    return error(StatusCode::kInvalidArgument, "blocks [", first, ", ", last, ") are not a part of the served blocks [",
                 blocks_->first(), ", ", blocks_->last(), ")");
  }
  if (sessions_.count({ctx.sender().peer, m.session})) {
    return error(StatusCode::kInvalidArgument, "session ", m.session, " is already open");
  }
  // The most cache the session holds (blocks with a sliding window keep only it; a device's cache
  // takes it when made, for steps of KvCache::kDeviceStepRows) and its adapters (checked in full
  // below, before anything is kept).
  const std::int64_t step_rows = blocks_->backend() ? KvCache::kDeviceStepRows : options_.max_step_tokens;
  const std::int64_t cache_bytes = KvCache::most_bytes(blocks_->windows(first, last), c.num_kv_heads, c.head_dim,
                                                       blocks_->kv_dtype(), m.max_length, std::min(m.max_length, step_rows));
  const std::int64_t needed = cache_bytes + static_cast<std::int64_t>(m.adapter.values.bytes);
  // Room for the session's cache and for the working memory of its largest step.
  const std::int64_t working = blocks_->step_working_bytes(std::min(m.max_length, options_.max_step_tokens));
  const std::int64_t free = options_.cache_budget_bytes - cache_bytes_used();
  if (needed + working > free) {
    return error(StatusCode::kResourceExhausted, "a session of ", m.max_length, " positions needs ", needed,
                 " bytes of cache (and adapters) and ", working, " of working memory; ", free, " of the host's budget of ",
                 options_.cache_budget_bytes, " are free");
  }
  std::int64_t client_sessions = 0;
  const std::int64_t client_bytes = client_cache_bytes(ctx.sender().peer, &client_sessions);
  if (client_sessions >= options_.max_sessions_per_client) {
    return error(StatusCode::kResourceExhausted, "peer ", ctx.sender().peer, " has ", client_sessions,
                 " sessions open here, the limit per client");
  }
  const std::int64_t client_limit =
      options_.max_cache_bytes_per_client > 0 ? options_.max_cache_bytes_per_client : options_.cache_budget_bytes / 2;
  if (client_bytes + needed > client_limit) {
    return error(StatusCode::kResourceExhausted, "peer ", ctx.sender().peer, " holds ", client_bytes,
                 " bytes of cache here; ", needed, " more would pass the limit per client of ", client_limit);
  }
  std::optional<KvCache> cache;
  try {
    cache.emplace(blocks_->new_cache(m.max_length, first, last));  // on a GPU, its memory may run out
  } catch (const Error& e) {
    return error(StatusCode::kResourceExhausted, e.what());
  }
  Session s{std::move(*cache), first, 0, ctx.system().scheduler().now(), {}, 0, 0, {}, std::nullopt, {}};
  if (m.prompts.elements() > 0) {
    const TensorPayload& p = m.prompts;
    if (p.type != ElementType::kF32 || p.shape.size() != 3 || p.shape[0] != last - first || p.shape[2] != c.hidden_size ||
        p.shape[1] < 1 || p.bytes != static_cast<std::size_t>(p.elements()) * sizeof(float)) {
      return error(StatusCode::kInvalidArgument, "deep prompts must be f32 [", last - first, ", count, ", c.hidden_size,
                   "]");
    }
    if (m.prompt_offset < 0 || m.prompt_offset + p.shape[1] > m.max_length) {
      return error(StatusCode::kInvalidArgument, "deep prompts at positions [", m.prompt_offset, ", ",
                   m.prompt_offset + p.shape[1], ") do not fit in a session of ", m.max_length);
    }
    s.prompts.assign(p.as<float>(), p.as<float>() + p.elements());
    s.prompt_count = p.shape[1];
    s.prompt_offset = m.prompt_offset;
  }
  auto adapters = received_adapters(m.adapter, c, first, last);
  if (!adapters.is_ok()) return adapters.status();
  if (adapters.value()) {
    s.adapter_shape = adapters.value()->shape;
    s.adapter_values.assign(m.adapter.values.as<float>(), m.adapter.values.as<float>() + m.adapter.values.elements());
  }
  const std::int64_t bytes = s.bytes();
  sessions_.emplace(SessionKey{ctx.sender().peer, m.session}, std::move(s));
  return SessionOpened{m.session, bytes};
}

Result<BlockHost::ReadyStep> BlockHost::prepare_step(SessionKey key, std::int64_t position, std::uint64_t tag,
                                                     const TensorPayload& hidden, const std::vector<std::int32_t>& parents,
                                                     const std::vector<std::int32_t>& keep,
                                                     Scheduler::Clock::time_point now) {
  auto found = find(key, now);
  if (!found.is_ok()) return found.status();
  Session& s = *found.value();
  if (tag != 0 && tag < s.tag) {
    return error(StatusCode::kCancelled, "step of attempt ", tag, " is older than attempt ", s.tag);
  }
  const std::int64_t hidden_size = blocks_->config().hidden_size;
  // The limits first: nothing is decoded (allocated) for a step that will be refused.
  const std::int64_t n = hidden_tokens(hidden);
  if (n > options_.max_step_tokens) {
    return error(StatusCode::kResourceExhausted, "a step of ", n, " tokens; the limit per step is ",
                 options_.max_step_tokens);
  }
  const std::int64_t working = blocks_->step_working_bytes(n + batched_rows_),
                     left = options_.cache_budget_bytes - cache_bytes_used();
  if (working > left) {
    return error(StatusCode::kResourceExhausted, "a step of ", n, " tokens needs ", working,
                 " bytes of working memory; the caches leave ", left, " of the budget");
  }
  auto decoded = decode_hidden(hidden, hidden_size);
  if (!decoded.is_ok()) return decoded.status();
  // Everything is checked before the cache changes: a refused step leaves the session as it was.
  if (!keep.empty()) {
    if (std::string why = tree_path_error(keep, s.tree); !why.empty()) return error(StatusCode::kInvalidArgument, why);
  }
  const std::int64_t start = s.cache.length() + static_cast<std::int64_t>(keep.size());
  if (position != start) {
    return error(StatusCode::kInvalidArgument, "step at position ", position, " but session ", key.second, " holds ",
                 start, " positions");
  }
  if (!parents.empty()) {
    if (std::string why = token_tree_error(parents, n); !why.empty()) return error(StatusCode::kInvalidArgument, why);
    if (s.prompt_count > 0 && position < s.prompt_offset + s.prompt_count) {
      return error(StatusCode::kInvalidArgument, "a token tree cannot start inside the deep prompts' positions");
    }
  }
  if (position + n > s.cache.max_positions()) {
    return error(StatusCode::kInvalidArgument, "positions [", position, ", ", position + n,
                 ") pass the session's length of ", s.cache.max_positions());
  }
  if (tag != 0) s.tag = tag;
  return ReadyStep{key, n, std::move(decoded).value(), is_compressed_hidden(hidden), parents, keep};
}

Result<TensorPayload> BlockHost::output_of(const ReadyStep& step, const Session& s) {
  // The answer takes the form of the request: compressed in, compressed out.
  try {
    return encode_hidden(step.rows.data(), step.n, blocks_->config().hidden_size, step.compressed);
  } catch (const Error& e) {
    return error(StatusCode::kInternal, "blocks [", s.first, ", ", s.first + s.cache.blocks(), "): ", e.what());
  }
}

Result<TensorPayload> BlockHost::run_alone(ReadyStep& step, Scheduler::Clock::time_point now) {
  auto found = find(step.key, now);
  if (!found.is_ok()) return found.status();
  Session& s = *found.value();
  const auto begin = std::chrono::steady_clock::now();
  try {
    if (!step.keep.empty()) s.cache.keep_path(step.keep);
    s.tree.clear();
    const std::optional<BlockAdapters> adapters = s.adapters();
    if (!step.parents.empty()) {
      blocks_->forward_tree(step.rows.data(), step.n, step.parents, s.cache, s.first, adapters ? &*adapters : nullptr);
      s.tree = step.parents;
    } else {
      const DeepPrompts prompts{s.prompts.data(), s.prompt_count, s.prompt_offset};
      blocks_->forward(step.rows.data(), step.n, s.cache, s.first, s.prompt_count > 0 ? &prompts : nullptr,
                       adapters ? &*adapters : nullptr);
    }
  } catch (const Error& e) {
    return error(StatusCode::kInvalidArgument, e.what());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  if (seconds > 0 && step.n == 1) measured(static_cast<double>(s.cache.blocks()) / seconds);
  count_forward(seconds, step.n == 1);
  return output_of(step, s);
}

void BlockHost::count_forward(double seconds, bool single_row) {
  ++forwards_.count;
  forwards_.seconds += seconds;
  if (single_row) {
    ++forwards_.single_row;
    forwards_.single_row_seconds += seconds;
  }
}

void BlockHost::measured(double rate) {
  // Decode steps measure the throughput that routing cares about (per block, batch 1).
  tokens_per_second_ = tokens_per_second_ == 0 ? rate : 0.9 * tokens_per_second_ + 0.1 * rate;
}

bool BlockHost::batchable(const ReadyStep& step) const {
  return options_.batch_steps && step.n <= kStreamingMaxTokens && step.parents.empty() && step.keep.empty();
}

void BlockHost::before_step(SessionKey key, Scheduler::Clock::time_point now) {
  // A session's steps run in order: one of its steps still waiting in the batch runs first, so
  // that the next is checked against the session as that step leaves it.
  if (std::any_of(batch_.begin(), batch_.end(), [&](const PendingStep& p) { return p.step.key == key; })) run_batch(now);
}

void BlockHost::take_step(ReadyStep step, StepDone done, Scheduler::Clock::time_point now) {
  if (!batchable(step)) run_batch(now);
  if (batchable(step)) {
    batched_rows_ += step.n;
    if (batch_.empty()) gathering_since_ = now;
    last_arrival_ = now;
    batch_.push_back(PendingStep{std::move(step), std::move(done)});
    // A mailbox that never empties must not hold the steps back for ever.
    if (batched_rows_ >= kMaxBatchRows) run_batch(now);
    return;
  }
  auto out = run_alone(step, now);
  const std::int64_t length = out.is_ok() ? sessions_.at(step.key).cache.length() : 0;
  done(std::move(out), length);
}

void BlockHost::run_batch(Scheduler::Clock::time_point now) {
  if (batch_.empty()) return;
  std::vector<PendingStep> batch = std::move(batch_);
  batch_.clear();
  batched_rows_ = 0;
  last_spread_seconds_ = std::chrono::duration<double>(last_arrival_ - gathering_since_).count();
  // A session seen twice closes a round: its sessions are the ones the next round waits for.
  // Sessions that have ended leave both (a host with many short sessions would keep them all).
  const auto ended = [&](const SessionKey& key) { return !sessions_.contains(key); };
  std::erase_if(round_, ended);
  std::erase_if(expected_, ended);
  if (std::any_of(batch.begin(), batch.end(), [&](const PendingStep& p) { return round_.contains(p.step.key); })) {
    round_spread_seconds_ = std::chrono::duration<double>(round_last_arrival_ - round_since_).count();
    expected_ = std::move(round_);
    round_.clear();
  }
  if (round_.empty()) round_since_ = gathering_since_;
  round_last_arrival_ = last_arrival_;
  for (const PendingStep& p : batch) round_.insert(p.step.key);
  const auto batch_begin = std::chrono::steady_clock::now();
  // Sessions over the same blocks run together; one whose session is gone gets its error.
  std::map<std::pair<std::int64_t, std::int64_t>, std::vector<std::size_t>> groups;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto found = find(batch[i].step.key, now);
    if (!found.is_ok()) {
      batch[i].done(found.status(), 0);
      continue;
    }
    groups[{found.value()->first, found.value()->cache.blocks()}].push_back(i);
  }
  for (const auto& [range, members] : groups) {
    std::vector<BatchedStep> steps;
    std::vector<std::optional<BlockAdapters>> adapters;
    std::vector<DeepPrompts> prompts;
    adapters.reserve(members.size());
    prompts.reserve(members.size());
    for (const std::size_t i : members) {
      Session& s = sessions_.at(batch[i].step.key);
      s.tree.clear();
      adapters.push_back(s.adapters());
      prompts.push_back(DeepPrompts{s.prompts.data(), s.prompt_count, s.prompt_offset});
      steps.push_back(BatchedStep{batch[i].step.rows.data(), batch[i].step.n, &s.cache,
                                  s.prompt_count > 0 ? &prompts.back() : nullptr,
                                  adapters.back() ? &*adapters.back() : nullptr});
    }
    const auto begin = std::chrono::steady_clock::now();
    Status ran = Status::ok();
    try {
      blocks_->forward_batch(steps, range.first, range.second);
    } catch (const Error& e) {
      ran = error(StatusCode::kInvalidArgument, e.what());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    count_forward(seconds, members.size() == 1 && steps[0].n == 1);
    if (ran.is_ok() && seconds > 0 && members.size() == 1 && steps[0].n == 1) {
      measured(static_cast<double>(range.second) / seconds);
    }
    ++batches_run_;
    batched_steps_run_ += static_cast<std::int64_t>(members.size());
    for (const std::size_t i : members) {
      const Session& s = sessions_.at(batch[i].step.key);
      if (!ran.is_ok()) batch[i].done(ran, 0);
      else batch[i].done(output_of(batch[i].step, s), s.cache.length());
    }
  }
  last_batch_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - batch_begin).count();
}

Scheduler::Clock::time_point BlockHost::gathered_by() const {
  // A step of a session this round has run already opens the next round: then the whole of this
  // one is expected.
  const bool next_round =
      std::any_of(batch_.begin(), batch_.end(), [&](const PendingStep& p) { return round_.contains(p.step.key); });
  const std::set<SessionKey>& expected = next_round ? round_ : expected_;
  bool missing = false;
  for (const SessionKey& key : expected) {
    if (!sessions_.contains(key) || (!next_round && round_.contains(key))) continue;
    missing = std::none_of(batch_.begin(), batch_.end(), [&](const PendingStep& p) { return p.step.key == key; });
    if (missing) break;
  }
  if (!missing) return Scheduler::Clock::time_point::min();
  // Twice the spread of the last round's arrivals, at least a quarter of the last batch's time, at
  // most all of it (so a step at most doubles its time here waiting for a session that is late).
  const double spread = std::max(last_spread_seconds_, round_spread_seconds_);
  const double seconds = std::min(last_batch_seconds_, std::max(0.25 * last_batch_seconds_, 2 * spread));
  const auto patience = std::chrono::duration<double>(seconds);
  return gathering_since_ + std::chrono::duration_cast<Scheduler::Clock::duration>(patience);
}

void BlockHost::run_batch_at(ActorSystem& system, Scheduler::Clock::time_point by) {
  if (gather_timer_) return;
  gather_timer_ = true;
  system.scheduler().post_at(by, [this, &system, id = self_id_] {
    system.run_in_turn(id, [this, &system] {
      std::lock_guard lock(mutex_);
      gather_timer_ = false;
      run_batch(system.scheduler().now());
    });
  });
}

void BlockHost::on_mailbox_empty(ActorSystem& system) {
  std::lock_guard lock(mutex_);
  if (batch_.empty()) return;
  const auto now = system.scheduler().now();
  if (const auto by = gathered_by(); now < by) return run_batch_at(system, by);
  run_batch(now);
}

Result<StepResult> BlockHost::handle(ActorContext& ctx, const Step& m) {
  std::lock_guard lock(mutex_);
  self_id_ = ctx.self().id;
  const SessionKey key{ctx.sender().peer, m.session};
  const auto now = ctx.system().scheduler().now();
  before_step(key, now);
  auto step = prepare_step(key, m.position, m.tag, m.hidden, m.parents, m.keep, now);
  if (!step.is_ok()) return step.status();
  auto reply = ctx.defer_reply<StepResult>();
  take_step(std::move(step).value(), [reply](Result<TensorPayload> out, std::int64_t length) {
    if (!out.is_ok()) return reply.reply(out.status());
    reply.reply(StepResult{length, std::move(out).value()});
  }, now);
  return StepResult{};  // answered through the deferred reply
}

bool BlockHost::push_allowed(ActorContext& ctx, const PushStep& m) {
  const PeerId sender = ctx.sender().peer;
  if (sender == m.client.peer) return true;  // the session's owner, authenticated by the transport
  const auto key = ctx.system().transport().link_key(m.client.peer);
  if (!key) return true;  // no link keys: a channel only the job's processes reach
  PushGrantScope scope{m.client, m.request, m.session, m.position, m.tag, m.hop, std::nullopt};
  if (!m.next.empty()) scope.next = m.next.front();
  if (grants_.verify(m.grant, scope, *key)) return true;
  if (refused_logged_.insert(sender).second) {
    log(LogLevel::kWarn, "block host: dropped a push from peer ", sender, " into a session of peer ", m.client.peer,
        " without that client's grant (logged once per peer)");
  }
  return false;
}

void BlockHost::handle(ActorContext& ctx, const PushStep& m) {
  std::lock_guard lock(mutex_);
  self_id_ = ctx.self().id;
  if (!push_allowed(ctx, m)) return;
  const SessionKey key{m.client.peer, m.session};
  const auto now = ctx.system().scheduler().now();
  before_step(key, now);
  auto step = prepare_step(key, m.position, m.tag, m.hidden, m.parents, m.keep, now);
  ActorSystem& system = ctx.system();
  const ActorAddress self = ctx.self();
  if (!step.is_ok()) return push_onward(system, self, m, step.status());
  take_step(std::move(step).value(), [&system, self, m](Result<TensorPayload> out, std::int64_t) {
    push_onward(system, self, m, std::move(out));
  }, now);
}

void BlockHost::push_onward(ActorSystem& system, ActorAddress self, const PushStep& m, Result<TensorPayload> out) {
  const ActorRef<ClientDriverProtocol> client{m.client};
  PushedOutput report{m.request, m.tag, m.hop, self.peer, 0, "", {}};
  if (!out.is_ok()) {
    if (out.status().code() == StatusCode::kCancelled) return;  // a stale attempt: the client moved on
    report.code = static_cast<std::int32_t>(out.status().code());
    report.message = out.status().message();
    (void)system.send(client, report, self.id);
    return;
  }
  report.hidden = out.value();
  // The next host first: it is on the token's critical path, the client's copy is not (the
  // client keeps it to replay the hop after a failure).
  Status pushed = Status::ok();
  ActorRef<BlockHostProtocol> next{};
  if (!m.next.empty()) {
    next = ActorRef<BlockHostProtocol>{m.next.front().host};
    PushStep forward{m.client, m.request, m.next.front().session, m.position, m.tag, m.hop + 1,
                     std::vector<PushTarget>(m.next.begin() + 1, m.next.end()), std::move(out).value(),
                     m.next.front().grant, m.parents, m.keep};
    pushed = system.send(next, forward, self.id);
  }
  (void)system.send(client, report, self.id);
  if (!pushed.is_ok()) {
    (void)system.send(client, PushedOutput{m.request, m.tag, m.hop + 1, next.address.peer,
                                           static_cast<std::int32_t>(StatusCode::kPeerFailed),
                                           "cannot push to the next host: " + pushed.message(), {}},
                      self.id);
  }
}

Result<BlockHost::TrainingInput> BlockHost::check_training(std::int64_t first, std::int64_t last,
                                                           const std::vector<std::int64_t>& lengths,
                                                           const TensorPayload& hidden, const TensorPayload& prompts,
                                                           std::int64_t prompt_offset) {
  if (leaving_) return error(StatusCode::kUnavailable, "the host is leaving");
  if (!blocks_) return error(StatusCode::kUnavailable, "the host serves no blocks yet");
  if (first >= last) return error(StatusCode::kInvalidArgument, "an empty block range [", first, ", ", last, ")");
  if (first < blocks_->first() || last > blocks_->last()) {
    // kNotFound, as for a session that is gone: the client's map is stale (the host moved).
    return error(StatusCode::kNotFound, "blocks [", first, ", ", last, ") are not a part of the served blocks [",
                 blocks_->first(), ", ", blocks_->last(), ")");
  }
  const std::int64_t h = blocks_->config().hidden_size;
  std::int64_t tokens = 0;
  for (std::int64_t n : lengths) {
    if (n < 1 || n > blocks_->config().max_position_embeddings) {
      return error(StatusCode::kInvalidArgument, "a sequence of ", n, " tokens; lengths must be between 1 and ",
                   blocks_->config().max_position_embeddings);
    }
    tokens += n;
  }
  if (lengths.empty()) return error(StatusCode::kInvalidArgument, "a training pass needs at least one sequence");
  if (tokens > options_.max_training_tokens) {
    return error(StatusCode::kResourceExhausted, "a training pass of ", tokens, " tokens; the limit is ",
                 options_.max_training_tokens);
  }
  if (hidden_tokens(hidden) != tokens) {
    return error(StatusCode::kInvalidArgument, "the sequences hold ", tokens, " tokens but the hidden states ",
                 hidden_tokens(hidden));
  }
  const std::int64_t working = blocks_->training_working_bytes(tokens, last - first);
  const std::int64_t left = options_.cache_budget_bytes - cache_bytes_used();
  if (working > left) {
    return error(StatusCode::kResourceExhausted, "a training pass of ", tokens, " tokens needs ", working,
                 " bytes of working memory; the caches leave ", left, " of the budget");
  }
  TrainingInput in;
  if (prompts.elements() > 0) {
    if (prompts.type != ElementType::kF32 || prompts.shape.size() != 3 || prompts.shape[0] != last - first ||
        prompts.shape[2] != h || prompts.shape[1] < 1 ||
        prompts.bytes != static_cast<std::size_t>(prompts.elements()) * sizeof(float)) {
      return error(StatusCode::kInvalidArgument, "deep prompts must be f32 [", last - first, ", count, ", h, "]");
    }
    const std::int64_t count = prompts.shape[1];
    for (std::int64_t n : lengths) {
      if (prompt_offset < 0 || prompt_offset + count > n) {
        return error(StatusCode::kInvalidArgument, "deep prompts at positions [", prompt_offset, ", ",
                     prompt_offset + count, ") do not fit in a sequence of ", n, " tokens");
      }
    }
    in.prompts = DeepPrompts{prompts.as<float>(), count, prompt_offset};
  }
  auto decoded = decode_hidden(hidden, h);
  if (!decoded.is_ok()) return decoded.status();
  in.hidden = std::move(decoded).value();
  return in;
}

Result<TrainForwardOutput> BlockHost::handle(ActorContext& ctx, const TrainForward& m) {
  std::lock_guard lock(mutex_);
  run_batch(ctx.system().scheduler().now());  // the steps gathered so far go first
  expire_idle(ctx.system().scheduler().now());
  auto in = check_training(m.first, m.last, m.lengths, m.hidden, m.prompts, m.prompt_offset);
  if (!in.is_ok()) return in.status();
  TrainingInput& t = in.value();
  auto adapters = training_adapters(ctx.sender().peer, m.adapter, m.first, m.last, ctx.system().scheduler().now());
  if (!adapters.is_ok()) return adapters.status();
  const auto& a = adapters.value();
  try {
    blocks_->forward_sequences(t.hidden.data(), m.lengths, m.first, m.last - m.first, t.prompts ? &*t.prompts : nullptr,
                               a ? &*a : nullptr);
    const std::int64_t h = blocks_->config().hidden_size;
    return TrainForwardOutput{encode_hidden(t.hidden.data(), hidden_tokens(m.hidden), h, is_compressed_hidden(m.hidden))};
  } catch (const Error& e) {
    return error(StatusCode::kInvalidArgument, e.what());
  }
}

Result<TrainBackwardOutput> BlockHost::handle(ActorContext& ctx, const TrainBackward& m) {
  std::lock_guard lock(mutex_);
  run_batch(ctx.system().scheduler().now());  // the steps gathered so far go first
  expire_idle(ctx.system().scheduler().now());
  auto in = check_training(m.first, m.last, m.lengths, m.hidden, m.prompts, m.prompt_offset);
  if (!in.is_ok()) return in.status();
  TrainingInput& t = in.value();
  const std::int64_t h = blocks_->config().hidden_size, tokens = hidden_tokens(m.hidden);
  if (m.grad.type != ElementType::kF32 || m.grad.shape != std::vector<std::int64_t>{tokens, h} ||
      m.grad.bytes != static_cast<std::size_t>(tokens * h) * sizeof(float)) {
    return error(StatusCode::kInvalidArgument, "the output gradient must be f32 [", tokens, ", ", h, "]");
  }
  auto adapters = training_adapters(ctx.sender().peer, m.adapter, m.first, m.last, ctx.system().scheduler().now());
  if (!adapters.is_ok()) return adapters.status();
  const auto& a = adapters.value();
  auto grad = std::make_shared<std::vector<float>>(m.grad.as<float>(), m.grad.as<float>() + tokens * h);
  const std::int64_t blocks = m.last - m.first, count = t.prompts ? t.prompts->count : 0;
  const std::int64_t per_block = a ? a->shape.values_per_block(blocks_->config()) : 0;
  auto prompt_grads = std::make_shared<std::vector<float>>(static_cast<std::size_t>(blocks * count * h));
  auto adapter_grads = std::make_shared<std::vector<float>>(static_cast<std::size_t>(blocks * per_block));
  try {
    blocks_->backward_sequences(t.hidden.data(), m.lengths, m.first, blocks, t.prompts ? &*t.prompts : nullptr,
                                grad->data(), prompt_grads->data(), a ? &*a : nullptr, a ? adapter_grads->data() : nullptr);
  } catch (const Error& e) {
    return error(StatusCode::kInvalidArgument, e.what());
  }
  TrainBackwardOutput out;
  out.grad = share_vector<float>(ElementType::kF32, {tokens, h}, grad);
  if (count > 0) out.prompt_grads = share_vector<float>(ElementType::kF32, {blocks, count, h}, prompt_grads);
  if (a) out.adapter_grads = share_vector<float>(ElementType::kF32, {blocks, per_block}, adapter_grads);
  return out;
}

Result<SessionState> BlockHost::handle(ActorContext& ctx, const Rollback& m) {
  std::lock_guard lock(mutex_);
  run_batch(ctx.system().scheduler().now());  // the steps gathered so far go first
  auto found = find({ctx.sender().peer, m.session}, ctx.system().scheduler().now());
  if (!found.is_ok()) return found.status();
  Session& s = *found.value();
  if (m.length < 0 || m.length > s.cache.length()) {
    return error(StatusCode::kInvalidArgument, "cannot roll session ", m.session, " back to ", m.length,
                 ": it holds ", s.cache.length(), " positions");
  }
  if (m.length > 0 && m.length < s.cache.earliest_length()) {
    return error(StatusCode::kFailedPrecondition, "cannot roll session ", m.session, " back to ", m.length,
                 ": its blocks with a sliding window keep positions from ", s.cache.earliest_length(), " on only");
  }
  if (m.tag != 0) s.tag = std::max(s.tag, m.tag);
  s.cache.truncate(m.length);
  s.tree.clear();
  return SessionState{m.session, m.length};
}

Result<SessionState> BlockHost::handle(ActorContext& ctx, const CloseSession& m) {
  std::lock_guard lock(mutex_);
  run_batch(ctx.system().scheduler().now());  // the steps gathered so far go first
  auto found = find({ctx.sender().peer, m.session}, ctx.system().scheduler().now());
  if (!found.is_ok()) return found.status();
  const std::int64_t length = found.value()->cache.length();
  sessions_.erase({ctx.sender().peer, m.session});
  return SessionState{m.session, length};
}

void BlockHost::handle(ActorContext& ctx, const Shutdown& m) {
  {
    std::lock_guard lock(mutex_);
    if (ctx.sender().peer != options_.coordinator) {
      if (refused_logged_.insert(ctx.sender().peer).second) {
        log(LogLevel::kWarn, "block host: ignored a shutdown from peer ", ctx.sender().peer,
            ", which is not the coordinator (logged once per peer)");
      }
      return;
    }
    sessions_.clear();
    held_adapters_.clear();
  }
  if (options_.on_shutdown) options_.on_shutdown(m.reason);
}

void BlockHost::on_peer_failed(ActorSystem&, PeerId peer, const Status&) {
  std::lock_guard lock(mutex_);
  // A dead client's sessions would only hold memory until their idle timeout.
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (it->first.first == peer) it = sessions_.erase(it);
    else ++it;
  }
  std::erase_if(held_adapters_, [&](const HeldAdapter& h) { return h.client == peer; });
}

}  // namespace sepal
