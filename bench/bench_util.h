#pragma once
// What every bench program needs: the median of repeated timings and a strict integer flag value.
// Header-only and standard-library-only, so the programs that build with cmn_model alone (GPU hosts) have it.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace cmn::bench {

// The median (mean of the two middle values for an even count); 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The whole of `value` as an integer >= 0, or nullopt ("12x", "-1", "" are not).
inline std::optional<int64_t> non_negative_int(const char* value) {
  try {
    size_t used = 0;
    const int64_t v = std::stoll(value, &used);
    if (used != std::strlen(value) || v < 0) return std::nullopt;
    return v;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace cmn::bench
