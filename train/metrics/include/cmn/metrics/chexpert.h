#pragma once
// A CheXpert-style report labeler for CheXpert's 14 observations, written after the Stanford CheXpert labeler
// (stanfordmlgroup/chexpert-labeler, MIT; its phrase lists are reproduced in src/chexpert_phrases.cc) but with
// surface rules instead of its BLLIP parse + NegBio dependency patterns, so it needs no Java/Python NLP stack.
//
// The stages, in the labeler's order:
//   0. clean (loader/load.py): lower-case; "and/or" -> "or"; "x/y" between letters -> "x or y"; ".." -> ".";
//      a space after every '.' and ','; whitespace runs -> one space. Sentences end at ". ", "? ", "! "
//      (the labeler uses NLTK's punkt; on cleaned text the two differ only around abbreviations).
//   1. mention (stages/extract.py): every (non-overlapping) occurrence of a mention phrase of an observation
//      in a sentence, as a plain substring (so "opaci" matches "opacities", "scar" matches "scarring"), unless
//      it overlaps an occurrence of one of that observation's "unmention" phrases ("calcified nodul" is not a
//      Lung Lesion, "pericardial effusion" is not a Pleural Effusion, "over the heart" is not Cardiomegaly).
//      The "No Finding" phrases ("granuloma", "degenera", "emphysema", ...) name findings outside the 14: they
//      are never a column of their own but, when stated, they stop No Finding (step 3).
//   2. classify (stages/classify.py, patterns/*.txt): each mention, in this order, is
//        a. UNCERTAIN by a pre-negation uncertainty cue: "cannot exclude", "not excluded", "cannot rule out",
//           anywhere in its clause; "no new" right before it;
//        b. NEGATIVE by a negation cue
//           - before it, with scope up to the mention unless a finite verb, "with", a clause break or ", the/there"
//             intervenes: "no", "without", "negative for", "free of", "clear of", "rather than", "resolution
//             of", "removal of", "history of", "rule out", "exclude", "normal", "unremarkable"
//             ("no pneumothorax, effusion or consolidation": all three negative);
//           - after it, reached over at most one verb and no "with"/"otherwise"/clause break: "normal",
//             "unremarkable", "within normal limits", "clear" (not over a comma without "and"/"or": "cardiomegaly,
//             lungs are clear"), "absent", "resolved", "removed", "cleared", "not enlarged",
//             "not seen / identified / visualized / present / evident / demonstrated", "no longer seen"
//             ("heart size and mediastinal contours are within normal limits": both negative);
//        c. UNCERTAIN by a post-negation uncertainty cue: before it in its clause ("may", "might", "could",
//           "would", "possible", "possibly", "probable", "questionable", "suspicious for", "concern for",
//           "suggestive of", "worrisome for", "question of", "consider", "secondary to", "differential", ...),
//           after it ("is suspected", "is not well visualized", "is not appreciated", "is obscured",
//           "is questionable", "may be present"); a member of an "or" / "versus" list ("atelectasis or
//           consolidation"); "stable" / "unchanged" / "borderline" said of the heart size or the
//           cardiomediastinal silhouette (not of "cardiomegaly"); "vascular congestion", "pulmonary congestion",
//           "vascular prominence" and "indistinctness" always (the labeler's own rules);
//        d. POSITIVE otherwise.
//      A clause ends at ';', ':' or the words "but", "however", "although", "though", "whereas", "except",
//      "which", "where"; a sentence at its end.
//   3. aggregate (stages/aggregate.py), per report and observation over all its mentions: one label -> that
//      label; several: 0 and -1 -> -1 (checked first, even when a 1 is also present), else 0 and 1 -> 1,
//      else -1 and 1 -> 1. A positive or uncertain "chf" / "heart failure" (an Edema mention) also adds an
//      uncertain Cardiomegaly mention. No Finding is 1 when no mention of any observation other than Support
//      Devices (the No Finding phrases included) is positive or uncertain, and blank otherwise (never 0).
//      Observations not mentioned are blank.
//
// Where this differs from the original: negation and uncertainty scope is a clause-and-word-window guess at
// what the dependency parse would link; parse errors of the original (it sometimes misses a negation over a
// long list) are not reproduced. `cmn-label-agreement` measures agreement on NegBio's OpenI gold standard.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace cmn::metrics {

constexpr int kNumObservations = 14;

// CheXpert's column order.
enum class Observation : int {
  kNoFinding = 0,
  kEnlargedCardiomediastinum,
  kCardiomegaly,
  kLungLesion,
  kLungOpacity,
  kEdema,
  kConsolidation,
  kPneumonia,
  kAtelectasis,
  kPneumothorax,
  kPleuralEffusion,
  kPleuralOther,
  kFracture,
  kSupportDevices,
};

// "No Finding", "Enlarged Cardiomediastinum", ..., "Support Devices" (the labeler's CSV column names).
const char* observation_name(Observation observation);
const std::array<std::string, kNumObservations>& observation_names();

// One cell of the labeler's output: 1.0, 0.0, -1.0 or blank.
enum class Mention : int8_t { kBlank = -2, kNegative = 0, kPositive = 1, kUncertain = -1 };
using ChexpertLabels = std::array<Mention, kNumObservations>;  // indexed by Observation

// The labels of one report (any section; the labeler is usually given the impression, R2Gen's IU X-Ray
// annotation holds the findings).
ChexpertLabels chexpert_label(const std::string& report);

// Step 0 and the sentence split, exposed for tests and the agreement tool.
std::string chexpert_clean(const std::string& report);
std::vector<std::string> chexpert_sentences(const std::string& cleaned);

// One classified mention, for explaining a label (cmn-label --explain).
struct MentionTrace {
  Observation observation;
  std::string text;      // the matched phrase as it occurs
  std::string sentence;  // the cleaned sentence it occurs in
  Mention label;
  std::string cue;  // the cue that made it negative/uncertain ("" when positive)
};
std::vector<MentionTrace> chexpert_trace(const std::string& report);

}  // namespace cmn::metrics
