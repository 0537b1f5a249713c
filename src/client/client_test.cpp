// The client against a real daemon started in-process on a temp socket, with generated models:
// the session contract must behave the same over the wire as in-process.
#include "client/client.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

#include "client/remote_session.h"
#include "daemon/server.h"
#include "llama/test_models.h"
#include "modeld/service.h"
#include "modeld/workspace.h"
#include "workspace/text_format.h"

namespace modeld::client {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::string& TinyModel() {
  static const std::string path = testing::GeneratedModel("tiny", "client-test-tiny");
  return path;
}
const std::string& EmbedModel() {
  static const std::string path = testing::GeneratedModel("tiny-embed", "client-test-embed");
  return path;
}
constexpr const char* kTinyName = "client-test-tiny";  // served name: the file stem
constexpr const char* kEmbedName = "client-test-embed";

SessionConfig Config(int32_t n_ctx = 2048) {
  SessionConfig c;
  c.n_ctx = n_ctx;
  c.n_batch = 64;  // several batches per prefix, so streamed prefixes report progress
  c.threads = 2;
  return c;
}

// Unix socket paths are limited to ~108 bytes; fall back to /tmp for a deep build folder.
std::string SocketPath() {
  std::string dir = MODELD_TEST_TMP;
  if (dir.size() > 80) dir = fs::temp_directory_path().string();
  return dir + "/client-test-" + std::to_string(getpid()) + ".sock";
}

class ClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon::ServerOptions opt;
    opt.socket_path = SocketPath();
    opt.models = {TinyModel(), EmbedModel()};
    opt.threads = 2;
    opt.log_requests = false;
    auto s = daemon::Server::Start(opt);
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    server_ = std::move(*s);
  }
  static void TearDownTestSuite() {
    if (server_) server_->Stop();
    server_.reset();
  }
  void SetUp() override { ASSERT_NE(server_, nullptr) << "the daemon did not start"; }

  static Client MakeClient() { return Client(server_->socket_path()); }

  static std::unique_ptr<RemoteSession> OpenRemote(const std::string& ws, SessionConfig cfg = Config()) {
    auto s = RemoteSession::Open(MakeClient(), ws, kTinyName, cfg);
    EXPECT_TRUE(s.has_value()) << s.error().ToString();
    return s ? std::move(*s) : nullptr;
  }
  static std::unique_ptr<Session> OpenLocal(const std::string& ws, SessionConfig cfg = Config()) {
    OpenSessionRequest req;
    req.model_path = TinyModel();
    req.workspace_id = ws;
    req.config = cfg;
    auto s = Service().OpenSession(req);
    EXPECT_TRUE(s.has_value()) << s.error().ToString();
    return s ? std::move(*s) : nullptr;
  }

  // One daemon for the suite; stopped in TearDownTestSuite, before static destruction.
  static std::unique_ptr<daemon::Server> server_;
};
std::unique_ptr<daemon::Server> ClientTest::server_;

std::vector<std::string> Files() {
  return {
      "// util.h\nint clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }\n",
      "// main.c\n#include \"util.h\"\nint main(int argc, char** argv) {\n  return clamp(argc, 0, 3);\n}\n",
      "// notes.md\nThe build uses CMake. Tests run with ctest. Keep functions short.\n",
  };
}

ContextManifest Prefix(const std::vector<std::string>& files) {
  ContextManifest m;
  m.Add("system", SegmentKind::kSystem, "You are a careful coding assistant.\n");
  for (size_t i = 0; i < files.size(); ++i) m.Add("file:" + std::to_string(i), SegmentKind::kFile, files[i]);
  return m;
}

SuffixInput Suffix(const std::string& digest, const std::string& question) {
  SuffixInput in;
  in.prefix_digest = digest;
  in.segments.push_back(ManifestSegment::Make("user", SegmentKind::kUser, question));
  return in;
}

struct Turn {
  PrefixStatus prefix;
  SuffixStatus suffix;
  DecodeResult decode;
  std::string streamed;  // the chunks' text, concatenated
};

// A three-turn coding loop with edits, through the Session contract only.
std::vector<Turn> RunLoop(Session& s) {
  std::vector<std::string> files = Files();
  const std::vector<std::string> questions = {"What does main return?", "Is clamp correct?", "What next?"};
  std::vector<Turn> turns;
  for (int t = 0; t < 3; ++t) {
    if (t == 1) files[1] = "// main.c\n#include \"util.h\"\nint main(void) {\n  return clamp(7, 0, 3);\n}\n";
    if (t == 2) files[2] += "Prefer early returns.\n";
    Turn turn;
    auto ps = s.EnsurePrefix({Prefix(files), {}});
    EXPECT_TRUE(ps.has_value()) << ps.error().ToString();
    if (!ps) return turns;
    turn.prefix = *ps;
    auto ss = s.PrefillSuffix(Suffix(ps->manifest_digest, questions[static_cast<size_t>(t)]));
    EXPECT_TRUE(ss.has_value()) << ss.error().ToString();
    if (!ss) return turns;
    turn.suffix = *ss;
    DecodeConfig dc;
    dc.max_tokens = 12;
    auto dr = s.Decode(dc, [&](const StreamChunk& c) {
      turn.streamed += c.text;
      return true;
    });
    EXPECT_TRUE(dr.has_value()) << dr.error().ToString();
    if (!dr) return turns;
    turn.decode = *dr;
    turns.push_back(std::move(turn));
  }
  return turns;
}

