// Our backend-neutral ggml type table must agree with ggml at the pinned commit.
#include "format/ggml_types.h"

#include <gtest/gtest.h>

#include <string>

#include "ggml.h"

namespace modeld::gguf {
namespace {

TEST(GgmlTypesTest, CountMatchesGgml) { EXPECT_EQ(kGgmlTypeCount, static_cast<uint32_t>(GGML_TYPE_COUNT)); }

TEST(GgmlTypesTest, TableAgreesWithGgml) {
  for (int id = 0; id < GGML_TYPE_COUNT; ++id) {
    const auto t = static_cast<ggml_type>(id);
    const ggml_type_traits* theirs = ggml_get_type_traits(t);
    const GgmlTypeTraits* ours = GgmlType(static_cast<uint32_t>(id));
    const bool removed = theirs->blck_size == 0 || std::string(ggml_type_name(t)) == "DEPRECATED";
    if (removed) {
      EXPECT_EQ(ours, nullptr) << "id " << id << " is removed in ggml";
      continue;
    }
    ASSERT_NE(ours, nullptr) << "id " << id << " (" << ggml_type_name(t) << ") missing";
    EXPECT_STREQ(ours->name, ggml_type_name(t)) << "id " << id;
    EXPECT_EQ(ours->block_size, static_cast<uint32_t>(ggml_blck_size(t))) << ggml_type_name(t);
    EXPECT_EQ(ours->type_size, static_cast<uint32_t>(ggml_type_size(t))) << ggml_type_name(t);
  }
}

TEST(GgmlTypesTest, OutOfRangeIsUnknown) {
  EXPECT_EQ(GgmlType(GGML_TYPE_COUNT), nullptr);
  EXPECT_EQ(GgmlType(1000), nullptr);
  EXPECT_EQ(GgmlType(0xffffffffu), nullptr);
}

TEST(GgmlTypesTest, FileTypeNames) {
  EXPECT_EQ(FileTypeName(0), "F32");
  EXPECT_EQ(FileTypeName(1), "F16");
  EXPECT_EQ(FileTypeName(2), "Q4_0");
  EXPECT_EQ(FileTypeName(7), "Q8_0");
  EXPECT_EQ(FileTypeName(15), "Q4_K_M");
  EXPECT_EQ(FileTypeName(32), "BF16");
  EXPECT_EQ(FileTypeName(15 | 1024), "Q4_K_M");  // LLAMA_FTYPE_GUESSED is a flag
  EXPECT_EQ(FileTypeName(4), "unknown");         // removed
  EXPECT_EQ(FileTypeName(33), "unknown");        // removed
  EXPECT_EQ(FileTypeName(-1), "unknown");
  EXPECT_EQ(FileTypeName(9999), "unknown");
}

}  // namespace
}  // namespace modeld::gguf
