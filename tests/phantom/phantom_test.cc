// Tests for cmn_phantom: determinism, that each finding changes the pixels where and how the header says, that
// the reports state exactly the study's findings (through the label extractor), and that the DICOM output is
// read back by cmn_preprocessing with the right views, modalities and grey levels.
#include "cmn/phantom/phantom.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "cmn/phantom/dataset.h"
#include "cmn/preprocessing/dicom.h"

namespace cmn::phantom {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path p = fs::path(::testing::TempDir()) / ("cmn_phantom_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p;
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Mean grey level of a rectangle given in fractions of the image.
double region_mean(const cv::Mat& image, double x0, double y0, double x1, double y1) {
  const int n = image.cols;
  const cv::Rect r(static_cast<int>(x0 * n), static_cast<int>(y0 * n), static_cast<int>((x1 - x0) * n),
                   static_cast<int>((y1 - y0) * n));
  return cv::mean(image(r))[0];
}
double region_max(const cv::Mat& image, double x0, double y0, double x1, double y1) {
  const int n = image.cols;
  const cv::Rect r(static_cast<int>(x0 * n), static_cast<int>(y0 * n), static_cast<int>((x1 - x0) * n),
                   static_cast<int>((y1 - y0) * n));
  double lo = 0, hi = 0;
  cv::minMaxLoc(image(r), &lo, &hi);
  return hi;
}

StudySpec with(StudySpec s, Finding f, bool present) {
  s.findings[static_cast<std::size_t>(f)] = present;
  if (f == Finding::kCardiomegaly) s.ctr = present ? 0.6 : 0.44;
  return s;
}

// A normal study with fixed anatomy, no tilt, for the before/after comparisons.
StudySpec baseline(uint64_t seed) {
  StudySpec s = draw_study(seed);
  s.findings.fill(false);
  s.ctr = 0.44;
  s.tilt_degrees = 0.0;
  return s;
}

TEST(PhantomGenerator, SameSeedSameBytesDifferentSeedDifferentBytes) {
  DatasetOptions o;
  o.studies = 5;
  o.seed = 42;
  o.dicom = true;
  o.render.size = 128;
  const fs::path a = temp_dir("det_a"), b = temp_dir("det_b"), c = temp_dir("det_c");
  write_dataset(a.string(), o);
  write_dataset(b.string(), o);
  o.seed = 43;
  write_dataset(c.string(), o);
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(a)) {
    if (!entry.is_regular_file()) continue;
    const fs::path rel = fs::relative(entry.path(), a);
    ASSERT_TRUE(fs::exists(b / rel)) << rel;
    EXPECT_EQ(slurp(entry.path()), slurp(b / rel)) << rel;
    ++files;
  }
  EXPECT_EQ(files, 5 * 4 * 2 + 2);  // PNG + DICOM per view, annotation.json, manifest.jsonl
  EXPECT_NE(slurp(a / "images/phantom_000000/0.png"), slurp(c / "images/phantom_000000/0.png"));
  EXPECT_NE(slurp(a / "annotation.json"), slurp(c / "annotation.json"));
  fs::remove_all(a);
  fs::remove_all(b);
  fs::remove_all(c);
}

TEST(PhantomGenerator, CardiothoracicRatioMeasuredOnTheRenderedHeart) {
  int enlarged = 0, normal = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const StudySpec s = draw_study(seed);
    const RenderedStudy r = render_study(s, {});
    // Measured on the PA masks, within a few pixels of the drawn ratio, and on the right side of 0.5.
    EXPECT_NEAR(r.measured_ctr, s.ctr, 0.02) << "seed " << seed;
    if (s.has(Finding::kCardiomegaly)) {
      EXPECT_GT(r.measured_ctr, 0.5) << "seed " << seed;
      ++enlarged;
    } else {
      EXPECT_LT(r.measured_ctr, 0.5) << "seed " << seed;
      ++normal;
    }
  }
  EXPECT_GT(enlarged, 3);
  EXPECT_GT(normal, 3);
  // The ratio helper itself, on hand-made masks: heart 30 px wide, thorax 60 px wide.
  cv::Mat heart = cv::Mat::zeros(10, 100, CV_8U), thorax = cv::Mat::zeros(10, 100, CV_8U);
  heart.row(5).colRange(40, 70).setTo(255);
  thorax.row(3).colRange(20, 80).setTo(255);
  EXPECT_DOUBLE_EQ(cardiothoracic_ratio(heart, thorax), 0.5);
}