TEST_F(ClientTest, HealthModelsDescribeMetrics) {
  const Client c = MakeClient();
  auto h = c.Health();
  ASSERT_TRUE(h.has_value()) << h.error().ToString();
  EXPECT_EQ(h->status, "ok");
  EXPECT_EQ(h->models, 2);

  auto models = c.Models();
  ASSERT_TRUE(models.has_value()) << models.error().ToString();
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].model, kTinyName);
  EXPECT_EQ((*models)[1].model, kEmbedName);

  OpenSessionRequest req;
  req.model_path = TinyModel();
  auto local = Service().Describe(req);
  ASSERT_TRUE(local.has_value());
  auto d = c.Describe(kTinyName);
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_EQ(d->digest, local->digest);
  EXPECT_EQ(d->architecture, local->architecture);
  EXPECT_EQ(d->vocab_size, local->vocab_size);
  EXPECT_EQ((*models)[0].digest, local->digest);

  auto m = c.Metrics();
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_NE(m->find("modeld_sessions"), std::string::npos);
}

// (a) The loop over the wire equals the loop in-process: same reuse counts, same greedy text.
TEST_F(ClientTest, LoopOverTheWireMatchesInProcess) {
  auto local = OpenLocal("loop-local");
  auto remote = OpenRemote("loop");
  ASSERT_TRUE(local && remote);
  EXPECT_TRUE(remote->created());
  const auto want = RunLoop(*local);
  const auto got = RunLoop(*remote);
  ASSERT_EQ(want.size(), 3u);
  ASSERT_EQ(got.size(), 3u);
  for (size_t t = 0; t < 3; ++t) {
    SCOPED_TRACE("turn " + std::to_string(t));
    EXPECT_EQ(got[t].prefix.manifest_digest, want[t].prefix.manifest_digest);
    EXPECT_EQ(got[t].prefix.tokens_reused, want[t].prefix.tokens_reused);
    EXPECT_EQ(got[t].prefix.tokens_prefilled, want[t].prefix.tokens_prefilled);
    EXPECT_EQ(got[t].prefix.tokens_resident, want[t].prefix.tokens_resident);
    EXPECT_EQ(got[t].prefix.first_diff_segment, want[t].prefix.first_diff_segment);
    EXPECT_EQ(got[t].prefix.segment_tokens, want[t].prefix.segment_tokens);
    EXPECT_EQ(got[t].suffix.tokens_reused, want[t].suffix.tokens_reused);
    EXPECT_EQ(got[t].suffix.tokens_prefilled, want[t].suffix.tokens_prefilled);
    EXPECT_EQ(got[t].suffix.tokens_resident, want[t].suffix.tokens_resident);
    EXPECT_EQ(got[t].decode.text, want[t].decode.text);
    EXPECT_EQ(got[t].decode.tokens_generated, want[t].decode.tokens_generated);
    EXPECT_EQ(got[t].decode.finish, want[t].decode.finish);
    EXPECT_EQ(got[t].streamed, got[t].decode.text);
  }
  // Turns after the first reuse most of the prefix (the edits are in later files).
  EXPECT_GT(got[1].prefix.tokens_reused, 0);
  EXPECT_GT(got[2].prefix.tokens_reused, got[1].prefix.tokens_reused);

  auto lr = local->Report();
  auto rr = remote->Report();
  ASSERT_TRUE(lr.has_value() && rr.has_value());
  EXPECT_EQ(rr->tokens_resident, lr->tokens_resident);
  EXPECT_EQ(rr->total_reused, lr->total_reused);
  EXPECT_EQ(rr->total_prefilled, lr->total_prefilled);
  EXPECT_EQ(rr->total_generated, lr->total_generated);
  EXPECT_EQ(rr->segments.size(), lr->segments.size());
  EXPECT_EQ(rr->workspace_id, "loop");

  auto lt = local->Tokenize("int main() { return 0; }", false);
  auto rt = remote->Tokenize("int main() { return 0; }", false);
  ASSERT_TRUE(lt.has_value() && rt.has_value());
  EXPECT_EQ(*rt, *lt);

  auto list = MakeClient().ListSessions();
  ASSERT_TRUE(list.has_value()) << list.error().ToString();
  bool listed = false;
  for (const auto& s : *list) {
    if (s.report.workspace_id == "loop") {
      listed = true;
      EXPECT_EQ(s.model, kTinyName);
      EXPECT_FALSE(s.busy);
      EXPECT_EQ(s.report.total_prefilled, lr->total_prefilled);
    }
  }
  EXPECT_TRUE(listed);

  EXPECT_TRUE(local->Close().has_value());
  EXPECT_TRUE(remote->Close().has_value());
  auto after = remote->Report();
  ASSERT_FALSE(after.has_value());
  EXPECT_TRUE(after.error().Is(ErrorCode::kSessionClosed));
  auto again = remote->Close();
  ASSERT_FALSE(again.has_value());
  EXPECT_TRUE(again.error().Is(ErrorCode::kSessionClosed));
  auto gone = MakeClient().Report("loop");
  ASSERT_FALSE(gone.has_value());
  EXPECT_TRUE(gone.error().Is(ErrorCode::kNotFound) || gone.error().Is(ErrorCode::kSessionClosed))
      << gone.error().ToString();
}

TEST_F(ClientTest, StreamedPrefixForwardsProgressAndMatches) {
  auto plain = OpenRemote("progress-plain");
  auto streamed = OpenRemote("progress-streamed");
  ASSERT_TRUE(plain && streamed);
  const ContextManifest m = Prefix(Files());
  std::vector<Progress> events;
  auto a = plain->EnsurePrefix({m, {}});
  auto b = streamed->EnsurePrefix({m, [&](const Progress& p) { events.push_back(p); }});
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  ASSERT_TRUE(b.has_value()) << b.error().ToString();
  EXPECT_EQ(b->tokens_prefilled, a->tokens_prefilled);
  EXPECT_EQ(b->manifest_digest, a->manifest_digest);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().stage, "ensure_prefix");
  EXPECT_EQ(events.back().done, events.back().total);
  EXPECT_EQ(events.back().total, b->tokens_prefilled);

  std::vector<Progress> suffix_events;
  SuffixInput in = Suffix(b->manifest_digest, "Explain clamp.");
  in.progress = [&](const Progress& p) { suffix_events.push_back(p); };
  auto s = streamed->PrefillSuffix(in);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_GT(s->tokens_prefilled, 0);
  EXPECT_TRUE(plain->Close().has_value());
  EXPECT_TRUE(streamed->Close().has_value());
}

