// cmn_metrics: values worked out by hand from the definitions pycocoevalcap implements (bleu_scorer.py,
// rouge.py, cider_scorer.py) and from METEOR 1.5's scorer, plus the IU X-Ray anchor from the issue.
#include "cmn/metrics/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cmn/metrics/references.h"
#include "cmn/model/tokenizer.h"
#include "cmn/pipeline/annotation.h"

namespace {

using cmn::metrics::Example;

// ---- BLEU ------------------------------------------------------------------------------------------------

// hyp "the cat sat on the mat", ref "the cat is on the mat" (both 6 words).
//   1-grams: the x2 (ref has 2), cat, on, mat match, sat does not        -> 5/6
//   2-grams: "the cat", "on the", "the mat" of 5                          -> 3/5
//   3-grams: "on the mat" of 4                                            -> 1/4
//   4-grams: none of 3 -> (0 + tiny) / (3 + small) = 1e-15 / (3 + 1e-9)
// BLEU-n = (p1 ... pn)^(1/n) * BP; with equal lengths the scorer's ratio (6 + 1e-15) / (6 + 1e-9) is just
// below 1, so BP = exp(1 - 1/ratio) = 1 - 1.67e-10. BLEU-4 is not 0 but (0.125 * 1e-15 / 3)^(1/4).
TEST(BleuTest, HandComputedSingleSentenceWithTheScorersSmoothing) {
  const auto r = cmn::metrics::bleu({{"the cat sat on the mat", {"the cat is on the mat"}}});
  ASSERT_EQ(r.scores.size(), 4u);
  EXPECT_NEAR(r.scores[0], 5.0 / 6.0, 1e-9);
  EXPECT_NEAR(r.scores[1], std::sqrt(5.0 / 6.0 * 3.0 / 5.0), 1e-9);  // sqrt(0.5)
  EXPECT_NEAR(r.scores[2], 0.5, 1e-9);                               // (1/8)^(1/3)
  EXPECT_NEAR(r.scores[3], 8.034284187e-05, 1e-12);                  // (0.125 * 1e-15 / 3)^(1/4)
  EXPECT_LT(r.scores[0], 5.0 / 6.0);                                 // the 1 - 1.67e-10 brevity factor
  EXPECT_EQ(r.testlen, 6);
  EXPECT_EQ(r.reflen, 6);
  // Per-image lists hold the k-gram precision alone, to the 1/k: (3/5)^(1/2) for k = 2.
  EXPECT_NEAR(r.per_image[1][0], std::sqrt(0.6), 1e-9);
}

// Closest reference length, ties to the SHORTER reference, and the corpus brevity penalty.
//   image 1: hyp "a b c" (3); refs of 4 and 2 words: |4-3| = |2-3| = 1 -> r = 2
//   image 2: hyp "x y" (2);  ref of 4 words                            -> r = 4
//   c = 5, r = 6, BP = exp(1 - 6/5) = exp(-0.2) = 0.818730753
//   every 1-, 2- and 3-gram matches (5/5, 3/3, 1/1); there is no 4-gram at all: (0 + 1e-15)/(0 + 1e-9) = 1e-6
//   BLEU-1..3 = BP; BLEU-4 = (1e-6)^(1/4) * BP = 0.0316227766 * 0.818730753 = 0.025890540
// (Had the tie gone to the longer reference, r = 8 and BP = exp(-0.6) = 0.549.)
TEST(BleuTest, ClosestReferenceLengthTiesToShorterAndBrevityPenalty) {
  const auto r = cmn::metrics::bleu({{"a b c", {"a b c d", "a b"}}, {"x y", {"x y z w"}}});
  EXPECT_EQ(r.testlen, 5);
  EXPECT_EQ(r.reflen, 6);
  EXPECT_NEAR(r.scores[0], 0.818730753, 1e-8);
  EXPECT_NEAR(r.scores[1], 0.818730753, 1e-8);
  EXPECT_NEAR(r.scores[2], 0.818730753, 1e-8);
  EXPECT_NEAR(r.scores[3], 0.025890540, 1e-8);
}

// Clipping: "the the the" against "the cat": the hypothesis' 3 "the" count once -> p1 = 1/3.
TEST(BleuTest, CountsAreClippedToTheReference) {
  const auto r = cmn::metrics::bleu({{"the the the", {"the cat"}}});
  // c = 3 > r = 2: no brevity penalty.
  EXPECT_NEAR(r.scores[0], 1.0 / 3.0, 1e-9);
}

TEST(BleuTest, IdenticalHypothesisAndReferenceGiveOne) {
  const std::vector<Example> ex = {
      {"no acute cardiopulmonary abnormality .", {"no acute cardiopulmonary abnormality ."}},
      {"the heart is normal in size .", {"the heart is normal in size ."}}};
  const auto r = cmn::metrics::bleu(ex);
  for (double s : r.scores) EXPECT_NEAR(s, 1.0, 1e-8);
  const auto all = cmn::metrics::evaluate(ex);
  EXPECT_NEAR(all.bleu4, 1.0, 1e-8);
  EXPECT_NEAR(all.rouge_l, 1.0, 1e-12);
  // METEOR: each sentence scores 1, but the corpus score comes from the summed statistics (Meteor's EVAL
  // line, which pycocoevalcap returns): 12 words matched on each side in 2 chunks, and the "frag = 0 when
  // identical" case needs chunks == 1, so 1 - 0.6 * (2 / 12)^0.2 = 0.580704.
  const auto m = cmn::metrics::meteor(ex);
  EXPECT_DOUBLE_EQ(m.per_image[0], 1.0);
  EXPECT_DOUBLE_EQ(m.per_image[1], 1.0);
  EXPECT_NEAR(all.meteor, 1.0 - 0.6 * std::pow(2.0 / 12.0, 0.2), 1e-12);
}

TEST(BleuTest, MissingReferenceIsAnError) { EXPECT_THROW(cmn::metrics::bleu({{"a b", {}}}), std::invalid_argument); }

// ---- ROUGE-L ---------------------------------------------------------------------------------------------

// cand "a b c d" (4), ref "a x c y d z" (6): LCS "a c d" = 3, P = 3/4, R = 3/6.
// F = (1 + 1.2^2) P R / (R + 1.2^2 P) = 2.44 * 0.375 / (0.5 + 1.08) = 0.915 / 1.58 = 0.579113924
// (beta = 1 would give 2PR/(P+R) = 0.6).
TEST(RougeTest, HandComputedLcsWithBeta12) {
  EXPECT_NEAR(cmn::metrics::rouge_l_sentence("a b c d", {"a x c y d z"}), 0.579113924, 1e-9);
  EXPECT_NEAR(cmn::metrics::rouge_l_sentence("a b c d", {"a x c y d z"}, 1.0), 0.6, 1e-12);
}

// The reference scorer takes the best precision and the best recall independently over the references:
// ref "a b" gives P = 2/4, R = 1; ref "a b c d e f g h" gives P = 1, R = 4/8; so P_max = R_max = 1 -> F = 1.
TEST(RougeTest, PrecisionAndRecallMaximisedSeparatelyOverReferences) {
  EXPECT_NEAR(cmn::metrics::rouge_l_sentence("a b c d", {"a b", "a b c d e f g h"}), 1.0, 1e-12);
}

TEST(RougeTest, CorpusIsTheMeanOverImages) {
  const auto r = cmn::metrics::rouge_l({{"a b c d", {"a x c y d z"}}, {"p q", {"r s"}}, {"m", {"m"}}});
  ASSERT_EQ(r.per_image.size(), 3u);
  EXPECT_EQ(r.per_image[1], 0.0);
  EXPECT_NEAR(r.score, (0.5791139240506329 + 0.0 + 1.0) / 3.0, 1e-12);
}

// ---- CIDEr-D ---------------------------------------------------------------------------------------------

// Three images:           A              B              C
//   references            "a b"          "a c"          "d e"
//   hypotheses            "a b"          "a b"          "d"
// N = 3 -> ref_len = log 3. Document frequencies over the references: a: 2 (A, B); b, c, d, e: 1;
// "a b", "a c", "d e": 1. idf = log 3 - log(max(1, df)): a -> log 1.5 = 0.405465; everything else -> log 3 =
// 1.098612. With single references each tf is 1.
//   A: hyp = ref. n=1 and n=2 cosines are 1; n=3,4 have no n-grams (zero norms -> 0). Bigram counts 1 and 1:
//      no length penalty. 10 * mean(1, 1, 0, 0) = 5.
//   B: n=1: shared "a" only: (log1.5)^2 / ((log1.5)^2 + (log3)^2) = 0.164402 / 1.371351 = 0.119883;
//      n=2: "a b" vs "a c": 0. 10 * 0.119883 / 4 = 0.299708.
//   C: n=1: "d" vs {"d","e"}: (log3)^2 / (log3 * sqrt2 * log3) = 1/sqrt2 = 0.707107; lengths are BIGRAM counts
//      0 vs 1 -> penalty exp(-1/72) = 0.986207 -> 0.697354; n>=2: hypothesis has none. 10 * 0.697354/4 = 1.743384.
//   CIDEr-D = (5 + 0.299708 + 1.743384) / 3 = 2.347697
TEST(CiderTest, HandComputedTfIdfOnThreeImages) {
  const std::vector<Example> ex = {{"a b", {"a b"}}, {"a b", {"a c"}}, {"d", {"d e"}}};
  const cmn::metrics::CiderD scorer({{"a b"}, {"a c"}, {"d e"}});
  EXPECT_NEAR(scorer.ref_len(), std::log(3.0), 1e-15);
  EXPECT_NEAR(scorer.log_df("a"), std::log(2.0), 1e-15);
  EXPECT_NEAR(scorer.log_df("e"), 0.0, 1e-15);
  EXPECT_NEAR(scorer.log_df("a c"), 0.0, 1e-15);
  EXPECT_NEAR(scorer.log_df("zzz"), 0.0, 1e-15);  // unseen: log(max(1, 0))
  const auto r = cmn::metrics::cider_d(ex);
  ASSERT_EQ(r.per_image.size(), 3u);
  EXPECT_NEAR(r.per_image[0], 5.0, 1e-12);
  EXPECT_NEAR(r.per_image[1], 0.299708033, 1e-8);
  EXPECT_NEAR(r.per_image[2], 1.743384350, 1e-8);
  EXPECT_NEAR(r.score, 2.347697461, 1e-8);
}

// CIDEr-D clips the hypothesis tf-idf at the reference's: min(h, r) * r.
// Two images, refs "a b" and "c d", hyps "a a" and "c d": N = 2, every df is 1, idf = log 2 = L.
//   X: hyp a -> 2L (norm 2L), ref a, b -> L, L (norm sqrt2 L). n=1: min(2L, L) * L / (2L * sqrt2 L)
//      = 1/(2 sqrt2) = 0.353553 (unclipped it would be 1/sqrt2); n=2 "a a" vs "a b": 0. 10 * 0.353553/4 = 0.883883
//   Y: identical: 10 * 2/4 = 5.        CIDEr-D = (0.883883 + 5) / 2 = 2.941942
TEST(CiderTest, HypothesisCountsAreClipped) {
  const auto r = cmn::metrics::cider_d({{"a a", {"a b"}}, {"c d", {"c d"}}});
  EXPECT_NEAR(r.per_image[0], 0.883883476, 1e-8);
  EXPECT_NEAR(r.score, 2.941941738, 1e-8);
}

// The Gaussian penalty uses sigma = 6: same words, one extra word on the hypothesis -> exp(-1/72) on each n.
TEST(CiderTest, LengthPenaltySigmaSix) {
  const std::vector<std::vector<std::string>> refs = {{"a b c d e"}, {"f g h"}};
  const cmn::metrics::CiderD six(refs), one(refs, 4, 1.0);
  const double base = six.score("a b c d e", {"a b c d e"});
  EXPECT_NEAR(base, 10.0, 1e-12);
  // "e a b c d e": the extra "e" changes the vectors too, so compare the two sigmas on the same pair:
  // ratio of scores = exp(-1/72) / exp(-1/2).
  const double s6 = six.score("a b c d e e", {"a b c d e"});
  const double s1 = one.score("a b c d e e", {"a b c d e"});
  EXPECT_NEAR(s6 / s1, std::exp(-1.0 / 72.0) / std::exp(-0.5), 1e-12);
}

// ---- METEOR (exact + stem approximation) -----------------------------------------------------------------

// hyp "the lungs are clear", ref "the lung is clear" (no function words):
//   exact: the-the, clear-clear; stem: lungs-lung (Porter2 "lung"); are/is unmatched.
//   P = R = (0.75 * (2 * 1.0 + 1 * 0.6)) / (0.75 * 4) = 0.65; Fmean = 0.65.
//   chunks: ref the,lung -> hyp 0,1 (one chunk), ref "is" unmatched, ref clear -> hyp 3: 2 chunks.
//   frag = 2 / ((3 + 3) / 2) = 2/3; penalty = 0.6 * (2/3)^0.2 = 0.553265; score = 0.65 * 0.446735 = 0.290378
TEST(MeteorTest, ExactAndStemMatchesAndFragmentation) {
  const auto st = cmn::metrics::meteor_stats("the lungs are clear", "the lung is clear");
  EXPECT_EQ(st.test_length, 4);
  EXPECT_EQ(st.reference_length, 4);
  EXPECT_EQ(st.test_content[0], 2);  // exact
  EXPECT_EQ(st.test_content[1], 1);  // stem
  EXPECT_EQ(st.reference_content[0], 2);
  EXPECT_EQ(st.reference_content[1], 1);
  EXPECT_EQ(st.chunks, 2);
  EXPECT_NEAR(cmn::metrics::meteor_score(st), 0.290377915, 1e-8);

  cmn::metrics::MeteorOptions exact_only;
  exact_only.stem = false;
  const auto ex = cmn::metrics::meteor_stats("the lungs are clear", "the lung is clear", exact_only);
  EXPECT_EQ(ex.test_content[0] + ex.test_content[1], 2);
}

// Reordered: hyp "a b c d", ref "c d a b": all four match exactly, in 2 chunks.
//   P = R = 1; frag = 2 / 4 = 0.5; penalty = 0.6 * 0.5^0.2 = 0.522330; score = 0.477670.
// The same sentence: 1 chunk and every word matched -> frag 0 -> 1.
TEST(MeteorTest, FragmentationPenaltyForReorderedChunks) {
  const auto st = cmn::metrics::meteor_stats("a b c d", "c d a b");
  EXPECT_EQ(st.chunks, 2);
  EXPECT_EQ(st.test_word_matches, 4);
  EXPECT_NEAR(cmn::metrics::meteor_score(st), 0.477669662, 1e-8);
  EXPECT_DOUBLE_EQ(cmn::metrics::meteor_score(cmn::metrics::meteor_stats("a b c d", "a b c d")), 1.0);
}

// delta = 0.75 weighs content words against function words when a list is given ({the, is}):
//   test weighted length = 0.75 * 3 + 0.25 * 1 = 2.5; reference = 0.75 * 2 + 0.25 * 2 = 2.0
//   weighted matches (both sides): exact content 0.75 + stem content 0.6 * 0.75 + exact function 0.25 = 1.45
//   P = 0.58, R = 0.725, Fmean = 1 / (0.15/0.58 + 0.85/0.725) = 0.698795; score = 0.698795 * 0.446735 = 0.312176
TEST(MeteorTest, FunctionWordsWeightedByDelta) {
  cmn::metrics::MeteorOptions opt;
  opt.function_words = {"the", "is"};
  const auto st = cmn::metrics::meteor_stats("the lungs are clear", "the lung is clear", opt);
  EXPECT_EQ(st.test_function_words, 1);
  EXPECT_EQ(st.reference_function_words, 2);
  EXPECT_EQ(st.test_function[0], 1);
  EXPECT_NEAR(cmn::metrics::meteor_score(st, opt), 0.312176442, 1e-8);
}

// pycocoevalcap reads Meteor's aggregate line: the score of the SUMMED statistics, not the mean.
//   ("a b c d" | "a b c d"): 4/4 matched, 1 chunk, score 1.   ("x" | "y"): nothing, score 0.
//   Sum: lengths 5/5, matches 4/4, chunks 1: P = R = 0.8; frag = 1 / 4 (not the identical-sentence case)
//   -> 0.8 * (1 - 0.6 * 0.25^0.2) = 0.436228, where the mean of the sentence scores would be 0.5.
TEST(MeteorTest, CorpusScoreFromSummedStatistics) {
  const auto r = cmn::metrics::meteor({{"a b c d", {"a b c d"}}, {"x", {"y"}}});
  ASSERT_EQ(r.per_image.size(), 2u);
  EXPECT_DOUBLE_EQ(r.per_image[0], 1.0);
  EXPECT_DOUBLE_EQ(r.per_image[1], 0.0);
  EXPECT_NEAR(r.score, 0.436228024, 1e-8);
}

// Meteor's -norm: punctuation other than . ' ` , - is split off ("<unk>" becomes three tokens), dashes
// between words are removed, a final dot is split unless a lowercase word follows, multi-dots stay whole.
TEST(MeteorTest, NormaliserAsMeteorNorm) {
  EXPECT_EQ(cmn::metrics::meteor_normalize("<unk> lungs , t-spine"), "< unk > lungs , t spine");
  EXPECT_EQ(cmn::metrics::meteor_normalize("No acute disease."), "no acute disease .");
  EXPECT_EQ(cmn::metrics::meteor_normalize("the heart . lungs clear ."), "the heart . lungs clear .");
  EXPECT_EQ(cmn::metrics::meteor_normalize("e.g. this"), "eg this");
  EXPECT_EQ(cmn::metrics::meteor_normalize("end... next"), "end ... next");
}

// Snowball English (Porter2), as METEOR's stem module uses; outputs are Snowball's own.
TEST(MeteorTest, SnowballEnglishStems) {
  const std::vector<std::pair<std::string, std::string>> cases = {{"consolidation", "consolid"},
                                                                  {"effusions", "effus"},
                                                                  {"generously", "generous"},
                                                                  {"skies", "sky"},
                                                                  {"hopping", "hop"},
                                                                  {"caresses", "caress"},
                                                                  {"ponies", "poni"},
                                                                  {"ties", "tie"},
                                                                  {"opacities", "opac"},
                                                                  {"cardiomegaly", "cardiomegali"},
                                                                  {"unremarkable", "unremark"},
                                                                  {"hyperinflated", "hyperinfl"},
                                                                  {"news", "news"},
                                                                  {"feed", "feed"},
                                                                  {"agreed", "agre"}};
  for (const auto& [word, stem] : cases) EXPECT_EQ(cmn::metrics::snowball_english_stem(word), stem) << word;
}

// ---- All metrics, named as R2GenCMN logs them ------------------------------------------------------------

TEST(MetricsTest, NamedKeysInR2GenCMNOrder) {
  const auto s = cmn::metrics::evaluate({{"a b c d", {"a b c e"}}});
  const auto named = s.named();
  ASSERT_EQ(named.size(), 7u);
  const std::vector<std::string> keys = {"BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr"};
  for (std::size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(named[i].first, keys[i]);
  EXPECT_NEAR(named[0].second, 0.75, 1e-8);  // 3 of 4 unigrams, equal lengths
  // One image: ref_len = log 1 = 0, so every tf-idf weight is 0 and CIDEr-D is 0.
  EXPECT_EQ(s.cider, 0.0);
}

// ---- References as R2GenCMN's trainer prepares them, and the IU X-Ray anchor -----------------------------

TEST(MetricsTest, ReferencesAreCleanedUnkMappedTruncatedAndDecoded) {
  const auto tok =
      cmn::model::Tokenizer::build({"the heart is normal. the lungs are clear."}, cmn::model::CleaningRule::kIuXray, 1);
  EXPECT_EQ(cmn::metrics::r2gen_reference(tok, "The heart is enlarged.", 60), "the heart is <unk> .");
  // max_seq_length counts the leading 0: 4 ids keep 3 words.
  EXPECT_EQ(cmn::metrics::r2gen_reference(tok, "The heart is normal.", 4), "the heart is");
  EXPECT_EQ(cmn::metrics::r2gen_reference(tok, "The heart is normal.", 1), "");
}

// The anchor: each IU X-Ray test report scored against another study's report (the next one,
// cyclically) gives BLEU-4 about 0.10 (R2GenCMN's model reaches 0.170).
TEST(MetricsTest, IuXrayNextStudyAnchorBleu4AboutPointOne) {
  const auto annotation = cmn::pipeline::read_annotation(std::string(CMN_SHARED_DIR) + "/data/iu_xray/annotation.json");
  ASSERT_TRUE(annotation.ok()) << annotation.status();
  std::vector<std::string> train;
  for (const auto& ex : annotation->train) train.push_back(ex.report);
  const auto tok = cmn::model::Tokenizer::build(train, cmn::model::CleaningRule::kIuXray, 3);
  std::vector<std::string> refs;
  for (const auto& ex : annotation->test) refs.push_back(cmn::metrics::r2gen_reference(tok, ex.report, 60));
  ASSERT_GT(refs.size(), 100u);
  std::vector<Example> examples;
  for (std::size_t i = 0; i < refs.size(); ++i) examples.push_back({refs[(i + 1) % refs.size()], {refs[i]}});
  const auto s = cmn::metrics::evaluate(examples);
  std::printf("IU X-Ray test, next study's report as the prediction (%zu studies):", examples.size());
  for (const auto& [name, value] : s.named()) std::printf(" %s=%.4f", name.c_str(), value);
  std::printf("\n");
  EXPECT_GT(s.bleu4, 0.05);
  EXPECT_LT(s.bleu4, 0.15);
  EXPECT_GT(s.bleu1, s.bleu2);
  EXPECT_GT(s.bleu2, s.bleu3);
  EXPECT_GT(s.bleu3, s.bleu4);
  EXPECT_GT(s.meteor, 0.0);
  EXPECT_LT(s.meteor, 1.0);
  EXPECT_GT(s.rouge_l, 0.0);
  EXPECT_LT(s.rouge_l, 1.0);
  EXPECT_GT(s.cider, 0.0);
}

}  // namespace
