#include "cli/token_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace modeld::cli {
namespace {

std::string Write(const std::string& name, const std::string& content, mode_t mode = 0600) {
  std::filesystem::create_directories(MODELD_TEST_TMP);
  const std::string path = std::string(MODELD_TEST_TMP) + "/" + name + "-" + std::to_string(::getpid());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  ::chmod(path.c_str(), mode);
  return path;
}

const std::string kToken = "0123456789abcdef0123";

TEST(TokenFile, FirstLineWithoutItsLineEnding) {
  for (const std::string& content : {kToken, kToken + "\n", kToken + "\r\n", kToken + " \r\nsecond line\n"}) {
    auto t = ReadTokenFile(Write("tok", content));
    ASSERT_TRUE(t.has_value()) << t.error().ToString();
    EXPECT_EQ(*t, kToken);
  }
}

TEST(TokenFile, RefusesShortTokensBlanksAndOpenModes) {
  auto short_token = ReadTokenFile(Write("short", "0123456789abcde\n"));  // 15 bytes
  ASSERT_FALSE(short_token.has_value());
  EXPECT_TRUE(short_token.error().Is(ErrorCode::kInvalidArgument));
  EXPECT_FALSE(ReadTokenFile(Write("blank", "0123456789 abcdef0123\n")).has_value());
  EXPECT_FALSE(ReadTokenFile(Write("empty", "")).has_value());
  for (mode_t mode : {0640, 0604, 0660, 0622}) {
    auto open = ReadTokenFile(Write("mode", kToken + "\n", mode));
    ASSERT_FALSE(open.has_value()) << std::oct << mode;
    EXPECT_NE(open.error().message().find("chmod 600"), std::string::npos) << open.error().message();
  }
  EXPECT_TRUE(ReadTokenFile(Write("mode", kToken + "\n", 0400)).has_value());
  auto missing = ReadTokenFile(std::string(MODELD_TEST_TMP) + "/no-such-token-file");
  ASSERT_FALSE(missing.has_value());
  EXPECT_TRUE(missing.error().Is(ErrorCode::kIoError));
  EXPECT_FALSE(ReadTokenFile(Write("big", kToken + "\n" + std::string(5000, 'x'))).has_value());
}

}  // namespace
}  // namespace modeld::cli