// (b) Every typed error crosses the wire with its code and details.
TEST_F(ClientTest, TypedErrorsCrossTheWire) {
  // context_overflow, with the same counts as in-process. (llama.cpp rounds n_ctx up to a
  // multiple of 256; the report has the effective size.)
  auto local = OpenLocal("overflow-local", Config(256));
  auto remote = OpenRemote("overflow", Config(256));
  ASSERT_TRUE(local && remote);
  auto local_rep = local->Report();
  ASSERT_TRUE(local_rep.has_value());
  const int64_t n_ctx = local_rep->n_ctx;
  std::vector<std::string> big(static_cast<size_t>(n_ctx / 8), Files()[1]);
  const ContextManifest too_long = Prefix(big);
  auto le = local->EnsurePrefix({too_long, {}});
  auto re = remote->EnsurePrefix({too_long, {}});
  ASSERT_FALSE(le.has_value());
  ASSERT_FALSE(re.has_value());
  EXPECT_TRUE(re.error().Is(ErrorCode::kContextOverflow)) << re.error().ToString();
  ASSERT_TRUE(le.error().overflow().has_value());
  ASSERT_TRUE(re.error().overflow().has_value());
  EXPECT_EQ(re.error().overflow()->stage, "ensure_prefix");
  EXPECT_EQ(re.error().overflow()->stage, le.error().overflow()->stage);
  EXPECT_EQ(re.error().overflow()->resident, le.error().overflow()->resident);
  EXPECT_EQ(re.error().overflow()->additional, le.error().overflow()->additional);
  EXPECT_EQ(re.error().overflow()->n_ctx, n_ctx);

  // A decode that would pass n_ctx fails before any work, also with counts.
  ContextManifest small;
  small.Add("system", SegmentKind::kSystem, "Be brief.\n");
  auto ps = remote->EnsurePrefix({small, {}});
  ASSERT_TRUE(ps.has_value()) << ps.error().ToString();
  DecodeConfig dc;
  dc.max_tokens = static_cast<int32_t>(n_ctx);
  bool called = false;
  auto de = remote->Decode(dc, [&](const StreamChunk&) { return called = true; });
  ASSERT_FALSE(de.has_value());
  EXPECT_FALSE(called);
  EXPECT_TRUE(de.error().Is(ErrorCode::kContextOverflow)) << de.error().ToString();
  ASSERT_TRUE(de.error().overflow().has_value());
  EXPECT_EQ(de.error().overflow()->stage, "decode");
  EXPECT_EQ(de.error().overflow()->resident, ps->tokens_resident);
  EXPECT_EQ(de.error().overflow()->additional, n_ctx);
  EXPECT_EQ(de.error().overflow()->n_ctx, n_ctx);

  // manifest_mismatch: a suffix naming another prefix, and a segment whose digest is stale.
  auto mm = remote->PrefillSuffix(Suffix("0000", "hi"));
  ASSERT_FALSE(mm.has_value());
  EXPECT_TRUE(mm.error().Is(ErrorCode::kManifestMismatch)) << mm.error().ToString();
  ContextManifest stale;
  stale.Add("system", SegmentKind::kSystem, "Be brief.\n").content = "Be verbose.\n";
  auto sd = remote->EnsurePrefix({stale, {}});
  ASSERT_FALSE(sd.has_value());
  EXPECT_TRUE(sd.error().Is(ErrorCode::kManifestMismatch)) << sd.error().ToString();
  auto rep = remote->Report();
  ASSERT_TRUE(rep.has_value());
  EXPECT_EQ(rep->tokens_resident, ps->tokens_resident);  // nothing changed

  // not_found: an unknown workspace, an unknown model.
  RemoteSession nobody(MakeClient(), "no-such-workspace");
  auto nf = nobody.EnsurePrefix({small, {}});
  ASSERT_FALSE(nf.has_value());
  EXPECT_TRUE(nf.error().Is(ErrorCode::kNotFound)) << nf.error().ToString();
  auto nd = nobody.Decode(DecodeConfig{}, {});
  ASSERT_FALSE(nd.has_value());
  EXPECT_TRUE(nd.error().Is(ErrorCode::kNotFound)) << nd.error().ToString();
  auto nm = MakeClient().Describe("no-such-model");
  ASSERT_FALSE(nm.has_value());
  EXPECT_TRUE(nm.error().Is(ErrorCode::kNotFound)) << nm.error().ToString();

  // invalid_argument: a bad config field, bad sampling, a bad workspace id.
  SessionConfig bad = Config();
  bad.kv_type = "q3_weird";
  auto ia = MakeClient().OpenSession("bad-config", kTinyName, bad);
  ASSERT_FALSE(ia.has_value());
  EXPECT_TRUE(ia.error().Is(ErrorCode::kInvalidArgument)) << ia.error().ToString();
  bad = Config();
  bad.n_ctx = 3;
  auto ib = MakeClient().OpenSession("bad-config", kTinyName, bad);
  ASSERT_FALSE(ib.has_value());
  EXPECT_TRUE(ib.error().Is(ErrorCode::kInvalidArgument)) << ib.error().ToString();
  DecodeConfig bad_sampling;
  bad_sampling.max_tokens = 4;
  bad_sampling.top_p = 2.0f;
  auto is = remote->Decode(bad_sampling, {});
  ASSERT_FALSE(is.has_value());
  EXPECT_TRUE(is.error().Is(ErrorCode::kInvalidArgument)) << is.error().ToString();
  auto iw = MakeClient().OpenSession("has space", kTinyName);
  ASSERT_FALSE(iw.has_value());
  EXPECT_TRUE(iw.error().Is(ErrorCode::kInvalidArgument)) << iw.error().ToString();

  // unsupported_feature: embedding with a model that declares no pooling.
  auto uf = MakeClient().Embed(kTinyName, "int main");
  ASSERT_FALSE(uf.has_value());
  EXPECT_TRUE(uf.error().Is(ErrorCode::kUnsupportedFeature)) << uf.error().ToString();

  EXPECT_TRUE(remote->Close().has_value());
}

