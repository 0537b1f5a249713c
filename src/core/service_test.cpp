// The contract without any backend adapter linked: this binary links
// modeld_core only, as a build with MODELD_WITH_LLAMA=OFF does.
#include "modeld/service.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "modeld/registry.h"

namespace modeld {
namespace {

std::string WriteFile(const std::string& name, const std::string& bytes) {
  std::filesystem::create_directories(MODELD_TEST_TMP);
  const std::string p = std::string(MODELD_TEST_TMP) + "/" + name;
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

TEST(ServiceWithoutBackend, SessionsAreUnavailable) {
  EXPECT_FALSE(SessionAvailable());
  EXPECT_FALSE(EmbedAvailable());
  OpenSessionRequest req;
  req.model_path = WriteFile("any.gguf", "GGUF");
  auto s = Service().OpenSession(req);
  ASSERT_FALSE(s.has_value());
  EXPECT_TRUE(s.error().Is(ErrorCode::kSessionUnavailable));
  EmbedRequest er;
  er.model_path = req.model_path;
  auto e = Service().Embed(er);
  ASSERT_FALSE(e.has_value());
  EXPECT_TRUE(e.error().Is(ErrorCode::kSessionUnavailable));
}

TEST(ServiceWithoutBackend, DescribeRefusesOtherBackendsBeforeReading) {
  OpenSessionRequest req;
  req.model_path = WriteFile("model.xml", "<?xml version=\"1.0\"?>\n<net name=\"x\" version=\"11\">\n</net>\n");
  auto x = Service().Describe(req);
  ASSERT_FALSE(x.has_value());
  EXPECT_TRUE(x.error().Is(ErrorCode::kBackendMismatch));
  EXPECT_NE(x.error().message().find("openvino"), std::string::npos);

  req.model_path = WriteFile("notes.txt", "just some text\n");
  auto t = Service().Describe(req);
  ASSERT_FALSE(t.has_value());
  EXPECT_TRUE(t.error().Is(ErrorCode::kBackendMismatch));

  req.model_path = WriteFile("empty.gguf", "");
  auto em = Service().Describe(req);
  ASSERT_FALSE(em.has_value());
  EXPECT_TRUE(em.error().Is(ErrorCode::kBackendMismatch));

  req.model_path = std::string(MODELD_TEST_TMP) + "/does-not-exist.gguf";
  auto nf = Service().Describe(req);
  ASSERT_FALSE(nf.has_value());
  EXPECT_TRUE(nf.error().Is(ErrorCode::kNotFound));

  // A GGUF file asked of another backend.
  req.model_path = WriteFile("trunc.gguf", std::string("GGUF\x03\x00\x00\x00", 8));
  req.backend = "openvino";
  auto ov = Service().Describe(req);
  ASSERT_FALSE(ov.has_value());
  EXPECT_TRUE(ov.error().Is(ErrorCode::kBackendMismatch));
  // And as GGUF it is a truncated header, typed.
  req.backend = "gguf";
  auto tr = Service().Describe(req);
  ASSERT_FALSE(tr.has_value());
  EXPECT_TRUE(tr.error().Is(ErrorCode::kTruncated));
}

}  // namespace
}  // namespace modeld