TEST(PhantomGenerator, EffusionFillsTheCostophrenicAngle) {
  StudySpec s = baseline(7);
  s.effusion_side = Side::kRight;
  s.effusion_height = 0.06;
  const cv::Mat before = render_study(s).views[0].image;
  const cv::Mat after = render_study(with(s, Finding::kPleuralEffusion, true)).views[0].image;
  // Right costophrenic angle (image left, lateral lung base): lung (dark) becomes fluid (grey).
  const double cp_y = s.right_dome + 0.10 * std::pow((0.165 - 0.30) / 0.14, 2.0);
  const double b = region_mean(before, 0.175, cp_y - 0.05, 0.215, cp_y - 0.01);
  const double a = region_mean(after, 0.175, cp_y - 0.05, 0.215, cp_y - 0.01);
  EXPECT_GT(a - b, 40.0) << "before " << b << " after " << a;
  // The left base (no effusion there) is unchanged within noise.
  EXPECT_NEAR(region_mean(after, 0.785, cp_y - 0.05, 0.825, cp_y - 0.01),
              region_mean(before, 0.785, cp_y - 0.05, 0.825, cp_y - 0.01), 12.0);
}

TEST(PhantomGenerator, PneumothoraxRemovesLungMarkingsAtThePleuralLine) {
  StudySpec s = baseline(11);
  s.pneumothorax_side = Side::kLeft;
  s.pneumothorax_depth = 0.045;
  s.noise_sigma = 0.008;
  const cv::Mat before = render_study(s).views[0].image;
  const cv::Mat after = render_study(with(s, Finding::kPneumothorax, true)).views[0].image;
  // Left upper zone just inside the lateral chest wall (image right; the wall curves in toward the apex and
  // sits near x 0.81 at y 0.4): air without vessels replaces aerated lung, so it is darker.
  EXPECT_LT(region_mean(after, 0.775, 0.36, 0.80, 0.44), region_mean(before, 0.775, 0.36, 0.80, 0.44) - 8.0);
  // The opposite lung is untouched.
  EXPECT_NEAR(region_mean(after, 0.20, 0.36, 0.225, 0.44), region_mean(before, 0.20, 0.36, 0.225, 0.44), 8.0);
}

TEST(PhantomGenerator, ConsolidationAndGranulomaAreDenseWhereTheReportPutsThem) {
  StudySpec s = baseline(13);
  s.consolidation_zone = Zone::kRightLower;
  s.granuloma_zone = Zone::kLeftUpper;
  s.granuloma_x = 0.5;
  s.granuloma_y = 0.5;
  const RenderedStudy before = render_study(s);
  const RenderedStudy after = render_study(with(with(s, Finding::kConsolidation, true), Finding::kCalcifiedGranuloma, true));
  // Right lower zone (image left, frontal views) and posterior-inferior on the laterals.
  EXPECT_GT(region_mean(after.views[0].image, 0.23, 0.54, 0.31, 0.62), region_mean(before.views[0].image, 0.23, 0.54, 0.31, 0.62) + 40);
  EXPECT_GT(region_mean(after.views[1].image, 0.54, 0.56, 0.62, 0.64), region_mean(before.views[1].image, 0.54, 0.56, 0.62, 0.64) + 25);
  // A calcified granuloma is near-white on a dark lung: the brightest pixel of its zone.
  EXPECT_GT(region_max(after.views[0].image, 0.68, 0.31, 0.72, 0.35), 215);
  EXPECT_LT(region_max(before.views[0].image, 0.68, 0.31, 0.72, 0.35), 170);
}

TEST(PhantomGenerator, DegenerativeSpineGrowsAnteriorOsteophytesOnTheLateral) {
  StudySpec s = baseline(17);
  const RenderedStudy before = render_study(s);
  const RenderedStudy after = render_study(with(s, Finding::kDegenerativeSpine, true));
  // Just anterior to the vertebral bodies (x 0.662..0.68) of the left lateral view (slot 1), mid thorax.
  EXPECT_GT(region_mean(after.views[1].image, 0.662, 0.3, 0.68, 0.6), region_mean(before.views[1].image, 0.662, 0.3, 0.68, 0.6) + 4);
}

TEST(PhantomGenerator, TemplateReportsStateExactlyTheFindings) {
  std::set<std::string> distinct;
  for (uint64_t seed = 1; seed <= 400; ++seed) {
    const StudySpec s = draw_study(seed);
    const std::string report = write_report(s, seed);
    distinct.insert(report);
    const auto labels = metrics::extract_labels(report);
    for (int f = 0; f < kNumFindings; ++f) {
      const auto l = labels[static_cast<std::size_t>(f)];
      // Present findings are stated, absent ones are negated in words (never left unmentioned or uncertain).
      EXPECT_EQ(l, s.findings[static_cast<std::size_t>(f)] ? metrics::Label::kPositive : metrics::Label::kNegative)
          << metrics::finding_name(static_cast<Finding>(f)) << " in: " << report;
    }
  }
  EXPECT_GT(distinct.size(), 300u);  // the wording varies
}