TEST_F(ClientTest, EmbedMatchesInProcess) {
  EmbedRequest req;
  req.model_path = EmbedModel();
  req.input = "int main() { return 0; }";
  auto local = Service().Embed(req);
  ASSERT_TRUE(local.has_value()) << local.error().ToString();
  auto e = MakeClient().Embed(kEmbedName, req.input);
  ASSERT_TRUE(e.has_value()) << e.error().ToString();
  ASSERT_EQ(e->values.size(), local->values.size());
  for (size_t i = 0; i < e->values.size(); ++i) EXPECT_NEAR(e->values[i], local->values[i], 1e-6f);
  EXPECT_TRUE(e->normalized);
  EXPECT_EQ(e->n_tokens, local->n_tokens);
}

// A daemon that is not there is session_unavailable/unreachable, not a hang or a crash.
TEST(ClientNoDaemon, UnreachableIsTyped) {
  const Client c(std::string(MODELD_TEST_TMP) + "/no-daemon-here.sock");
  auto h = c.Health();
  ASSERT_FALSE(h.has_value());
  EXPECT_TRUE(h.error().Is(ErrorCode::kSessionUnavailable));
  EXPECT_EQ(h.error().reason(), "unreachable");
  auto d = c.Decode("ws", DecodeConfig{}, {});
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().reason(), "unreachable");
  auto bad = c.Report("not/valid");
  ASSERT_FALSE(bad.has_value());
  EXPECT_TRUE(bad.error().Is(ErrorCode::kInvalidArgument));
}

// (c) A decode cancelled from its callback, or through its stop token from another thread, ends
// promptly; the daemon stops generating and the session stays usable.
TEST_F(ClientTest, CancelledDecodeEndsPromptlyAndSessionStaysUsable) {
  auto s = OpenRemote("cancel");
  ASSERT_TRUE(s);
  auto ps = s->EnsurePrefix({Prefix(Files()), {}});
  ASSERT_TRUE(ps.has_value()) << ps.error().ToString();
  ASSERT_TRUE(s->PrefillSuffix(Suffix(ps->manifest_digest, "Write a long essay.")).has_value());

  constexpr int kMax = 1500;
  DecodeConfig dc;
  dc.max_tokens = kMax;
  int chunks = 0;
  std::string seen;
  auto t0 = Clock::now();
  auto dr = s->Decode(dc, [&](const StreamChunk& c) {
    seen += c.text;
    return ++chunks < 2;
  });
  const auto by_callback = Clock::now() - t0;
  ASSERT_TRUE(dr.has_value()) << dr.error().ToString();
  EXPECT_EQ(chunks, 2);
  EXPECT_EQ(dr->finish, FinishReason::kCancelled);
  EXPECT_EQ(dr->text, seen);
  EXPECT_LT(by_callback, std::chrono::seconds(5));

  // The next call waits out the daemon's noticing of the closed connection (busy is retried),
  // then runs; the daemon generated a handful of tokens, not kMax.
  auto again = s->PrefillSuffix(Suffix(ps->manifest_digest, "Write a short poem."));
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  auto rep = s->Report();
  ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
  EXPECT_LT(rep->total_generated, 64);

  // Through the stop token, from another thread.
  std::stop_source stop;
  std::atomic<int> seen_chunks{0};
  dc.cancel = stop.get_token();
  std::jthread canceller([&](std::stop_token done) {
    while (!done.stop_requested() && seen_chunks.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stop.request_stop();
  });
  t0 = Clock::now();
  auto dt = s->Decode(dc, [&](const StreamChunk&) {
    seen_chunks.fetch_add(1);
    return true;
  });
  const auto by_token = Clock::now() - t0;
  ASSERT_TRUE(dt.has_value()) << dt.error().ToString();
  EXPECT_EQ(dt->finish, FinishReason::kCancelled);
  EXPECT_GE(seen_chunks.load(), 2);
  EXPECT_LT(dt->tokens_generated, kMax);
  EXPECT_LT(by_token, std::chrono::seconds(5));
  canceller.request_stop();

  // Still usable: a full turn completes.
  auto third = s->PrefillSuffix(Suffix(ps->manifest_digest, "Summarize."));
  ASSERT_TRUE(third.has_value()) << third.error().ToString();
  DecodeConfig short_dc;
  short_dc.max_tokens = 6;
  auto full = s->Decode(short_dc, {});
  ASSERT_TRUE(full.has_value()) << full.error().ToString();
  EXPECT_NE(full->finish, FinishReason::kCancelled);
  auto rep2 = s->Report();
  ASSERT_TRUE(rep2.has_value());
  EXPECT_LT(rep2->total_generated, 2 * 64 + 6);
  EXPECT_TRUE(s->Close().has_value());
}

// A call on a session that is running another call: busy, typed, when the client does not retry;
// served once the other call ends, when it does (the default).
TEST_F(ClientTest, BusyIsTypedAndRetried) {
  auto s = OpenRemote("busy");
  ASSERT_TRUE(s);
  auto ps = s->EnsurePrefix({Prefix(Files()), {}});
  ASSERT_TRUE(ps.has_value()) << ps.error().ToString();
  std::atomic<bool> decoding{false};
  std::atomic<bool> release{false};
  std::jthread decoder([&] {
    DecodeConfig dc;
    dc.max_tokens = 1000;  // far longer than the test: the daemon is surely still decoding
    auto r = s->Decode(dc, [&](const StreamChunk&) {
      decoding = true;
      while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return false;
    });
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    EXPECT_EQ(r->finish, FinishReason::kCancelled);
  });
  while (!decoding) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  ClientOptions no_retry;
  no_retry.busy_retry = std::chrono::milliseconds(0);
  auto busy = Client(server_->socket_path(), no_retry).Tokenize("busy", "int x;");
  ASSERT_FALSE(busy.has_value());
  EXPECT_TRUE(busy.error().Is(ErrorCode::kBusy)) << busy.error().ToString();

  std::jthread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    release = true;
  });
  auto served = MakeClient().Tokenize("busy", "int x;");
  ASSERT_TRUE(served.has_value()) << served.error().ToString();
  EXPECT_FALSE(served->empty());
  decoder.join();
  EXPECT_TRUE(s->Close().has_value());
}

