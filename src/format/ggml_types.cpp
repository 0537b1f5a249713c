#include "format/ggml_types.h"

#include <array>

namespace modeld::gguf {
namespace {

// Indexed by ggml_type id. Removed ids carry a null name. Sizes follow ggml-common.h (QK_K = 256).
constexpr std::array<GgmlTypeTraits, kGgmlTypeCount> kTypes = {{
    {"f32", 1, 4},         // 0
    {"f16", 1, 2},         // 1
    {"q4_0", 32, 18},      // 2
    {"q4_1", 32, 20},      // 3
    {nullptr, 0, 0},       // 4  Q4_2, removed
    {nullptr, 0, 0},       // 5  Q4_3, removed
    {"q5_0", 32, 22},      // 6
    {"q5_1", 32, 24},      // 7
    {"q8_0", 32, 34},      // 8
    {"q8_1", 32, 36},      // 9
    {"q2_K", 256, 84},     // 10
    {"q3_K", 256, 110},    // 11
    {"q4_K", 256, 144},    // 12
    {"q5_K", 256, 176},    // 13
    {"q6_K", 256, 210},    // 14
    {"q8_K", 256, 292},    // 15
    {"iq2_xxs", 256, 66},  // 16
    {"iq2_xs", 256, 74},   // 17
    {"iq3_xxs", 256, 98},  // 18
    {"iq1_s", 256, 50},    // 19
    {"iq4_nl", 32, 18},    // 20
    {"iq3_s", 256, 110},   // 21
    {"iq2_s", 256, 82},    // 22
    {"iq4_xs", 256, 136},  // 23
    {"i8", 1, 1},          // 24
    {"i16", 1, 2},         // 25
    {"i32", 1, 4},         // 26
    {"i64", 1, 8},         // 27
    {"f64", 1, 8},         // 28
    {"iq1_m", 256, 56},    // 29
    {"bf16", 1, 2},        // 30
    {nullptr, 0, 0},       // 31 Q4_0_4_4, removed
    {nullptr, 0, 0},       // 32 Q4_0_4_8, removed
    {nullptr, 0, 0},       // 33 Q4_0_8_8, removed
    {"tq1_0", 256, 54},    // 34
    {"tq2_0", 256, 66},    // 35
    {nullptr, 0, 0},       // 36 IQ4_NL_4_4, removed
    {nullptr, 0, 0},       // 37 IQ4_NL_4_8, removed
    {nullptr, 0, 0},       // 38 IQ4_NL_8_8, removed
    {"mxfp4", 32, 17},     // 39
    {"nvfp4", 64, 36},     // 40
    {"q1_0", 128, 18},     // 41
    {"q2_0", 64, 18},      // 42
}};

}  // namespace

const GgmlTypeTraits* GgmlType(uint32_t type) {
  if (type >= kTypes.size() || kTypes[type].name == nullptr) return nullptr;
  return &kTypes[type];
}

std::string_view FileTypeName(int32_t llama_ftype) {
  constexpr int32_t kGuessed = 1024;  // LLAMA_FTYPE_GUESSED: a flag, not a type
  switch (llama_ftype & ~kGuessed) {
    case 0:
      return "F32";
    case 1:
      return "F16";
    case 2:
      return "Q4_0";
    case 3:
      return "Q4_1";
    case 7:
      return "Q8_0";
    case 8:
      return "Q5_0";
    case 9:
      return "Q5_1";
    case 10:
      return "Q2_K";
    case 11:
      return "Q3_K_S";
    case 12:
      return "Q3_K_M";
    case 13:
      return "Q3_K_L";
    case 14:
      return "Q4_K_S";
    case 15:
      return "Q4_K_M";
    case 16:
      return "Q5_K_S";
    case 17:
      return "Q5_K_M";
    case 18:
      return "Q6_K";
    case 19:
      return "IQ2_XXS";
    case 20:
      return "IQ2_XS";
    case 21:
      return "Q2_K_S";
    case 22:
      return "IQ3_XS";
    case 23:
      return "IQ3_XXS";
    case 24:
      return "IQ1_S";
    case 25:
      return "IQ4_NL";
    case 26:
      return "IQ3_S";
    case 27:
      return "IQ3_M";
    case 28:
      return "IQ2_S";
    case 29:
      return "IQ2_M";
    case 30:
      return "IQ4_XS";
    case 31:
      return "IQ1_M";
    case 32:
      return "BF16";
    case 36:
      return "TQ1_0";
    case 37:
      return "TQ2_0";
    case 38:
      return "MXFP4_MOE";
    case 39:
      return "NVFP4";
    case 40:
      return "Q1_0";
    case 41:
      return "Q2_0";
    default:
      return "unknown";
  }
}

}  // namespace modeld::gguf
