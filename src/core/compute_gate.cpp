#include "modeld/compute_gate.h"

#include <algorithm>

namespace modeld {

ComputeGate::BackgroundScope::BackgroundScope(ComputeGate& gate) : gate_(gate) {
  std::lock_guard lock(gate_.mu_);
  gate_.background_threads_.push_back(std::this_thread::get_id());
}

ComputeGate::BackgroundScope::~BackgroundScope() {
  std::lock_guard lock(gate_.mu_);
  auto& v = gate_.background_threads_;
  if (auto it = std::find(v.begin(), v.end(), std::this_thread::get_id()); it != v.end()) v.erase(it);
}

bool ComputeGate::IsBackgroundThread() const {
  return std::find(background_threads_.begin(), background_threads_.end(), std::this_thread::get_id()) !=
         background_threads_.end();
}

ComputeGate::Turn ComputeGate::Acquire() {
  std::unique_lock lock(mu_);
  // The turns granted before this request, less the one running then (it is waited for too).
  const uint64_t granted_before = granted_ - (held_ ? 1 : 0);
  const bool background = IsBackgroundThread();
  if (!background) {
    const uint64_t ticket = fg_next_++;
    cv_.wait(lock, [&] { return !held_ && fg_serving_ == ticket; });
  } else {
    const uint64_t ticket = bg_next_++;
    for (;;) {
      if (!held_ && bg_serving_ == ticket && fg_next_ == fg_serving_) {
        const auto until = last_fg_release_ + grace_;
        if (Clock::now() >= until) break;
        cv_.wait_until(lock, until);
      } else {
        cv_.wait(lock);
      }
    }
  }
  held_ = true;
  if (observer_) observer_(granted_ - granted_before, background);
  ++granted_;
  return Turn(this, background);
}

void ComputeGate::Release(bool background) {
  {
    std::lock_guard lock(mu_);
    held_ = false;
    if (background) {
      ++bg_serving_;
    } else {
      ++fg_serving_;
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

}  // namespace modeld