// (d) Opening a workspace again returns its warm session and KV.
TEST_F(ClientTest, ReopeningReturnsTheWarmSession) {
  auto first = OpenRemote("warm");
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->created());
  const ContextManifest m = Prefix(Files());
  auto a = first->EnsurePrefix({m, {}});
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  EXPECT_GT(a->tokens_prefilled, 0);

  // Another client (a reconnecting tool) with another config: the warm session, config kept.
  SessionConfig other = Config(1024);
  auto opened = Client(server_->socket_path()).OpenSession("warm", kTinyName, other);
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_FALSE(opened->created);
  EXPECT_EQ(opened->model, kTinyName);
  EXPECT_EQ(opened->config.n_ctx, 2048);
  EXPECT_EQ(opened->report.tokens_resident, a->tokens_resident);

  auto second = RemoteSession::Open(Client(server_->socket_path()), "warm");
  ASSERT_TRUE(second.has_value()) << second.error().ToString();
  EXPECT_FALSE((*second)->created());
  auto b = (*second)->EnsurePrefix({m, {}});
  ASSERT_TRUE(b.has_value()) << b.error().ToString();
  EXPECT_EQ(b->tokens_prefilled, 0);
  EXPECT_EQ(b->tokens_reused, a->tokens_resident);
  EXPECT_EQ(b->tokens_resident, a->tokens_resident);
  EXPECT_EQ(b->manifest_digest, a->manifest_digest);

  // Dropping a RemoteSession leaves the daemon's session warm.
  first.reset();
  auto still = MakeClient().Report("warm");
  ASSERT_TRUE(still.has_value()) << still.error().ToString();
  EXPECT_EQ(still->report.tokens_resident, a->tokens_resident);
  EXPECT_TRUE((*second)->Close().has_value());
}

// Workspaces (edit-aware assembly) over the wire.

// Files of a dozen lines, so a one-line edit stays a diff (an `edit` note) rather than a `full`.
std::map<std::string, std::string> WsFiles() {
  std::map<std::string, std::string> files;
  for (const std::string name : {"src/util.h", "src/main.c", "docs/notes.md"}) {
    std::string text = "// " + name + "\n";
    for (int i = 1; i <= 12; ++i)
      text += "int " + name.substr(name.find('/') + 1, 4) + std::to_string(i) + " = " + std::to_string(i * 7) + ";\n";
    files[name] = text;
  }
  return files;
}

// Replaces line `line` (1-based) of text.
std::string ReplaceLine(const std::string& text, int line, const std::string& with) {
  size_t start = 0;
  for (int i = 1; i < line; ++i) start = text.find('\n', start) + 1;
  const size_t end = text.find('\n', start);
  return text.substr(0, start) + with + text.substr(end);
}

// The workspace calls of one scripted sequence, so it runs the same in-process and over the wire.
struct WsOps {
  std::function<Status(const std::string& system)> set_system;
  std::function<Result<PutResult>(const std::string& path, const std::string& content)> put;
  std::function<Result<PrefixStatus>()> prefill;
  std::function<Result<AskResult>(const std::string& question)> ask;
  std::function<Result<std::string>()> context;
};

struct WsRun {
  std::vector<PutResult> puts;
  std::vector<AskResult> asks;
  std::vector<std::string> streamed;  // each ask's chunks, concatenated
  PrefixStatus prefill;               // the explicit prefill after the first edit
  std::string context;
  std::map<std::string, std::string> files;  // what the files are at the end
};

// Stable part, three files, ask; edit the first file, prefill, ask; edit the last, ask.
WsRun RunWorkspaceSequence(const WsOps& ops) {
  WsRun run;
  run.files = WsFiles();
  auto put = [&](const std::string& path) {
    auto r = ops.put(path, run.files[path]);
    EXPECT_TRUE(r.has_value()) << path << ": " << r.error().ToString();
    run.puts.push_back(r ? *r : PutResult{});
  };
  auto ask = [&](const std::string& q) {
    auto r = ops.ask(q);
    EXPECT_TRUE(r.has_value()) << q << ": " << r.error().ToString();
    run.asks.push_back(r ? *r : AskResult{});
  };
  EXPECT_TRUE(ops.set_system("You are a careful coding assistant.").has_value());
  for (const auto& [path, _] : WsFiles()) put(path);
  ask("What does main return?");
  run.files["docs/notes.md"] = ReplaceLine(run.files["docs/notes.md"], 5, "int note4 = -1;  // changed");
  put("docs/notes.md");
  auto ps = ops.prefill();
  EXPECT_TRUE(ps.has_value()) << ps.error().ToString();
  if (ps) run.prefill = *ps;
  ask("Is note4 right now?");
  run.files["src/util.h"] += "int util13 = 91;\n";
  put("src/util.h");
  ask("What changed in util.h?");
  auto ctx = ops.context();
  EXPECT_TRUE(ctx.has_value()) << ctx.error().ToString();
  if (ctx) run.context = *ctx;
  return run;
}