TEST(PhantomGenerator, RealSentencesFromIuXrayMatchTheFindings) {
  const std::string path = std::string(CMN_SHARED_DIR) + "/data/iu_xray/annotation.json";
  if (!fs::exists(path)) GTEST_SKIP() << path << " not present";
  const SentenceBank bank = SentenceBank::from_annotation(path);
  // IU X-Ray states every finding when present; it rarely negates a granuloma or spine degeneration in a
  // sentence of its own, so those negatives may fall back to the templates.
  for (int f = 0; f < kNumFindings; ++f) {
    EXPECT_FALSE(bank.sentences(static_cast<Finding>(f), true).empty()) << bank.summary();
  }
  ReportOptions o;
  o.bank = &bank;
  for (uint64_t seed = 1; seed <= 50; ++seed) {
    const StudySpec s = draw_study(seed);
    const std::string report = write_report(s, seed, o);
    const auto labels = metrics::extract_labels(report);
    for (int f = 0; f < kNumFindings; ++f) {
      EXPECT_EQ(metrics::is_positive(labels[static_cast<std::size_t>(f)]), s.findings[static_cast<std::size_t>(f)])
          << metrics::finding_name(static_cast<Finding>(f)) << " in: " << report;
    }
  }
  EXPECT_THROW(SentenceBank::from_annotation("/nonexistent/annotation.json"), std::runtime_error);
}

TEST(PhantomGenerator, DicomStudiesReadBackWithViewsModalitiesAndGreyLevels) {
  DatasetOptions o;
  o.studies = 5;
  o.seed = 5;
  o.dicom = true;
  o.render.size = 96;
  const fs::path dir = temp_dir("dicom");
  write_dataset(dir.string(), o);
  std::set<std::string> syntaxes, photometrics, modalities;
  std::ifstream manifest(dir / "manifest.jsonl");
  std::string line;
  int views = 0;
  while (std::getline(manifest, line)) {
    const auto m = nlohmann::json::parse(line);
    // The study's instances fill a 4-view model's slots in file order: k.dcm in slot k, the order of the PNGs
    // in annotation.json, so a model trained on the PNGs sees the same slots when it is given the DICOM study.
    std::vector<preprocessing::InstanceInfo> infos;
    for (int v = 0; v < kViews; ++v) {
      const std::string path = (dir / m["views"][v]["dicom"].get<std::string>()).string();
      auto info = preprocessing::read_dicom_info(slurp(path), path);
      ASSERT_TRUE(info.ok()) << info.status();
      infos.push_back(*info);
    }
    std::reverse(infos.begin(), infos.end());  // the order files are listed in must not matter
    auto selection = preprocessing::select_views(infos, {});
    ASSERT_TRUE(selection.ok()) << selection.status();
    for (int v = 0; v < kViews; ++v) {
      EXPECT_EQ(selection->slots[static_cast<std::size_t>(v)].instance.source,
                (dir / m["views"][v]["dicom"].get<std::string>()).string())
          << selection->slots[static_cast<std::size_t>(v)].reason;
    }
    for (int v = 0; v < kViews; ++v) {
      const auto& view = m["views"][v];
      auto image = preprocessing::read_dicom_file((dir / view["dicom"].get<std::string>()).string());
      ASSERT_TRUE(image.ok()) << image.status();
      const std::string expected_view = v == 0 ? "PA" : v == 2 ? "AP" : "LATERAL";
      EXPECT_EQ(preprocessing::view_name(image->info.view), expected_view) << image->info.view_evidence;
      EXPECT_EQ(image->info.modality, view["modality"].get<std::string>());
      EXPECT_EQ(image->info.study_instance_uid, m["study_instance_uid"].get<std::string>());
      // Window 2048/4096 over 16 g + 8 gives back g within one level; MONOCHROME1 is inverted back.
      const cv::Mat png = cv::imread((dir / view["png"].get<std::string>()).string(), cv::IMREAD_GRAYSCALE);
      ASSERT_EQ(png.size(), image->grey8.size());
      cv::Mat diff;
      cv::absdiff(png, image->grey8, diff);
      double lo = 0, hi = 0;
      cv::minMaxLoc(diff, &lo, &hi);
      EXPECT_LE(hi, 1.0) << view.dump();
      syntaxes.insert(view["transfer_syntax"].get<std::string>());
      photometrics.insert(view["photometric"].get<std::string>());
      modalities.insert(view["modality"].get<std::string>());
      ++views;
    }
  }
  EXPECT_EQ(views, 20);
  EXPECT_EQ(syntaxes.size(), 5u);
  EXPECT_EQ(photometrics.size(), 2u);
  EXPECT_EQ(modalities.size(), 2u);
  // annotation.json: R2Gen format, split by index.
  const auto ann = nlohmann::json::parse(slurp(dir / "annotation.json"));
  EXPECT_EQ(ann["train"].size() + ann["val"].size() + ann["test"].size(), 5u);
  EXPECT_EQ(ann["train"][0]["image_path"].size(), 4u);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace cmn::phantom
