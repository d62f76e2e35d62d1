// Rendering of the phantom views. Drawing happens in fractions of the image size on float canvases
// (0 = air, 1 = bone/calcium; attenuation, MONOCHROME2 sense), with explicit masks for the anatomy that the
// findings modify, so each finding is a change of the anatomy (fluid replaces lung below a meniscus, air replaces
// lung outside a pleural line) rather than a sticker on top of it.
// This file: the study (draw_study), the film and detector, and render_study; the views are drawn in
// render_views.cc.
#include <algorithm>
#include <cmath>
#include <random>

#include <opencv2/imgproc.hpp>

#include "cmn/phantom/phantom.h"
#include "render_internal.h"

namespace cmn::phantom {
namespace {

using render_detail::Canvas;
using render_detail::Frontal;
using render_detail::kAir;
using render_detail::kPi;
using render_detail::render_frontal;
using render_detail::render_lateral;
using render_detail::uniform;

// Film and detector: rotation, exposure (gain around mid-grey, gamma), heel effect, blur, quantum noise.
cv::Mat finish(cv::Mat img, const StudySpec& spec, double exposure_jitter, std::mt19937_64& rng) {
  const int n = img.rows;
  const cv::Mat rot = cv::getRotationMatrix2D(cv::Point2f(n / 2.0f, n / 2.0f), spec.tilt_degrees, 1.0);
  cv::warpAffine(img, img, rot, img.size(), cv::INTER_LINEAR, cv::BORDER_CONSTANT, cv::Scalar(kAir));
  cv::GaussianBlur(img, img, cv::Size(0, 0), std::max(0.5, n * 0.0025));
  const double gain = spec.gain * exposure_jitter;
  img = (img - 0.4) * gain + 0.4;
  for (int y = 0; y < n; ++y) img.row(y) *= 1.0 - 0.07 * y / n;  // anode heel
  cv::max(img, 0.0, img);
  cv::pow(img, spec.gamma, img);
  cv::Mat noise(img.size(), CV_32F);
  // Noise from the engine (cv::RNG's fill would be deterministic too, but one engine keeps one seed stream).
  for (int y = 0; y < n; ++y) {
    float* row = noise.ptr<float>(y);
    for (int x = 0; x < n; ++x) {
      // Box-Muller on two engine draws.
      const double u1 = std::max(1e-12, uniform(rng, 0, 1)), u2 = uniform(rng, 0, 1);
      row[x] = static_cast<float>(spec.noise_sigma * std::sqrt(-2.0 * std::log(u1)) * std::cos(2 * kPi * u2));
    }
  }
  img += noise;
  cv::Mat out;
  img.convertTo(out, CV_8U, 255.0);  // saturates outside [0, 1]
  return out;
}

}  // namespace

const char* view_position(int view) {
  static const char* kNames[kViews] = {"PA", "LL", "AP", "RL"};
  return view >= 0 && view < kViews ? kNames[view] : "";
}

const char* side_name(Side s) {
  switch (s) {
    case Side::kRight: return "right";
    case Side::kLeft: return "left";
    case Side::kBilateral: return "bilateral";
  }
  return "?";
}

const char* zone_name(Zone z) {
  switch (z) {
    case Zone::kRightUpper: return "right upper lobe";
    case Zone::kRightLower: return "right lower lobe";
    case Zone::kLeftUpper: return "left upper lobe";
    case Zone::kLeftLower: return "left lower lobe";
  }
  return "?";
}

bool StudySpec::normal() const {
  return std::none_of(findings.begin(), findings.end(), [](bool b) { return b; });
}

StudySpec draw_study(uint64_t seed, const DrawOptions& o) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL);
  StudySpec s;
  s.seed = seed;
  if (uniform(rng, 0, 1) >= o.normal_fraction) {
    bool any = false;
    while (!any) {  // abnormal: at least one finding
      for (auto& f : s.findings) {
        f = uniform(rng, 0, 1) < o.prevalence;
        any = any || f;
      }
    }
  }
  s.ctr = s.has(Finding::kCardiomegaly) ? uniform(rng, 0.55, 0.66) : uniform(rng, 0.38, 0.47);
  s.effusion_side = static_cast<Side>(std::min(2, static_cast<int>(uniform(rng, 0, 3))));
  s.effusion_height = uniform(rng, 0.03, 0.12);
  s.pneumothorax_side = static_cast<Side>(std::min(1, static_cast<int>(uniform(rng, 0, 2))));
  s.pneumothorax_depth = uniform(rng, 0.025, 0.05);
  s.consolidation_zone = static_cast<Zone>(std::min(3, static_cast<int>(uniform(rng, 0, 4))));
  s.granuloma_zone = static_cast<Zone>(std::min(3, static_cast<int>(uniform(rng, 0, 4))));
  s.granuloma_x = uniform(rng, 0, 1);
  s.granuloma_y = uniform(rng, 0, 1);
  s.lung_height = uniform(rng, 0.25, 0.29);
  s.right_dome = uniform(rng, 0.66, 0.70);
  s.left_dome = s.right_dome + uniform(rng, 0.005, 0.03);
  s.rib_spacing = uniform(rng, 0.052, 0.06);
  s.tilt_degrees = uniform(rng, -2.5, 2.5);
  s.gain = uniform(rng, 0.85, 1.15);
  s.gamma = uniform(rng, 0.85, 1.2);
  s.noise_sigma = uniform(rng, 0.008, 0.025);
  return s;
}

double cardiothoracic_ratio(const cv::Mat& heart, const cv::Mat& thorax) {
  auto widest = [](const cv::Mat& m) {
    int best = 0;
    for (int y = 0; y < m.rows; ++y) {
      const uchar* row = m.ptr<uchar>(y);
      int first = -1, last = -1;
      for (int x = 0; x < m.cols; ++x) {
        if (row[x]) {
          if (first < 0) first = x;
          last = x;
        }
      }
      if (first >= 0) best = std::max(best, last - first + 1);
    }
    return best;
  };
  const int t = widest(thorax);
  return t == 0 ? 0.0 : static_cast<double>(widest(heart)) / t;
}

RenderedStudy render_study(const StudySpec& spec, const RenderOptions& options) {
  const Canvas c(options.size);
  std::mt19937_64 rng(spec.seed ^ 0xC0FFEE1234ULL);
  RenderedStudy out;
  Frontal pa = render_frontal(spec, c, /*ap=*/false, rng);
  out.heart_mask = pa.heart_mask;
  out.thorax_mask = pa.thorax_mask;
  out.measured_ctr = cardiothoracic_ratio(pa.heart_mask, pa.thorax_mask);
  out.views[0] = {finish(pa.image, spec, 1.0, rng), view_position(0)};
  // Drawn in the order PA, AP, LL, RL (the random stream follows it), stored in slot order PA, LL, AP, RL.
  Frontal ap = render_frontal(spec, c, /*ap=*/true, rng);
  out.views[2] = {finish(ap.image, spec, uniform(rng, 0.9, 1.1), rng), view_position(2)};
  cv::Mat ll = render_lateral(spec, c, rng);
  out.views[1] = {finish(ll, spec, uniform(rng, 0.9, 1.1), rng), view_position(1)};
  cv::Mat rl = render_lateral(spec, c, rng);
  cv::flip(rl, rl, 1);
  out.views[3] = {finish(rl, spec, uniform(rng, 0.9, 1.1), rng), view_position(3)};
  return out;
}

}  // namespace cmn::phantom
