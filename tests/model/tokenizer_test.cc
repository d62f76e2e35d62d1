// Tests for cmn::model::Tokenizer against the Python reference (R2GenCMN modules/tokenizers.py).
// Parity data: /work/shared/parity/tokenizer/expected.json, produced by the reference from the train split
// of data/iu_xray/annotation.json. Hand-written edge cases carry expected strings obtained by running the
// reference's clean_report_* functions on the same inputs.
#include "cmn/model/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_paths.h"

namespace cmn::model {
namespace {

using nlohmann::json;

json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return json::parse(in);
}

const json& expected_fixture() {
  static const json j = load_json(cmn::testing::parity_path("tokenizer/expected.json"));
  return j;
}

const json& iu_annotation() {
  static const json j = load_json(cmn::testing::shared_path("data/iu_xray/annotation.json"));
  return j;
}

std::vector<std::string> train_reports() {
  std::vector<std::string> reports;
  for (const json& example : iu_annotation().at("train")) reports.push_back(example.at("report").get<std::string>());
  return reports;
}

// Tokenizer.decode from the reference, transcribed independently of the implementation under test so
// that the expected decode is derived from the fixture's own ids and vocabulary.
std::string reference_decode(const std::vector<int64_t>& ids, const std::vector<std::string>& vocab) {
  std::string txt;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] > 0) {
      if (i >= 1) txt += ' ';
      txt += vocab.at(static_cast<size_t>(ids[i] - 1));
    } else {
      break;
    }
  }
  return txt;
}

// ' '.join(s.split()) for ASCII text (the fixture is ASCII).
std::string collapse_spaces(const std::string& s) {
  std::istringstream in(s);
  std::string word, out;
  while (in >> word) out += (out.empty() ? "" : " ") + word;
  return out;
}

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "cmn_tokenizer_test_" + std::to_string(::getpid()) + "_" + name;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

void check_parity(const std::string& key, CleaningRule rule, int threshold, size_t expected_vocab_size) {
  const json& fixture = expected_fixture().at(key);
  const auto vocab = fixture.at("vocab").get<std::vector<std::string>>();
  ASSERT_EQ(vocab.size(), expected_vocab_size) << "fixture itself changed";

  const Tokenizer tok = Tokenizer::build(train_reports(), rule, threshold);
  EXPECT_EQ(tok.rule(), rule);
  EXPECT_EQ(tok.vocab_size(), static_cast<int64_t>(expected_vocab_size));
  ASSERT_EQ(tok.tokens(), vocab);

  const json& examples = fixture.at("examples");
  ASSERT_EQ(examples.size(), 25u);
  const json& test_split = iu_annotation().at("test");
  for (size_t n = 0; n < examples.size(); ++n) {
    const json& ex = examples[n];
    const auto id = ex.at("id").get<std::string>();
    SCOPED_TRACE(key + " example " + std::to_string(n) + " (" + id + ")");
    const auto report = ex.at("report").get<std::string>();
    const auto cleaned = ex.at("cleaned").get<std::string>();
    const auto ids = ex.at("ids").get<std::vector<int64_t>>();
    // The fixture should be the first test reports of the annotation we build from.
    EXPECT_EQ(id, test_split.at(n).at("id").get<std::string>());
    EXPECT_EQ(report, test_split.at(n).at("report").get<std::string>());

    EXPECT_EQ(clean_report(report, rule), cleaned);
    EXPECT_EQ(tok.encode(report), ids);

    // encode() output starts with 0, so the reference decode of it is "" (it stops at the first 0).
    EXPECT_EQ(tok.decode(ids), reference_decode(ids, vocab));
    // Without the leading bos the whole report decodes; that is the cleaned text with runs of spaces
    // collapsed (the empty-sentence case " .  ." in the fixture exercises this).
    const std::vector<int64_t> body(ids.begin() + 1, ids.end());
    const std::string decoded = tok.decode(body);
    EXPECT_EQ(decoded, reference_decode(body, vocab));
    EXPECT_EQ(decoded, collapse_spaces(cleaned));
  }
}

