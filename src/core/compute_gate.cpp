#include "modeld/compute_gate.h"

#include <algorithm>

namespace modeld {

ComputeGate::BackgroundScope::BackgroundScope(ComputeGate& gate) : gate_(gate) {
  std::lock_guard lock(gate_.mu_);
  gate_.background_threads_.push_back({std::this_thread::get_id(), false});
}

ComputeGate::BackgroundScope::~BackgroundScope() {
  std::lock_guard lock(gate_.mu_);
  auto& v = gate_.background_threads_;
  const auto id = std::this_thread::get_id();
  std::erase_if(v, [&](const BackgroundThread& t) { return t.id == id; });
}

ComputeGate::BackgroundThread* ComputeGate::FindBackground(std::thread::id id) {
  auto it = std::find_if(background_threads_.begin(), background_threads_.end(),
                         [&](const BackgroundThread& t) { return t.id == id; });
  return it == background_threads_.end() ? nullptr : &*it;
}

void ComputeGate::Promote(std::thread::id id) {
  {
    std::lock_guard lock(mu_);
    BackgroundThread* t = FindBackground(id);
    if (!t) return;
    t->promoted = true;
  }
  cv_.notify_all();
}

ComputeGate::Turn ComputeGate::Acquire() {
  std::unique_lock lock(mu_);
  // The turns granted before this request, less the one running then (it is waited for too).
  const uint64_t granted_before = granted_ - (held_ ? 1 : 0);
  const auto self = std::this_thread::get_id();
  const bool background = FindBackground(self) != nullptr;
  bool promoted = false;
  if (!background) {
    const uint64_t ticket = fg_next_++;
    fg_pending_ = fg_next_ - fg_serving_;
    // A promoted background turn waiting goes first unless the last turn was one.
    cv_.wait(lock, [&] { return !held_ && fg_serving_ == ticket && !(promoted_waiting_ && !last_promoted_); });
  } else {
    const uint64_t ticket = bg_next_++;
    for (;;) {
      // Looked up each time: a Promote() may come while this waits.
      const BackgroundThread* t = FindBackground(self);
      promoted = t && t->promoted;
      const bool next = bg_serving_ == ticket;
      const bool fg_waiting = fg_next_ != fg_serving_;
      if (next && promoted) promoted_waiting_ = true;
      if (!held_ && next) {
        if (promoted) {
          if (!fg_waiting || !last_promoted_) break;
        } else if (!fg_waiting) {
          const auto until = last_fg_release_ + grace_;
          if (Clock::now() >= until) break;
          cv_.wait_until(lock, until);
          continue;
        }
      }
      cv_.wait(lock);
    }
    promoted_waiting_ = false;
  }
  held_ = true;
  last_promoted_ = promoted;
  if (observer_) observer_(granted_ - granted_before, background);
  ++granted_;
  return Turn(this, background, background && !promoted);
}

void ComputeGate::Release(bool background) {
  {
    std::lock_guard lock(mu_);
    held_ = false;
    if (background) {
      ++bg_serving_;
    } else {
      ++fg_serving_;
      fg_pending_ = fg_next_ - fg_serving_;
      last_fg_release_ = Clock::now();
    }
  }
  cv_.notify_all();
}

void ComputeGate::SetObserver(std::function<void(uint64_t, bool)> observer) {
  std::lock_guard lock(mu_);
  observer_ = std::move(observer);
}

uint64_t ComputeGate::granted() const {
  std::lock_guard lock(mu_);
  return granted_;
}

uint64_t ComputeGate::waiting() const {
  std::lock_guard lock(mu_);
  // A ticket is served (counted) at its release: the turn running now is not waiting.
  return (fg_next_ - fg_serving_) + (bg_next_ - bg_serving_) - (held_ ? 1 : 0);
}

}  // namespace modeld
