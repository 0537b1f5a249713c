#include "modeld/compute_gate.h"

namespace modeld {

ComputeGate::Turn ComputeGate::Acquire() {
  std::unique_lock lock(mu_);
  const uint64_t ticket = next_ticket_++;
  const uint64_t ahead = ticket - serving_;
  cv_.wait(lock, [&] { return serving_ == ticket; });
  if (observer_) observer_(ahead);
  return Turn(this);
}

void ComputeGate::Release() {
  {
    std::lock_guard lock(mu_);
    ++serving_;
  }
  cv_.notify_all();
}

void ComputeGate::SetObserver(std::function<void(uint64_t)> observer) {
  std::lock_guard lock(mu_);
  observer_ = std::move(observer);
}

uint64_t ComputeGate::granted() const {
  std::lock_guard lock(mu_);
  return serving_;
}

}  // namespace modeld
