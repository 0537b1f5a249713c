#include "modeld/compute_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace modeld {
namespace {

TEST(ComputeGate, OneTurnAtATime) {
  ComputeGate gate;
  std::atomic<int> inside{0};
  std::atomic<int> max_inside{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        auto turn = gate.Acquire();
        const int now = ++inside;
        int m = max_inside.load();
        while (now > m && !max_inside.compare_exchange_weak(m, now)) {
        }
        --inside;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(max_inside.load(), 1);
  EXPECT_EQ(gate.granted(), 800u);
}

TEST(ComputeGate, GrantsInArrivalOrder) {
  ComputeGate gate;
  std::vector<int> order;
  std::mutex order_mu;
  auto first = std::make_unique<ComputeGate::Turn>(gate.Acquire());  // hold the gate
  std::vector<std::thread> ts;
  for (int i = 0; i < 5; ++i) {
    ts.emplace_back([&, i] {
      auto turn = gate.Acquire();
      std::lock_guard lock(order_mu);
      order.push_back(i);
    });
    // Let thread i take its ticket before thread i+1 is started.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  first.reset();
  for (auto& t : ts) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

}  // namespace
}  // namespace modeld
