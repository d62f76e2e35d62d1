#pragma once
// Caption metrics as R2Gen / R2GenCMN report them: modules/metrics.py compute_scores() hands pycocoevalcap
// the dicts gts = {i: [reference]} and res = {i: [hypothesis]} of already tokenised, decoded report text
// (no PTB tokenizer), and we compute what pycocoevalcap computes on them:
//
//   BLEU-1..4  bleu/bleu_scorer.py BleuScorer.compute_score(option='closest'): corpus-level clipped n-gram
//              precisions with the scorer's own smoothing constants (tiny = 1e-15 on the numerator, small =
//              1e-9 on the denominator), closest reference length (ties -> the shorter), brevity penalty
//              exp(1 - r/c) on the corpus totals when c < r. Words: Python's str.split().
//   ROUGE-L    rouge/rouge.py: per image, LCS over str.split(" ") tokens, max precision and max recall over
//              the references, F = (1 + b^2) P R / (R + b^2 P) with b = 1.2; the mean over images.
//   CIDEr-D    cider/cider_scorer.py (salaniz/pycocoevalcap): n = 1..4, tf-idf with document frequencies from
//              the references of the evaluated set, idf = log(#images) - log(max(1, df)), per-n cosine with
//              the hypothesis weights clipped at the reference's (min(h, r) * r), a Gaussian length penalty
//              exp(-(l_h - l_r)^2 / (2 sigma^2)), sigma = 6, where "length" is the scorer's: the number of
//              BIGRAMS (its `if n == 1: length += term_freq`), so words - 1; a zero norm leaves that n's
//              value unnormalised (0); mean over n, over references, times 10; mean over images.
//   Floating-point operations follow the Python code's order (dict insertion order for sums, numpy's
//   pairwise summation inside np.mean), so results agree with pycocoevalcap to the last bits wherever
//   numpy's and the C library's log/exp/pow agree.
//
//   METEOR     NOT METEOR 1.5 (which needs Java and its paraphrase tables). A port of METEOR 1.5's aligner
//              and scorer restricted to its exact and stem modules ("METEOR (exact+stem approximation, not
//              METEOR 1.5)"): the -norm English normaliser (ASCII subset), Snowball English (Porter2)
//              stems, the aligner's beam search (beam 40, PARTIAL_COMPARE_TOTAL, fixed one-to-one matches),
//              the default English parameters alpha 0.85, beta 0.20, gamma 0.60, delta 0.75 and module
//              weights exact 1.0, stem 0.6, and — as pycocoevalcap's wrapper reads it — the corpus score from
//              the summed sufficient statistics (Meteor's EVAL line), not a mean of sentence scores.
//              Missing against the real thing: the synonym module (WordNet; not installed here), the
//              paraphrase module, METEOR's English function-word list (none by default: every word is a
//              content word, so delta has no effect unless a list is supplied) and the normaliser's
//              non-breaking-prefix list.
//
// No LibTorch and no JSON here: the trainer, cmn-eval and tests share this library.
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace cmn::metrics {

// One evaluated image: pycocoevalcap's res[id] = [hypothesis] and gts[id] = references (one or more).
struct Example {
  std::string hypothesis;
  std::vector<std::string> references;
};

// A corpus score and the per-image values it is the mean of.
struct CorpusScore {
  double score = 0.0;
  std::vector<double> per_image;
};

// ---- BLEU ------------------------------------------------------------------------------------------------

struct BleuResult {
  std::vector<double> scores;                  // BLEU-1..n (index 0 is BLEU-1)
  std::vector<std::vector<double>> per_image;  // per_image[k][i]: the scorer's bleu_list (k+1-gram only)
  int64_t testlen = 0;                         // total hypothesis words
  int64_t reflen = 0;                          // total closest-reference words
};
// Throws std::invalid_argument if an example has no reference (pycocoevalcap asserts).
BleuResult bleu(const std::vector<Example>& examples, int max_n = 4);

// ---- ROUGE-L ---------------------------------------------------------------------------------------------

// Rouge.calc_score for one image.
double rouge_l_sentence(const std::string& candidate, const std::vector<std::string>& references, double beta = 1.2);
CorpusScore rouge_l(const std::vector<Example>& examples, double beta = 1.2);

// ---- CIDEr-D ---------------------------------------------------------------------------------------------

// CiderScorer with a fixed document-frequency table. cider_d() below builds it from the evaluated
// references, as pycocoevalcap does; SCST can build it once from the training references instead.
class CiderD {
 public:
  // df[g] = number of reference SETS (images) in which n-gram g occurs; ref_len = log(#sets).
  explicit CiderD(const std::vector<std::vector<std::string>>& reference_sets, int n = 4, double sigma = 6.0);
  // The per-image score of CiderScorer.compute_cider (already x10, averaged over the references).
  double score(const std::string& hypothesis, const std::vector<std::string>& references) const;

  double ref_len() const { return ref_len_; }
  // log(max(1, df)) of an n-gram given as space-joined words ("no acute"): for tests and diagnostics.
  double log_df(const std::string& ngram) const;

 private:
  int n_;
  double sigma_;
  double ref_len_ = 0.0;
  std::unordered_map<std::string, double> df_;  // key: n-gram words joined by '\x1f'
};
CorpusScore cider_d(const std::vector<Example>& examples, int n = 4, double sigma = 6.0);

// ---- METEOR (exact + stem approximation) -----------------------------------------------------------------

inline constexpr const char* kMeteorLabel = "METEOR (exact+stem approximation, not METEOR 1.5)";

struct MeteorOptions {
  double alpha = 0.85;
  double beta = 0.20;
  double gamma = 0.60;
  double delta = 0.75;
  double exact_weight = 1.0;
  double stem_weight = 0.6;
  bool stem = true;       // the stem module (off: exact matching only)
  bool normalize = true;  // Meteor's -norm (tokenise punctuation, lowercase), as pycocoevalcap runs it
  int beam_size = 40;
  // METEOR's function words (its resource function/english.words, one per line); empty: none.
  std::unordered_set<std::string> function_words;
};

// METEOR's per-segment sufficient statistics (word-level), summable over a corpus.
struct MeteorStats {
  double test_length = 0, reference_length = 0;
  double test_function_words = 0, reference_function_words = 0;
  // Per module (0 exact, 1 stem): matched words, split into content and function words.
  std::array<double, 2> test_content = {0, 0}, reference_content = {0, 0};
  std::array<double, 2> test_function = {0, 0}, reference_function = {0, 0};
  double chunks = 0;
  double test_word_matches = 0, reference_word_matches = 0;  // unweighted totals (= total matches here)

  void add(const MeteorStats& other);
};

// The -norm normaliser of Meteor 1.5 for English with punctuation kept, followed by lowercasing.
std::string meteor_normalize(const std::string& line);
// Snowball's English ("Porter2") stemmer, the one METEOR's stem module uses. ASCII lowercase words.
std::string snowball_english_stem(const std::string& word);

// Aligns hypothesis (Meteor's "test", line 1) and reference (line 2); text is normalised first when
// options.normalize.
MeteorStats meteor_stats(const std::string& hypothesis, const std::string& reference,
                         const MeteorOptions& options = {});
// MeteorScorer.computeMetrics: the score of (summed) statistics; NaN -> 0.
double meteor_score(const MeteorStats& stats, const MeteorOptions& options = {});
// The corpus score from the summed statistics (what pycocoevalcap returns) and per-image scores. With
// several references an image takes the statistics of its best-scoring one, as Meteor does.
CorpusScore meteor(const std::vector<Example>& examples, const MeteorOptions& options = {});

// Reads a function-word list: one word per line, as METEOR's resource file.
std::unordered_set<std::string> read_word_list(const std::string& path);

// ---- All of them -----------------------------------------------------------------------------------------

struct Scores {
  double bleu1 = 0, bleu2 = 0, bleu3 = 0, bleu4 = 0;
  double meteor = 0;  // kMeteorLabel
  double rouge_l = 0;
  double cider = 0;  // CIDEr-D
  // ("BLEU_1", ...), ("METEOR", ...), ("ROUGE_L", ...), ("CIDEr", ...): the keys R2GenCMN logs.
  std::vector<std::pair<std::string, double>> named() const;
};
Scores evaluate(const std::vector<Example>& examples, const MeteorOptions& meteor_options = {});

}  // namespace cmn::metrics
