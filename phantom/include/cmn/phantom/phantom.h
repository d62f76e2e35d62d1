#pragma once
// Procedural 4-view chest radiograph phantoms with known findings, and reports that state them (issue 8).
//
// A study is drawn from a seed (StudySpec), rendered into four views (PA, left lateral, AP, right lateral: the
// order cmn's DICOM view selection fills a 4-view model's slots with them), and described by a findings-section report
// built from the project's own sentence templates, or from real report sentences picked by the label
// extractor (cmn/metrics/labels.h). Everything is a function of the seed: same seed, same pixels, same words.
//
// How each finding changes the pixels (as a radiologist would describe it):
//   cardiomegaly         heart shadow widened so the cardiothoracic ratio (widest heart / widest inner thorax,
//                        on the PA view) is 0.55-0.66; otherwise 0.38-0.47
//   pleural effusion     fluid density fills the lung base up to a meniscus that climbs the lateral chest wall,
//                        blunting the costophrenic angle (frontal); the posterior sulcus fills (lateral)
//   pneumothorax         a thin bright visceral pleural line parallel to the chest wall, with no lung markings
//                        (vessels) and darker air between it and the wall, apex and lateral upper zone
//   consolidation        a dense ill-defined opacity over one lobe with air bronchograms, on both projections
//   calcified granuloma  a small sharply marginated very dense nodule
//   degenerative spine   anterior osteophytes and narrowed disc spaces on the lateral views, endplate spurs on
//                        the frontal views
// Every study also varies in anatomy (lung height, diaphragm, rib spacing, rotation), exposure (gain, gamma,
// heel effect) and noise, so no finding is a fixed pixel pattern.
#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "cmn/metrics/labels.h"

namespace cmn::phantom {

using metrics::Finding;
using metrics::kNumFindings;

constexpr int kViews = 4;
// DICOM View Position (0018,5101) of each view slot.
const char* view_position(int view);  // "PA", "LL", "AP", "RL"

enum class Side : int { kRight = 0, kLeft = 1, kBilateral = 2 };  // patient's side
const char* side_name(Side side);                                  // "right", "left", "bilateral"

// Lobar site of a consolidation or granuloma.
enum class Zone : int { kRightUpper = 0, kRightLower = 1, kLeftUpper = 2, kLeftLower = 3 };
const char* zone_name(Zone zone);  // "right upper lobe", ...

struct StudySpec {
  uint64_t seed = 0;
  std::array<bool, kNumFindings> findings{};  // indexed by metrics::Finding
  // Severity and place, meaningful only when the finding is present.
  double ctr = 0.44;            // cardiothoracic ratio target (> 0.5 iff cardiomegaly)
  Side effusion_side = Side::kRight;
  double effusion_height = 0.1;  // fluid depth, fraction of the image
  Side pneumothorax_side = Side::kRight;
  double pneumothorax_depth = 0.03;  // pleural separation at the lateral wall, fraction of the image
  Zone consolidation_zone = Zone::kRightLower;
  Zone granuloma_zone = Zone::kRightUpper;
  double granuloma_x = 0.5, granuloma_y = 0.5;  // position inside its zone, 0..1
  // Anatomy and exposure.
  double lung_height = 0.27;
  double right_dome = 0.68;      // y of the right hemidiaphragm apex, fraction of the image
  double left_dome = 0.70;
  double rib_spacing = 0.055;
  double tilt_degrees = 0.0;
  double gain = 1.0;             // exposure: scales attenuation contrast
  double gamma = 1.0;            // detector response
  double noise_sigma = 0.015;
  bool has(Finding f) const { return findings[static_cast<std::size_t>(f)]; }
  bool normal() const;
};

struct DrawOptions {
  double prevalence = 0.3;      // each finding independently, given that the study is abnormal
  double normal_fraction = 0.25;  // studies with no finding at all
};
StudySpec draw_study(uint64_t seed, const DrawOptions& options = {});

struct RenderOptions {
  int size = 256;  // width = height of every view, pixels (the model resizes to 224x224)
};

struct RenderedView {
  cv::Mat image;        // CV_8UC1, 0 = air (black), MONOCHROME2 sense
  std::string view_position;
};

struct RenderedStudy {
  std::array<RenderedView, kViews> views;
  // Geometry of the PA view, measured on the rendered masks (before blur and noise), for tests.
  cv::Mat heart_mask;   // CV_8UC1 255 inside the heart shadow (PA)
  cv::Mat thorax_mask;  // CV_8UC1 255 inside the inner thoracic cage (PA)
  double measured_ctr = 0.0;  // widest heart row run / widest thorax row run
};
RenderedStudy render_study(const StudySpec& spec, const RenderOptions& options = {});

// Cardiothoracic ratio from masks: max horizontal extent of `heart` over that of `thorax` (CV_8UC1 masks).
double cardiothoracic_ratio(const cv::Mat& heart, const cv::Mat& thorax);

// ---- reports -------------------------------------------------------------------------------------------------

// Real report sentences, bucketed by the one finding they speak of and its label, from an R2Gen annotation.json
// (its train split only, so test reports never leak into generated text).
class SentenceBank {
 public:
  // Reads the train split of `annotation_json`; a sentence enters a bucket when the label extractor finds
  // exactly one finding in it, positive or negative (uncertain ones are left out). Throws std::runtime_error
  // naming the file when it cannot be read or is not an R2Gen annotation.
  static SentenceBank from_annotation(const std::string& annotation_json);
  const std::vector<std::string>& sentences(Finding finding, bool positive) const;
  // Whether every finding has at least one positive and one negative sentence.
  bool complete() const;
  std::string summary() const;  // counts per bucket, for logs

 private:
  std::array<std::array<std::vector<std::string>, 2>, kNumFindings> buckets_;
};

struct ReportOptions {
  const SentenceBank* bank = nullptr;  // null: the project's templates
};
// A findings-section report: one statement per finding, present ones first in a radiologist's order, absent
// ones negated (sometimes grouped: "no pleural effusion or pneumothorax"). Wording varies with `seed`.
std::string write_report(const StudySpec& spec, uint64_t seed, const ReportOptions& options = {});

}  // namespace cmn::phantom