DecodeConfig AskConfig() {
  DecodeConfig dc;
  dc.max_tokens = 12;
  return dc;
}

// Over the wire, with eager prefill off (prefill=false on every change): the daemon's background
// prefill would otherwise race the calls, so per-ask counts (and, since a prefill seals the
// stable part, even where a file lands) would depend on timing. With it off, the wire sequence
// does exactly the in-process one's work, so the per-ask counts compare exactly.
WsOps RemoteOps(const Client& c, const std::string& ws, std::vector<std::string>* streamed) {
  WsOps ops;
  ops.set_system = [&c, ws](const std::string& text) {
    StableParts parts;
    parts.system = text;
    return c.SetStable(ws, parts, /*prefill=*/false);
  };
  ops.put = [&c, ws](const std::string& path, const std::string& content) {
    return c.PutFile(ws, path, content, /*prefill=*/false);
  };
  ops.prefill = [&c, ws] { return c.WorkspacePrefill(ws); };
  ops.ask = [&c, ws, streamed](const std::string& q) {
    streamed->emplace_back();
    return c.Ask(ws, q, AskConfig(), [streamed](const StreamChunk& chunk) {
      streamed->back() += chunk.text;
      return true;
    });
  };
  ops.context = [&c, ws] { return c.Context(ws); };
  return ops;
}

WsOps LocalOps(Workspace& w) {
  WsOps ops;
  ops.set_system = [&w](const std::string& text) { return w.SetSystem(text); };
  ops.put = [&w](const std::string& path, const std::string& content) { return w.PutFile(path, content); };
  ops.prefill = [&w] { return w.Prefill(); };
  ops.ask = [&w](const std::string& q) { return w.Ask(q, AskConfig(), {}); };
  ops.context = [&w]() -> Result<std::string> { return w.AssembledText(); };
  return ops;
}

TEST_F(ClientTest, WorkspaceOverTheWireMatchesInProcess) {
  const Client c = MakeClient();
  auto opened = c.OpenSession("ws-wire", kTinyName, Config());
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_TRUE(opened->created);
  EXPECT_EQ(opened->assembly, AssemblyMode::kEditAware);
  std::vector<std::string> streamed;
  const WsRun got = RunWorkspaceSequence(RemoteOps(c, "ws-wire", &streamed));

  auto local_session = OpenLocal("ws-local");
  ASSERT_TRUE(local_session);
  Workspace local(local_session.get());
  const WsRun want = RunWorkspaceSequence(LocalOps(local));

  // The wire sequence on its own terms: files first sent are `add`s in the stable part, an edit
  // after the first ask is a small `edit` note, and prefilling it costs about the note only.
  ASSERT_EQ(got.puts.size(), 5u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(got.puts[i].change, "add") << i;
  EXPECT_EQ(got.puts[3].change, "edit");
  EXPECT_EQ(got.puts[4].change, "edit");
  ASSERT_EQ(got.asks.size(), 3u);
  const int64_t first_prefix = got.asks[0].prefix.tokens_prefilled;
  EXPECT_GT(first_prefix, 100);
  EXPECT_GT(got.prefill.tokens_prefilled, 0);
  EXPECT_LT(got.prefill.tokens_prefilled * 4, first_prefix) << "an edit re-prefilled far more than its note";
  EXPECT_GT(got.prefill.tokens_reused, first_prefix / 2);
  EXPECT_EQ(got.asks[1].prefix.tokens_prefilled, 0);  // the explicit prefill left only the question
  EXPECT_GT(got.asks[1].suffix.tokens_prefilled, 0);
  EXPECT_LT(got.asks[2].prefix.tokens_prefilled * 4, first_prefix);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_GT(got.asks[i].decode.tokens_generated, 0) << i;
    EXPECT_EQ(streamed[i], got.asks[i].decode.text) << i;
    EXPECT_FALSE(got.asks[i].compacted) << i;
  }

  // Same as in-process: every count, every greedy answer, the assembled text itself.
  ASSERT_EQ(want.puts.size(), got.puts.size());
  for (size_t i = 0; i < got.puts.size(); ++i) {
    EXPECT_EQ(got.puts[i].change, want.puts[i].change) << i;
    EXPECT_EQ(got.puts[i].note_bytes, want.puts[i].note_bytes) << i;
  }
  EXPECT_EQ(got.prefill.tokens_reused, want.prefill.tokens_reused);
  EXPECT_EQ(got.prefill.tokens_prefilled, want.prefill.tokens_prefilled);
  EXPECT_EQ(got.prefill.manifest_digest, want.prefill.manifest_digest);
  ASSERT_EQ(want.asks.size(), got.asks.size());
  for (size_t i = 0; i < got.asks.size(); ++i) {
    SCOPED_TRACE("ask " + std::to_string(i));
    EXPECT_EQ(got.asks[i].prefix.manifest_digest, want.asks[i].prefix.manifest_digest);
    EXPECT_EQ(got.asks[i].prefix.tokens_reused, want.asks[i].prefix.tokens_reused);
    EXPECT_EQ(got.asks[i].prefix.tokens_prefilled, want.asks[i].prefix.tokens_prefilled);
    EXPECT_EQ(got.asks[i].prefix.tokens_resident, want.asks[i].prefix.tokens_resident);
    EXPECT_EQ(got.asks[i].suffix.tokens_reused, want.asks[i].suffix.tokens_reused);
    EXPECT_EQ(got.asks[i].suffix.tokens_prefilled, want.asks[i].suffix.tokens_prefilled);
    EXPECT_EQ(got.asks[i].decode.text, want.asks[i].decode.text);
    EXPECT_EQ(got.asks[i].decode.tokens_generated, want.asks[i].decode.tokens_generated);
    EXPECT_EQ(got.asks[i].decode.finish, want.asks[i].decode.finish);
  }
  EXPECT_EQ(got.context, want.context);

  // The context is faithful: the files come back byte for byte.
  auto rebuilt = workspace::ReconstructFiles(got.context);
  ASSERT_TRUE(rebuilt.has_value()) << rebuilt.error().ToString();
  EXPECT_EQ(*rebuilt, got.files);

  auto info = c.WorkspaceInfo("ws-wire");
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  const WorkspaceStats ls = local.Stats();
  EXPECT_EQ(info->stats.mode, AssemblyMode::kEditAware);
  EXPECT_EQ(info->stats.files, 3);
  EXPECT_EQ(info->stats.notes, 2);
  EXPECT_EQ(info->stats.log_entries, ls.log_entries);
  EXPECT_EQ(info->stats.context_tokens, ls.context_tokens);
  EXPECT_EQ(info->stats.log_tokens, ls.log_tokens);
  ASSERT_EQ(info->files.size(), got.files.size());
  for (const auto& f : info->files) {
    ASSERT_TRUE(got.files.contains(f.path)) << f.path;
    EXPECT_EQ(f.bytes, static_cast<int64_t>(got.files.at(f.path).size())) << f.path;
  }

  // Compaction folds the notes into the files; the context stays faithful.
  WorkspaceStats after;
  auto cs = c.Compact("ws-wire", &after);
  ASSERT_TRUE(cs.has_value()) << cs.error().ToString();
  EXPECT_EQ(after.compactions, 1);
  EXPECT_EQ(after.notes, 0);
  EXPECT_EQ(after.context_tokens, cs->tokens_resident);
  auto compacted = c.Context("ws-wire");
  ASSERT_TRUE(compacted.has_value()) << compacted.error().ToString();
  auto rebuilt2 = workspace::ReconstructFiles(*compacted);
  ASSERT_TRUE(rebuilt2.has_value()) << rebuilt2.error().ToString();
  EXPECT_EQ(*rebuilt2, got.files);

  EXPECT_TRUE(c.CloseSession("ws-wire").has_value());
  EXPECT_TRUE(local_session->Close().has_value());
}

