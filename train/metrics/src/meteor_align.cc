// METEOR 1.5's aligner (aligner.Aligner/ExactMatcher/StemMatcher/PartialAlignment): exact and stem
// matches compared by Java String.hashCode, the beam search over partial alignments, and chunk counts.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "cmn/metrics/metrics.h"
#include "meteor_internal.h"

namespace cmn::metrics::meteor_detail {
namespace {

// ---- Java String.hashCode (the aligner compares words and stems by hash) ----------------------------------

int32_t java_hash(const std::string& s) {
  uint32_t h = 0;
  for (char32_t c : to_u32(s)) {
    if (c >= 0x10000) {  // UTF-16 surrogate pair
      const char32_t v = c - 0x10000;
      h = 31 * h + static_cast<uint32_t>(0xD800 + (v >> 10));
      h = 31 * h + static_cast<uint32_t>(0xDC00 + (v & 0x3FF));
    } else {
      h = 31 * h + static_cast<uint32_t>(c);
    }
  }
  return static_cast<int32_t>(h);
}

// ---- Aligner -----------------------------------------------------------------------------------------------

struct Match {
  int start = 0;  // line 2 (reference)
  int length = 1;
  int match_start = 0;  // line 1 (hypothesis)
  int match_length = 1;
  int module = kExact;
};

// All matches here are one word to one word (exact, stem), so a line-2 word is used exactly when a match
// starts there; one int vector per path holds the match ids by line-2 position (-1: none) followed by the
// line-1 used flags. The search copies paths constantly: one allocation per copy.
struct PartialAlignment {
  std::vector<int32_t> state;  // [0, n2): match id or -1; [n2, n2 + n1): line-1 word used
  std::size_t n2 = 0;
  int match_count = 0;
  int matches1 = 0, matches2 = 0;  // Java ints: `+= length * weight` truncates, so 0.5-weight matches add 0
  int all_matches1 = 0, all_matches2 = 0;
  int chunks = 0;
  int idx = 0;
  int last_match_end = -1;
  int distance = 0;