// ---- Parity with the reference on the IU X-Ray annotation ---------------------------------------------

TEST(TokenizerParity, IuXrayThreshold3) { check_parity("iu_xray_threshold3", CleaningRule::kIuXray, 3, 760); }

TEST(TokenizerParity, MimicCxrThreshold3) {
  check_parity("mimic_cxr_threshold3", CleaningRule::kMimicCxr, 3, 760);
}

TEST(TokenizerParity, MimicCxrThreshold10) {
  check_parity("mimic_cxr_threshold10", CleaningRule::kMimicCxr, 10, 399);
}

// ---- Cleaning rules ----------------------------------------------------------------------------------

TEST(TokenizerCleaning, DatasetNameSelectsRule) {
  EXPECT_EQ(cleaning_rule_for_dataset("iu_xray"), CleaningRule::kIuXray);
  EXPECT_EQ(cleaning_rule_for_dataset("mimic_cxr"), CleaningRule::kMimicCxr);
  EXPECT_EQ(cleaning_rule_for_dataset("anything_else"), CleaningRule::kMimicCxr);
  EXPECT_EQ(cleaning_rule_for_dataset("IU_XRAY"), CleaningRule::kMimicCxr);  // exact match, as in Python
}

struct CleanCase {
  std::string input, iu, mimic;
};

// Expected values from running the reference's clean_report_iu_xray / clean_report_mimic_cxr.
const std::vector<CleanCase>& clean_cases() {
  static const std::vector<CleanCase> cases = {
      // enumeration removal and '..' collapsing
      {"1. Heart normal. 2. Lungs clear.. 3. No effusion....", "heart normal . lungs clear . no effusion .",
       "heart normal . lungs clear . no effusion ."},
      // punctuation class; '-' survives because ':-\[' is a range, not a literal '-'
      {"Normal: heart; size (stable). Lungs [clear]! A-B ok", "normal heart size stable . lungs clear a-b ok .",
       "normal heart size stable . lungs clear a-b ok ."},
      {"No focal \"airspace\" disease/consolidation. It's fine.. ",
       "no focal airspace diseaseconsolidation . its fine .", "no focal airspace diseaseconsolidation . its fine ."},
      {"Trailing period. ", "trailing period .", "trailing period ."},
      // mimic folds newlines and double spaces, iu does not; the empty sentence is kept by both
      {"a__b____c\n\nd.  .  e", "abc\n\nd .  . e .", "abc d .  . e ."},
      {"Heart  size.. Lungs. . clear", "heart  size . lungs .  . clear .", "heart size . lungs .  . clear ."},
      // Python strip() treats 0x1C..0x1F as whitespace; strip happens before punctuation removal
      {"\x1c Heart \x1f. ( x ) .", "heart .  x   .", "heart .  x   ."},
      // UTF-8 passes through intact (no-break space and em space are not stripped mid-sentence)
      {"Caf\xc3\xa9 ok.\xc2\xa0Heart\xe2\x80\x83size.", "caf\xc3\xa9 ok\xc2\xa0heart\xe2\x80\x83size .",
       "caf\xc3\xa9 ok\xc2\xa0heart\xe2\x80\x83size ."},
      {"X 10. 5. y. 1. z", "x 10 . y . z .", "x 10 . y . z ."},
      {"", " .", " ."},
      // The number of chained replace() passes is observable: one pass turns n repeats into ceil(n/2).
      // mimic: 6 passes of '  ' take 64 spaces to 1 but leave 2 of 65; iu has none.
      {"a" + std::string(64, ' ') + "b", "a" + std::string(64, ' ') + "b .", "a b ."},
      {"a" + std::string(65, ' ') + "b", "a" + std::string(65, ' ') + "b .", "a  b ."},
      // '..' passes (iu 3, mimic 8) decide whether "1. " is then found and removed.
      {"x 1" + std::string(8, '.') + " y", "x y .", "x y ."},
      {"x 1" + std::string(9, '.') + " y", "x 1 . y .", "x y ."},
      {"x 1" + std::string(256, '.') + " y", "x 1 . y .", "x y ."},
      {"x 1" + std::string(257, '.') + " y", "x 1 . y .", "x 1 . y ."},
      // every printable ASCII character: lowercasing happens before removal, so A-Z survive as a-z
      {"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
       "#$-0123456789abcdefghijklmnopqrstuvwxyz`abcdefghijklmnopqrstuvwxyz|~ .",
       "#$-0123456789abcdefghijklmnopqrstuvwxyz`abcdefghijklmnopqrstuvwxyz|~ ."},
  };
  return cases;
}

