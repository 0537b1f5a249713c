// The daemon's counters and histograms, served as Prometheus text.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace modeld::daemon {

class Histogram {
 public:
  static constexpr std::array<double, 12> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  void Observe(double seconds);
  void Render(const std::string& name, const std::string& help, std::string* out) const;

 private:
  mutable std::mutex mu_;
  std::array<uint64_t, kBounds.size()> buckets_{};
  uint64_t count_ = 0;
  double sum_ = 0;
};

class Metrics {
 public:
  void CountRequest(const std::string& endpoint, int status);
  void CountEviction(const std::string& reason);
  void AddTokens(int64_t reused, int64_t prefilled, int64_t generated);

  Histogram prefill_seconds;
  Histogram decode_seconds;
  Histogram first_token_seconds;

  // Gauges are passed in: they are read from the session table at render time.
  std::string Render(int64_t sessions, int64_t tokens_resident, int64_t kv_bytes, int64_t memory_bytes) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, uint64_t> evictions_;
  int64_t reused_ = 0, prefilled_ = 0, generated_ = 0;
};

}  // namespace modeld::daemon
