#include "modeld/compute_gate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
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
    // Thread i takes its ticket before thread i+1 is started.
    while (gate.waiting() < static_cast<uint64_t>(i + 1)) std::this_thread::yield();
  }
  first.reset();
  for (auto& t : ts) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(ComputeGate, BackgroundWaitsWhileForegroundIsWaitingOrWithinTheGrace) {
  ComputeGate gate(std::chrono::milliseconds(200));
  std::vector<std::string> order;
  std::mutex order_mu;
  auto log = [&](const char* who) {
    std::lock_guard lock(order_mu);
    order.push_back(who);
  };
  auto held = std::make_unique<ComputeGate::Turn>(gate.Acquire());  // a foreground turn running
  std::thread bg([&] {
    ComputeGate::BackgroundScope scope(gate);
    auto turn = gate.Acquire();
    log("bg");
  });
  while (gate.waiting() < 1) std::this_thread::yield();  // bg is waiting first
  std::thread fg([&] {
    auto turn = gate.Acquire();
    log("fg");
  });
  while (gate.waiting() < 2) std::this_thread::yield();
  const auto released = std::chrono::steady_clock::now();
  held.reset();
  fg.join();
  bg.join();
  // The foreground turn came later but went first; the background one waited out the grace.
  EXPECT_EQ(order, (std::vector<std::string>{"fg", "bg"}));
  EXPECT_GE(std::chrono::steady_clock::now() - released, std::chrono::milliseconds(200));
}

// A background worker running turn after turn delays a foreground request's
// turns by at most the one it is running: once the request has had a turn,
// the grace keeps the background out until the request is done.
TEST(ComputeGate, BackgroundDelaysAForegroundRequestByAtMostOneTurn) {
  // A grace far beyond any gap a loaded machine puts between the "decode"'s turns.
  ComputeGate gate(std::chrono::milliseconds(2000));
  struct Grant {
    uint64_t waited;
    bool background;
  };
  std::vector<Grant> grants;
  gate.SetObserver([&](uint64_t waited, bool background) { grants.push_back({waited, background}); });
  std::atomic<bool> stop{false};
  std::atomic<int> bg_turns{0};
  std::thread bg([&] {
    ComputeGate::BackgroundScope scope(gate);
    while (!stop) {
      auto turn = gate.Acquire();
      ++bg_turns;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // one "batch"
    }
  });
  while (bg_turns < 3) std::this_thread::yield();
  for (int i = 0; i < 20; ++i) {  // a "decode": turns with short gaps between them
    auto turn = gate.Acquire();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stop = true;
  bg.join();
  int fg_seen = 0, fg_waited = 0, bg_during = 0;
  for (const auto& g : grants) {
    if (!g.background) {
      ++fg_seen;
      fg_waited += static_cast<int>(g.waited);
    } else if (fg_seen > 0 && fg_seen < 20) {
      ++bg_during;
    }
  }
  EXPECT_EQ(fg_seen, 20);
  EXPECT_LE(fg_waited, 1);  // only the first turn may have waited, for the batch then running
  EXPECT_EQ(bg_during, 0);
}

// A foreground request that waits on background work promotes it: the background turns then
// alternate with a busy foreground instead of waiting for it to go idle.
TEST(ComputeGate, PromotedBackgroundAlternatesWithForeground) {
  ComputeGate gate(std::chrono::milliseconds(5000));  // no gap of the busy foreground reaches it
  std::vector<bool> grants;                           // background? (the observer runs under the gate's lock)
  gate.SetObserver([&](uint64_t, bool background) { grants.push_back(background); });
  std::atomic<bool> stop{false};
  std::atomic<int> fg_turns{0};
  std::atomic<int> bg_turns{0};
  // A busy foreground (no gap reaches the grace): the background gets nothing.
  std::thread fg([&] {
    while (!stop) {
      auto turn = gate.Acquire();
      ++fg_turns;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  while (fg_turns < 2) std::this_thread::yield();
  std::thread bg([&] {
    ComputeGate::BackgroundScope scope(gate);
    while (bg_turns < 5) {
      auto turn = gate.Acquire();
      ++bg_turns;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  const std::thread::id bg_id = bg.get_id();
  const uint64_t granted_before = gate.granted();
  while (gate.granted() < granted_before + 50) std::this_thread::yield();  // 50 foreground turns
  EXPECT_EQ(bg_turns.load(), 0);
  gate.Promote(bg_id);
  bg.join();  // would hang without the promotion
  stop = true;
  fg.join();
  // After the first background turn, no two background turns are granted in a row while the
  // foreground computes.
  auto first_bg = std::find(grants.begin(), grants.end(), true);
  ASSERT_NE(first_bg, grants.end());
  int bg_seen = 0;
  for (auto it = first_bg; it != grants.end(); ++it) {
    if (*it) {
      ++bg_seen;
      if (bg_seen < 5 && it + 1 != grants.end()) {
        EXPECT_FALSE(*(it + 1)) << "two background turns in a row";
      }
    }
  }
  EXPECT_EQ(bg_seen, 5);
  gate.Promote(bg_id);  // the scope is gone: a no-op
}

}  // namespace
}  // namespace modeld