// Turns, removes, renames, and eager prefill: after a change with prefill on, an ask finds the
// context already prefilled, or prefills it itself when it got the workspace first; either way
// the two together prefill what one synchronous prefill would.
TEST_F(ClientTest, WorkspaceChangesAndEagerPrefill) {
  const Client c = MakeClient();
  ASSERT_TRUE(c.OpenSession("ws-eager", kTinyName, Config()).has_value());
  const auto files = WsFiles();
  for (const auto& [path, content] : files) ASSERT_TRUE(c.PutFile("ws-eager", path, content, false).has_value());
  auto first = c.WorkspacePrefill("ws-eager");
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  EXPECT_GT(first->tokens_prefilled, 0);

  WorkspaceStats st;
  ASSERT_TRUE(c.AddTurn("ws-eager", "user", "Please keep functions short.", true, &st).has_value());
  EXPECT_EQ(st.log_entries, 1);
  ASSERT_TRUE(c.RenameFile("ws-eager", "docs/notes.md", "docs/NOTES.md", true, &st).has_value());
  ASSERT_TRUE(c.RemoveFile("ws-eager", "src/main.c", true, &st).has_value());
  EXPECT_EQ(st.files, 2);
  EXPECT_EQ(st.notes, 2);
  ASSERT_TRUE(c.WorkspacePrefill("ws-eager").has_value());  // settles the eager prefills of the above
  auto before = c.Report("ws-eager");
  ASSERT_TRUE(before.has_value()) << before.error().ToString();
  auto put = c.PutFile("ws-eager", "src/util.h", ReplaceLine(files.at("src/util.h"), 3, "int util2 = 0;"), true);
  ASSERT_TRUE(put.has_value()) << put.error().ToString();
  EXPECT_EQ(put->change, "edit");
  auto sync = c.WorkspacePrefill("ws-eager");  // waits for an eager prefill in progress
  ASSERT_TRUE(sync.has_value()) << sync.error().ToString();
  auto after = c.Report("ws-eager");
  ASSERT_TRUE(after.has_value()) << after.error().ToString();
  // Whatever the eager prefill did plus the synchronous one: the context since `before`, once.
  const int64_t prefilled = after->report.total_prefilled - before->report.total_prefilled;
  EXPECT_GT(prefilled, 0);
  EXPECT_LT(prefilled * 4, first->tokens_prefilled);
  EXPECT_EQ(after->report.tokens_resident, sync->tokens_resident);

  auto ask = c.Ask("ws-eager", "Summarize the notes.", AskConfig());
  ASSERT_TRUE(ask.has_value()) << ask.error().ToString();
  EXPECT_EQ(ask->prefix.tokens_prefilled, 0);
  auto ctx = c.Context("ws-eager");
  ASSERT_TRUE(ctx.has_value()) << ctx.error().ToString();
  auto rebuilt = workspace::ReconstructFiles(*ctx);
  ASSERT_TRUE(rebuilt.has_value()) << rebuilt.error().ToString();
  std::map<std::string, std::string> want = {
      {"docs/NOTES.md", files.at("docs/notes.md")},
      {"src/util.h", ReplaceLine(files.at("src/util.h"), 3, "int util2 = 0;")},
  };
  EXPECT_EQ(*rebuilt, want);
  EXPECT_NE(ctx->find("Please keep functions short."), std::string::npos);
  EXPECT_NE(ctx->find(ask->decode.text), std::string::npos);  // the answer was recorded as a turn
  EXPECT_TRUE(c.CloseSession("ws-eager").has_value());
}

