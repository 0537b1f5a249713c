#include "daemon/metrics.h"

#include <cstdio>

namespace modeld::daemon {
namespace {

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void Line(std::string* out, const std::string& name, const std::string& labels, double v) {
  out->append(name);
  if (!labels.empty()) out->append("{").append(labels).append("}");
  out->append(" ").append(Num(v)).push_back('\n');
}

void Header(std::string* out, const std::string& name, const char* type, const std::string& help) {
  *out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

void Histogram::Observe(double seconds) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) ++buckets_[i];
  }
  ++count_;
  sum_ += seconds;
}

void Histogram::Render(const std::string& name, const std::string& help, std::string* out) const {
  std::lock_guard lock(mu_);
  Header(out, name, "histogram", help);
  for (size_t i = 0; i < kBounds.size(); ++i) {
    Line(out, name + "_bucket", "le=\"" + Num(kBounds[i]) + "\"", static_cast<double>(buckets_[i]));
  }
  Line(out, name + "_bucket", "le=\"+Inf\"", static_cast<double>(count_));
  Line(out, name + "_sum", "", sum_);
  Line(out, name + "_count", "", static_cast<double>(count_));
}

void Metrics::CountRequest(const std::string& endpoint, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{endpoint, status}];
}

void Metrics::CountEviction(const std::string& reason) {
  std::lock_guard lock(mu_);
  ++evictions_[reason];
}

void Metrics::AddTokens(int64_t reused, int64_t prefilled, int64_t generated) {
  std::lock_guard lock(mu_);
  reused_ += reused;
  prefilled_ += prefilled;
  generated_ += generated;
}

std::string Metrics::Render(int64_t sessions, int64_t tokens_resident, int64_t kv_bytes, int64_t memory_bytes) const {
  std::string out;
  Header(&out, "modeld_sessions", "gauge", "Open sessions.");
  Line(&out, "modeld_sessions", "", static_cast<double>(sessions));
  Header(&out, "modeld_tokens_resident", "gauge", "Tokens resident in the KV caches of all sessions.");
  Line(&out, "modeld_tokens_resident", "", static_cast<double>(tokens_resident));
  Header(&out, "modeld_kv_bytes", "gauge", "KV cache bytes of all sessions at full n_ctx.");
  Line(&out, "modeld_kv_bytes", "", static_cast<double>(kv_bytes));
  Header(&out, "modeld_memory_bytes", "gauge",
         "What --kv-budget-mb counts: KV and compute buffers of all sessions, of sessions being opened and of the "
         "second sessions of compactions under way.");
  Line(&out, "modeld_memory_bytes", "", static_cast<double>(memory_bytes));
  {
    std::lock_guard lock(mu_);
    Header(&out, "modeld_tokens_reused_total", "counter", "Prompt tokens reused from warm KV.");
    Line(&out, "modeld_tokens_reused_total", "", static_cast<double>(reused_));
    Header(&out, "modeld_tokens_prefilled_total", "counter", "Prompt tokens evaluated.");
    Line(&out, "modeld_tokens_prefilled_total", "", static_cast<double>(prefilled_));
    Header(&out, "modeld_tokens_generated_total", "counter", "Tokens generated.");
    Line(&out, "modeld_tokens_generated_total", "", static_cast<double>(generated_));
    Header(&out, "modeld_evictions_total", "counter", "Sessions evicted, by reason.");
    for (const char* r : {"lru", "fatal"}) {
      auto it = evictions_.find(r);
      std::string label = "reason=\"";
      label.append(r).push_back('"');
      Line(&out, "modeld_evictions_total", label, it == evictions_.end() ? 0.0 : static_cast<double>(it->second));
    }
    Header(&out, "modeld_requests_total", "counter", "Requests by endpoint and HTTP status.");
    for (const auto& [k, v] : requests_) {
      Line(&out, "modeld_requests_total", "endpoint=\"" + k.first + "\",code=\"" + std::to_string(k.second) + "\"",
           static_cast<double>(v));
    }
  }
  prefill_seconds.Render("modeld_prefill_seconds", "Time of prefix and suffix prefills.", &out);
  decode_seconds.Render("modeld_decode_seconds", "Time of whole decode calls.", &out);
  first_token_seconds.Render("modeld_first_token_seconds", "Decode call to first sampled token.", &out);
  return out;
}

}  // namespace modeld::daemon