TEST(TokenizerCleaning, IuXrayMatchesReferenceOnEdgeCases) {
  for (const CleanCase& c : clean_cases()) EXPECT_EQ(clean_report(c.input, CleaningRule::kIuXray), c.iu) << c.input;
}

TEST(TokenizerCleaning, MimicCxrMatchesReferenceOnEdgeCases) {
  for (const CleanCase& c : clean_cases()) {
    EXPECT_EQ(clean_report(c.input, CleaningRule::kMimicCxr), c.mimic) << c.input;
  }
}

// ---- Vocabulary --------------------------------------------------------------------------------------

TEST(TokenizerVocab, ThresholdIsInclusiveAndVocabSorted) {
  // Cleaned counts: "b" 3, "a" 2, "c" 1, "." 3 (one per report).
  const std::vector<std::string> reports = {"B a", "b c", "a B"};
  const Tokenizer t2 = Tokenizer::build(reports, CleaningRule::kIuXray, 2);
  EXPECT_EQ(t2.tokens(), (std::vector<std::string>{".", "<unk>", "a", "b"}));
  EXPECT_EQ(t2.id_of("."), 1);
  EXPECT_EQ(t2.id_of("b"), 4);
  const Tokenizer t3 = Tokenizer::build(reports, CleaningRule::kIuXray, 3);
  EXPECT_EQ(t3.tokens(), (std::vector<std::string>{".", "<unk>", "b"}));
  // An empty corpus still has <unk>.
  EXPECT_EQ(Tokenizer::build({}, CleaningRule::kIuXray, 1).tokens(), (std::vector<std::string>{"<unk>"}));
}

TEST(TokenizerVocab, SaveLoadRoundTrip) {
  const Tokenizer built = Tokenizer::build(train_reports(), CleaningRule::kIuXray, 3);
  const std::string path = temp_path("vocab.txt");
  built.save_vocab_file(path);

  // One token per line, line i is id i+1.
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  EXPECT_EQ(lines, built.tokens());

  const Tokenizer loaded = Tokenizer::from_vocab_file(path, CleaningRule::kMimicCxr);
  EXPECT_EQ(loaded.rule(), CleaningRule::kMimicCxr);  // the rule comes from the caller, not the file
  EXPECT_EQ(loaded.tokens(), built.tokens());
  EXPECT_EQ(loaded.vocab_size(), 760);
  for (const json& ex : expected_fixture().at("iu_xray_threshold3").at("examples")) {
    const auto report = ex.at("report").get<std::string>();
    EXPECT_EQ(loaded.encode(report), built.encode(report));
    EXPECT_EQ(loaded.encode(report), ex.at("ids").get<std::vector<int64_t>>());
  }
  std::remove(path.c_str());
}

