#include "text_util.h"

#include <limits>

namespace cmn::metrics::detail {
namespace {

// Byte length of a Python whitespace character starting at s[pos], 0 if there is none.
std::size_t space_length(std::string_view s, std::size_t pos) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if ((b0 >= 0x09 && b0 <= 0x0D) || (b0 >= 0x1C && b0 <= 0x20)) return 1;
  if (b0 < 0x80) return 0;
  auto at = [&](std::size_t i) -> int { return pos + i < s.size() ? static_cast<unsigned char>(s[pos + i]) : -1; };
  if (b0 == 0xC2 && (at(1) == 0x85 || at(1) == 0xA0)) return 2;  // U+0085, U+00A0
  if (b0 == 0xE1 && at(1) == 0x9A && at(2) == 0x80) return 3;    // U+1680
  if (b0 == 0xE2 && at(1) == 0x80) {
    const int c = at(2);
    if ((c >= 0x80 && c <= 0x8A) || c == 0xA8 || c == 0xA9 || c == 0xAF) return 3;  // U+2000-200A, 2028/9, 202F
  }
  if (b0 == 0xE2 && at(1) == 0x81 && at(2) == 0x9F) return 3;  // U+205F
  if (b0 == 0xE3 && at(1) == 0x80 && at(2) == 0x80) return 3;  // U+3000
  return 0;
}

}  // namespace

std::vector<std::string> py_split(std::string_view s) {
  std::vector<std::string> out;
  std::size_t start = std::string_view::npos;
  std::size_t pos = 0;
  while (pos < s.size()) {
    const std::size_t len = space_length(s, pos);
    if (len > 0) {
      if (start != std::string_view::npos) {
        out.emplace_back(s.substr(start, pos - start));
        start = std::string_view::npos;
      }
      pos += len;
    } else {
      if (start == std::string_view::npos) start = pos;
      ++pos;
    }
  }
  if (start != std::string_view::npos) out.emplace_back(s.substr(start));
  return out;
}

std::vector<std::string> py_split_space(std::string_view s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t hit; (hit = s.find(' ', start)) != std::string_view::npos; start = hit + 1) {
    out.emplace_back(s.substr(start, hit - start));
  }
  out.emplace_back(s.substr(start));
  return out;
}

double numpy_pairwise_sum(const double* a, std::size_t n) {
  if (n < 8) {
    double res = 0.0;
    for (std::size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {  // PW_BLOCKSIZE
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    std::size_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[i + static_cast<std::size_t>(j)];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  std::size_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_pairwise_sum(a, n2) + numpy_pairwise_sum(a + n2, n - n2);
}

double numpy_mean(const std::vector<double>& values) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  // add.reduce starts from the identity 0.0 and adds the pairwise sum of all elements.
  const double sum = 0.0 + numpy_pairwise_sum(values.data(), values.size());
  return sum / static_cast<double>(values.size());
}

}  // namespace cmn::metrics::detail
