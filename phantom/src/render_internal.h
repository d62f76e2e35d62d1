#pragma once
// What render.cc (the study: draw_study, render_study, film and detector) and render_views.cc (the frontal and
// lateral projections) share: densities, the canvas, the seeded uniform draw. Private to cmn_phantom.
#include <cmath>
#include <random>

#include <opencv2/core.hpp>

#include "cmn/phantom/phantom.h"

namespace cmn::phantom::render_detail {

inline constexpr double kPi = 3.14159265358979323846;
inline constexpr double kAir = 0.03;
inline constexpr double kSoft = 0.50;
inline constexpr double kLung = 0.14;
inline constexpr double kFluid = 0.56;
inline constexpr double kHeart = 0.70;
inline constexpr double kAbdomen = 0.60;

class Canvas {
 public:
  explicit Canvas(int size) : size_(size) {}
  int size() const { return size_; }
  int px(double f) const { return static_cast<int>(std::lround(f * size_)); }
  cv::Point at(double x, double y) const { return {px(x), px(y)}; }
  cv::Mat plane(double value = 0.0) const { return cv::Mat(size_, size_, CV_32F, cv::Scalar(value)); }
  cv::Mat mask() const { return cv::Mat::zeros(size_, size_, CV_8U); }

 private:
  int size_;
};

// Uniform in [a, b) from a seeded engine (std::uniform_real_distribution is not specified bit-for-bit across
// standard libraries; this is, so the same seed gives the same study everywhere).
inline double uniform(std::mt19937_64& rng, double a, double b) {
  return a + (b - a) * (static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0));
}

struct Frontal {
  cv::Mat image;
  cv::Mat heart_mask, thorax_mask;
};

// The views, drawn in render_views.cc: PA (ap = false) or AP (ap = true), and a lateral.
Frontal render_frontal(const StudySpec& spec, const Canvas& c, bool ap, std::mt19937_64& rng);
cv::Mat render_lateral(const StudySpec& spec, const Canvas& c, std::mt19937_64& rng);

}  // namespace cmn::phantom::render_detail