TEST_F(ClientTest, WorkspaceInPlaceAssembly) {
  const Client c = MakeClient();
  auto opened = c.OpenSession("ws-in-place", kTinyName, Config(), {}, AssemblyMode::kInPlace);
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_EQ(opened->assembly, AssemblyMode::kInPlace);
  // Reopening asks for edit-aware but gets the warm session's mode.
  auto again = c.OpenSession("ws-in-place", kTinyName);
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->assembly, AssemblyMode::kInPlace);
  const auto files = WsFiles();
  for (const auto& [path, content] : files) ASSERT_TRUE(c.PutFile("ws-in-place", path, content, false).has_value());
  // Nothing was prefilled yet: the ask prefills the context and streams its progress.
  std::vector<Progress> progress;
  auto first = c.Ask("ws-in-place", "Hi?", AskConfig(), {}, nullptr, [&](const Progress& p) { progress.push_back(p); });
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().stage, "ensure_prefix");
  EXPECT_EQ(progress.back().done, progress.back().total);
  EXPECT_EQ(progress.back().total, first->prefix.tokens_prefilled);
  WorkspaceStats st;
  auto put = c.PutFile("ws-in-place", "src/main.c", ReplaceLine(files.at("src/main.c"), 2, "int x;"), false, &st);
  ASSERT_TRUE(put.has_value()) << put.error().ToString();
  EXPECT_EQ(put->change, "edit");
  EXPECT_EQ(st.mode, AssemblyMode::kInPlace);
  EXPECT_EQ(st.notes, 0);  // rewritten where it stands
  EXPECT_TRUE(c.CloseSession("ws-in-place").has_value());
}

TEST_F(ClientTest, WorkspaceBadInputIsTypedAndChangesNothing) {
  const Client c = MakeClient();
  ASSERT_TRUE(c.OpenSession("ws-bad", kTinyName, Config()).has_value());
  ASSERT_TRUE(c.PutFile("ws-bad", "a.c", "int a;\n", false).has_value());
  auto expect_code = [](const auto& r, ErrorCode code, const char* what) {
    ASSERT_FALSE(r.has_value()) << what;
    EXPECT_TRUE(r.error().Is(code)) << what << ": " << r.error().ToString();
  };
  expect_code(c.PutFile("ws-bad", "../x", "int x;\n"), ErrorCode::kInvalidArgument, "path ../x");
  expect_code(c.PutFile("ws-bad", "/etc/passwd", "x"), ErrorCode::kInvalidArgument, "absolute path");
  expect_code(c.PutFile("ws-bad", "b.c", std::string("int\0b;\n", 8)), ErrorCode::kInvalidArgument, "NUL content");
  expect_code(c.PutFile("ws-bad", "b.c", "caf\xe9\n"), ErrorCode::kInvalidArgument, "not UTF-8");  // refused here
  expect_code(c.AddTurn("ws-bad", "system", "hi"), ErrorCode::kInvalidArgument, "bad role");
  expect_code(c.RenameFile("ws-bad", "a.c", "a.c"), ErrorCode::kInvalidArgument, "rename onto itself");
  expect_code(c.RemoveFile("ws-bad", "nope.c"), ErrorCode::kNotFound, "remove a missing file");
  expect_code(c.PutFile("no-such-ws", "a.c", "x"), ErrorCode::kNotFound, "put, unknown workspace");
  expect_code(c.Ask("no-such-ws", "hi?", AskConfig()), ErrorCode::kNotFound, "ask, unknown workspace");
  expect_code(c.Context("no-such-ws"), ErrorCode::kNotFound, "context, unknown workspace");
  expect_code(c.WorkspaceInfo("no-such-ws"), ErrorCode::kNotFound, "info, unknown workspace");
  expect_code(c.WorkspacePrefill("no-such-ws"), ErrorCode::kNotFound, "prefill, unknown workspace");
  expect_code(c.Compact("not/valid"), ErrorCode::kInvalidArgument, "bad workspace id");
  DecodeConfig bad = AskConfig();
  bad.top_p = 2.0f;
  expect_code(c.Ask("ws-bad", "hi?", bad), ErrorCode::kInvalidArgument, "bad sampling");

  auto info = c.WorkspaceInfo("ws-bad");
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  ASSERT_EQ(info->files.size(), 1u);
  EXPECT_EQ(info->files[0].path, "a.c");
  EXPECT_EQ(info->stats.log_entries, 0);
  EXPECT_TRUE(c.CloseSession("ws-bad").has_value());
}

// An ask cancelled from its callback ends promptly; the workspace stays usable.
TEST_F(ClientTest, CancelledAskEndsPromptly) {
  const Client c = MakeClient();
  ASSERT_TRUE(c.OpenSession("ws-cancel", kTinyName, Config()).has_value());
  for (const auto& [path, content] : WsFiles()) ASSERT_TRUE(c.PutFile("ws-cancel", path, content).has_value());
  DecodeConfig dc;
  dc.max_tokens = 1500;
  int chunks = 0;
  const auto t0 = Clock::now();
  auto r = c.Ask("ws-cancel", "Write a long essay.", dc, [&](const StreamChunk&) { return ++chunks < 2; });
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->decode.finish, FinishReason::kCancelled);
  EXPECT_EQ(chunks, 2);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(30));
  auto next = c.Ask("ws-cancel", "Short answer?", AskConfig());  // queues behind the cancelled one
  ASSERT_TRUE(next.has_value()) << next.error().ToString();
  EXPECT_NE(next->decode.finish, FinishReason::kCancelled);
  auto rep = c.Report("ws-cancel");
  ASSERT_TRUE(rep.has_value());
  EXPECT_LT(rep->report.total_generated, 64 + 12);
  EXPECT_TRUE(c.CloseSession("ws-cancel").has_value());
}

}  // namespace
}  // namespace modeld::client