TEST(TokenizerVocab, LoadRejectsDamagedFiles) {
  const std::string path = temp_path("bad_vocab.txt");
  write_file(path, ".\na\n");
  EXPECT_THROW(Tokenizer::from_vocab_file(path, CleaningRule::kIuXray), std::runtime_error);  // no <unk>
  write_file(path, ".\n\n<unk>\n");
  EXPECT_THROW(Tokenizer::from_vocab_file(path, CleaningRule::kIuXray), std::runtime_error);  // empty line
  write_file(path, ".\n<unk>\n.\n");
  EXPECT_THROW(Tokenizer::from_vocab_file(path, CleaningRule::kIuXray), std::runtime_error);  // duplicate
  write_file(path, ".\r\n<unk>\r\na\r\n");  // CRLF is tolerated
  const Tokenizer crlf = Tokenizer::from_vocab_file(path, CleaningRule::kIuXray);
  EXPECT_EQ(crlf.tokens(), (std::vector<std::string>{".", "<unk>", "a"}));
  std::remove(path.c_str());
  EXPECT_THROW(Tokenizer::from_vocab_file(path, CleaningRule::kIuXray), std::runtime_error);  // missing
}

// ---- Encode / decode ---------------------------------------------------------------------------------

TEST(TokenizerEncode, UnknownWordMapsToUnk) {
  const Tokenizer tok = Tokenizer::build(train_reports(), CleaningRule::kIuXray, 3);
  const auto& tokens = tok.tokens();
  const auto unk_pos = std::find(tokens.begin(), tokens.end(), "<unk>");
  ASSERT_NE(unk_pos, tokens.end());
  const int64_t unk = (unk_pos - tokens.begin()) + 1;
  EXPECT_EQ(tok.id_of("<unk>"), unk);
  EXPECT_EQ(tok.id_of("zzqxnotaword"), unk);
  ASSERT_NE(tok.id_of("heart"), unk);
  EXPECT_EQ(tokens.at(static_cast<size_t>(tok.id_of("heart") - 1)), "heart");
  EXPECT_EQ(tok.encode("Zzqxnotaword heart."),
            (std::vector<int64_t>{0, unk, tok.id_of("heart"), tok.id_of("."), 0}));
}

TEST(TokenizerEncode, SplitsOnPythonWhitespace) {
  // str.split() splits on U+00A0, U+2003 and 0x1C as well as ASCII spaces.
  const Tokenizer tok = Tokenizer::build({"ok heart size caf\xc3\xa9"}, CleaningRule::kIuXray, 1);
  const std::vector<int64_t> expected = {0, tok.id_of("caf\xc3\xa9"), tok.id_of("ok"), tok.id_of("heart"),
                                         tok.id_of("size"), tok.id_of("."), 0};
  EXPECT_EQ(tok.encode("Caf\xc3\xa9 ok\xc2\xa0Heart\xe2\x80\x83size\x1c."), expected);
  for (int64_t id : expected) EXPECT_NE(id, tok.id_of("<unk>"));
}

TEST(TokenizerDecode, StopsAtFirstZero) {
  const Tokenizer tok = Tokenizer::build({"a b c"}, CleaningRule::kIuXray, 1);
  ASSERT_EQ(tok.tokens(), (std::vector<std::string>{".", "<unk>", "a", "b", "c"}));
  EXPECT_EQ(tok.decode({3, 4, 0, 5}), "a b");
  EXPECT_EQ(tok.decode({3, 4, 5, 1}), "a b c .");
  EXPECT_EQ(tok.decode({0, 3, 4}), "");  // a leading bos ends decoding at once
  EXPECT_EQ(tok.decode({3, -1, 4}), "a");  // the reference tests idx > 0
  EXPECT_EQ(tok.decode({}), "");
  EXPECT_EQ(tok.decode(tok.encode("a b")), "");
  EXPECT_THROW(tok.decode({3, 6}), std::out_of_range);  // Python raises KeyError
  EXPECT_EQ(tok.decode({3, 0, 6}), "a");                // ...but only if it gets that far
}

}  // namespace
}  // namespace cmn::model
