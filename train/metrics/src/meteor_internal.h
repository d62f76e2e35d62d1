#pragma once
// What the three parts of the METEOR port share (meteor.cc: scoring; meteor_align.cc: the aligner;
// meteor_normalize.cc: the -norm normaliser). Private to cmn_metrics.
#include <string>
#include <vector>

#include "cmn/metrics/metrics.h"

namespace cmn::metrics::meteor_detail {

inline constexpr int kExact = 0;
inline constexpr int kStem = 1;
inline constexpr int kModules = 2;

// UTF-8 to code points; a bad or cut-short sequence decodes its lead byte as U+FFFD (meteor_normalize.cc).
std::u32string to_u32(const std::string& s);

// The exact and stem modules' alignment of hypothesis words (line 1) and reference words (line 2), and its
// statistics (meteor_align.cc).
MeteorStats align_words(const std::vector<std::string>& words1, const std::vector<std::string>& words2,
                        const MeteorOptions& opt);

}  // namespace cmn::metrics::meteor_detail