  PartialAlignment(std::size_t line1, std::size_t line2) : state(line2 + line1, 0), n2(line2) {
    std::fill(state.begin(), state.begin() + static_cast<std::ptrdiff_t>(line2), -1);
  }
  int32_t match_at(std::size_t j) const { return state[j]; }
  bool line2_used(std::size_t j) const { return state[j] >= 0; }
  bool is_used(const Match& m) const {
    return line2_used(static_cast<std::size_t>(m.start)) || state[n2 + static_cast<std::size_t>(m.match_start)] != 0;
  }
  void take(int32_t id, const Match& m) {
    state[static_cast<std::size_t>(m.start)] = id;
    state[n2 + static_cast<std::size_t>(m.match_start)] = 1;
  }
};

// Constants.PARTIAL_COMPARE_TOTAL: more (weighted, truncated) matches, then fewer chunks, then less distance.
int compare_total(const PartialAlignment& x, const PartialAlignment& y) {
  const int match_diff = (y.matches1 + y.matches2) - (x.matches1 + x.matches2);
  if (match_diff > 0) return 1;
  if (match_diff < 0) return -1;
  const int chunk_diff = x.chunks - y.chunks;
  if (chunk_diff != 0) return chunk_diff;
  return x.distance - y.distance;
}

void add_match_stats(PartialAlignment& p, const Match& m, const double* search_weights) {
  p.match_count++;
  // Java: `path.matches1 += m.matchLength * moduleWeights.get(m.module);` on an int field.
  p.matches1 = static_cast<int>(p.matches1 + m.match_length * search_weights[m.module]);
  p.matches2 = static_cast<int>(p.matches2 + m.length * search_weights[m.module]);
  p.all_matches1 += m.match_length;
  p.all_matches2 += m.length;
}

// Aligner.resolve(): left-to-right beam search over line-2 positions. `table` holds every candidate match,
// `by_start[j]` the ids of those starting at line-2 position j, in the matchers' order.
PartialAlignment resolve(const std::vector<Match>& table, const std::vector<std::vector<int32_t>>& by_start,
                         PartialAlignment start, int beam_size, const double* search_weights) {
  const auto comparator = [](const PartialAlignment& x, const PartialAlignment& y) { return compare_total(x, y) < 0; };
  std::vector<PartialAlignment> paths;
  std::vector<PartialAlignment> next_paths;
  next_paths.push_back(std::move(start));
  const int n = static_cast<int>(by_start.size());
  for (int current = 0; current <= n; ++current) {
    paths = std::move(next_paths);
    next_paths.clear();
    std::stable_sort(paths.begin(), paths.end(), comparator);  // Collections.sort is stable
    const int ranks = std::min(beam_size, static_cast<int>(paths.size()));
    for (int rank = 0; rank < ranks; ++rank) {
      PartialAlignment& path = paths[static_cast<std::size_t>(rank)];
      if (current == n) {  // complete: close the last chunk
        if (path.last_match_end != -1) path.chunks++;
        next_paths.push_back(std::move(path));
        continue;
      }
      if (path.line2_used(static_cast<std::size_t>(current))) {
        if (current < path.idx) {
          next_paths.push_back(std::move(path));
        } else if (path.match_at(static_cast<std::size_t>(path.idx)) >= 0) {  // fixed match
          const Match& m = table[static_cast<std::size_t>(path.match_at(static_cast<std::size_t>(path.idx)))];
          add_match_stats(path, m, search_weights);
          if (path.last_match_end != -1 && m.match_start != path.last_match_end) path.chunks++;
          path.idx = m.start + m.length;
          path.last_match_end = m.match_start + m.match_length;
          path.distance += std::abs(m.start - m.match_start);
          next_paths.push_back(std::move(path));
        }
        continue;
      }
      for (const int32_t id : by_start[static_cast<std::size_t>(current)]) {
        const Match& m = table[static_cast<std::size_t>(id)];
        if (path.is_used(m)) continue;
        PartialAlignment np = path;
        np.take(id, m);
        add_match_stats(np, m, search_weights);
        if (np.last_match_end != -1 && m.match_start != np.last_match_end) np.chunks++;
        np.idx = m.start + m.length;
        np.last_match_end = m.match_start + m.match_length;
        // METEOR 1.5 adds the distance to the path being extended, not to the new one; kept as is.
        path.distance += std::abs(m.start - m.match_start);
        next_paths.push_back(std::move(np));
      }
      // Try skipping this index.
      if (path.last_match_end != -1) {
        path.chunks++;
        path.last_match_end = -1;
      }
      path.idx++;
      next_paths.push_back(std::move(path));
    }
    // Only reached when no path was pushed, hence none moved from.
    if (next_paths.empty()) next_paths.push_back(paths.front());
  }
  std::stable_sort(next_paths.begin(), next_paths.end(), comparator);
  return std::move(next_paths.front());
}

// Aligner.getCountAndChunks(): chunks of the final alignment.
int count_chunks(const std::vector<const Match*>& matches) {
  int chunks = 0;
  std::size_t idx = 0;
  int last_match_end = -1;
  while (idx < matches.size()) {
    const Match* m = matches[idx];
    if (m == nullptr) {
      if (last_match_end != -1) {
        chunks++;
        last_match_end = -1;
      }
      idx++;
    } else {
      if (last_match_end != -1 && m->match_start != last_match_end) chunks++;
      idx = static_cast<std::size_t>(m->start + m->length);
      last_match_end = m->match_start + m->match_length;
    }
  }
  if (last_match_end != -1) chunks++;
  return chunks;
}

}  // namespace

MeteorStats align_words(const std::vector<std::string>& words1, const std::vector<std::string>& words2,
                        const MeteorOptions& opt) {
  const std::size_t n1 = words1.size(), n2 = words2.size();
  std::vector<int32_t> keys1(n1), keys2(n2);
  for (std::size_t i = 0; i < n1; ++i) keys1[i] = java_hash(words1[i]);
  for (std::size_t j = 0; j < n2; ++j) keys2[j] = java_hash(words2[j]);

  // Stage: all candidate matches, by line-2 start, with coverage counts.
  std::vector<Match> table;
  std::vector<std::vector<int32_t>> by_start(n2);
  std::vector<int> cover1(n1, 0), cover2(n2, 0);
  const bool identical = keys1 == keys2;  // then only the exact module runs
  auto add = [&](int module, std::size_t i, std::size_t j) {
    Match m;
    m.start = static_cast<int>(j);
    m.match_start = static_cast<int>(i);
    m.module = module;
    by_start[j].push_back(static_cast<int32_t>(table.size()));
    table.push_back(m);
    cover1[i]++;
    cover2[j]++;
  };
  for (std::size_t j = 0; j < n2; ++j) {
    for (std::size_t i = 0; i < n1; ++i) {
      if (keys1[i] == keys2[j]) add(kExact, i, j);
    }
  }
  if (opt.stem && !identical) {
    std::vector<int32_t> stems1(n1), stems2(n2);
    for (std::size_t i = 0; i < n1; ++i) stems1[i] = java_hash(snowball_english_stem(words1[i]));
    for (std::size_t j = 0; j < n2; ++j) stems2[j] = java_hash(snowball_english_stem(words2[j]));
    for (std::size_t j = 0; j < n2; ++j) {
      for (std::size_t i = 0; i < n1; ++i) {
        // Match for DIFFERENT words with SAME stems.
        if (stems1[i] == stems2[j] && keys1[i] != keys2[j]) add(kStem, i, j);
      }
    }
  }

  PartialAlignment initial(n1, n2);
  // One-to-one, non-overlapping matches are definite.
  for (std::size_t j = 0; j < n2; ++j) {
    if (by_start[j].size() != 1) continue;
    const int32_t id = by_start[j][0];
    const Match& m = table[static_cast<std::size_t>(id)];
    const bool overlap = cover2[j] != 1 || cover1[static_cast<std::size_t>(m.match_start)] != 1;
    if (!overlap) initial.take(id, m);
  }
  // The search ranks alignments with METEOR's "best alignments for evaluation" weights: exact 1.0,
  // every other module 0.5 (MeteorScorer.loadConfiguration), not the scoring weights.
  const double search_weights[kModules] = {1.0, 0.5};
  const PartialAlignment best = resolve(table, by_start, std::move(initial), opt.beam_size, search_weights);
  std::vector<const Match*> best_matches(n2, nullptr);
  for (std::size_t j = 0; j < n2; ++j) {
    if (best.match_at(j) >= 0) best_matches[j] = &table[static_cast<std::size_t>(best.match_at(j))];
  }

  std::vector<bool> function1(n1, false), function2(n2, false);
  MeteorStats st;
  st.test_length = static_cast<double>(n1);
  st.reference_length = static_cast<double>(n2);
  for (std::size_t i = 0; i < n1; ++i) {
    function1[i] = opt.function_words.count(words1[i]) > 0;
    st.test_function_words += function1[i] ? 1 : 0;
  }
  for (std::size_t j = 0; j < n2; ++j) {
    function2[j] = opt.function_words.count(words2[j]) > 0;
    st.reference_function_words += function2[j] ? 1 : 0;
  }
  for (const Match* m : best_matches) {
    if (m == nullptr) continue;
    const auto mod = static_cast<std::size_t>(m->module);
    for (int k = 0; k < m->match_length; ++k) {
      (function1[static_cast<std::size_t>(m->match_start + k)] ? st.test_function : st.test_content)[mod] += 1;
    }
    for (int k = 0; k < m->length; ++k) {
      (function2[static_cast<std::size_t>(m->start + k)] ? st.reference_function : st.reference_content)[mod] += 1;
    }
  }
  st.chunks = count_chunks(best_matches);
  for (int mod = 0; mod < kModules; ++mod) {
    const auto k = static_cast<std::size_t>(mod);
    st.test_word_matches += st.test_content[k] + st.test_function[k];
    st.reference_word_matches += st.reference_content[k] + st.reference_function[k];
  }
  return st;
}

}  // namespace cmn::metrics::meteor_detail
