// The views as projections of one drawn anatomy: PA/AP frontal and lateral, with the lung outline, vessels
// and diaphragm, and the findings drawn as changes of that anatomy (fluid, air, consolidation, granuloma, spine).
#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "cmn/phantom/phantom.h"
#include "render_internal.h"

namespace cmn::phantom::render_detail {
namespace {

// Thorax geometry of the frontal views (fractions of the image): the inner lateral walls at kWallX and
// 1 - kWallX, so the inner thoracic width is 1 - 2 kWallX.
constexpr double kWallX = 0.165;
constexpr double kMedialX = 0.445;
constexpr double kApexY = 0.17;

// Lung outline on the frontal view for one side (image left = patient right). `mirror` flips x about 0.5.
// Lateral wall: a quarter ellipse from the apex down to the costophrenic angle, which it meets at a sharp angle
// with the dome, as a normal lung does; base: the hemidiaphragm dome; medial border: the mediastinum.
std::vector<cv::Point> lung_outline(const Canvas& c, double dome_apex, bool mirror) {
  auto X = [&](double x) { return mirror ? 1.0 - x : x; };
  auto dome = [&](double x) { return dome_apex + 0.10 * std::pow((x - 0.30) / 0.14, 2.0); };
  const double cp_y = dome(kWallX);
  const double apex_x = 0.30;
  std::vector<cv::Point> pts;
  for (int i = 0; i <= 24; ++i) {  // apex -> costophrenic angle along the lateral wall
    const double t = (kPi / 2) * i / 24.0;
    pts.push_back(c.at(X(apex_x - (apex_x - kWallX) * std::sin(t)), cp_y - (cp_y - kApexY) * std::cos(t)));
  }
  for (int i = 1; i <= 16; ++i) {  // along the dome to the cardiophrenic angle
    const double x = kWallX + (kMedialX - kWallX) * i / 16.0;
    pts.push_back(c.at(X(x), dome(x)));
  }
  pts.push_back(c.at(X(kMedialX), 0.26));  // medial border up the mediastinum
  pts.push_back(c.at(X(0.40), 0.19));
  return pts;
}

double dome_y(double dome_apex, double x_unmirrored) { return dome_apex + 0.10 * std::pow((x_unmirrored - 0.30) / 0.14, 2.0); }

// Branching vessels from the hilum outward: the "lung markings" a pneumothorax lacks.
void draw_vessels(const Canvas& c, cv::Mat& layer, double hilum_x, double hilum_y, double dir, std::mt19937_64& rng) {
  struct Twig {
    double x, y, angle, width;
    int steps;
  };
  std::vector<Twig> stack;
  for (int i = 0; i < 7; ++i) {
    const double a = uniform(rng, -1.3, 1.4);  // radians from horizontal, toward the lateral side
    stack.push_back({hilum_x, hilum_y, a, 2.2, 9});
  }
  const double step = 0.018;
  while (!stack.empty()) {
    Twig t = stack.back();
    stack.pop_back();
    for (int s = 0; s < t.steps; ++s) {
      const double nx = t.x + dir * step * std::cos(t.angle);
      const double ny = t.y - step * std::sin(t.angle);
      cv::line(layer, c.at(t.x, t.y), c.at(nx, ny), cv::Scalar(1.0), std::max(1, static_cast<int>(std::lround(t.width))),
               cv::LINE_AA);
      t.x = nx;
      t.y = ny;
      t.angle += uniform(rng, -0.25, 0.25);
      t.width = std::max(1.0, t.width * 0.93);
      if (s > 2 && t.steps - s > 3 && uniform(rng, 0, 1) < 0.22) {
        stack.push_back({t.x, t.y, t.angle + uniform(rng, -0.7, 0.7), t.width * 0.8, (t.steps - s) - 1});
      }
    }
  }
}

// Zone centre on the frontal view and (x, y) on the lateral view (anterior = image left).
cv::Point2d zone_frontal(Zone z) {
  switch (z) {
    case Zone::kRightUpper: return {0.30, 0.33};
    case Zone::kRightLower: return {0.27, 0.58};
    case Zone::kLeftUpper: return {0.70, 0.33};
    default: return {0.73, 0.58};
  }
}
cv::Point2d zone_lateral(Zone z) {
  const bool upper = z == Zone::kRightUpper || z == Zone::kLeftUpper;
  return upper ? cv::Point2d{0.47, 0.33} : cv::Point2d{0.58, 0.60};
}

// A lobar consolidation: a few overlapping soft blobs, with darker branching air bronchograms inside.
void draw_consolidation(const Canvas& c, cv::Mat& img, const cv::Mat& lung, cv::Point2d centre, std::mt19937_64& rng) {
  cv::Mat blob = c.plane();
  for (int i = 0; i < 4; ++i) {
    const double x = centre.x + uniform(rng, -0.035, 0.035), y = centre.y + uniform(rng, -0.035, 0.035);
    cv::ellipse(blob, c.at(x, y), cv::Size(std::max(2, c.px(uniform(rng, 0.045, 0.07))), std::max(2, c.px(uniform(rng, 0.04, 0.06)))),
                uniform(rng, 0, 180), 0, 360, cv::Scalar(1.0), cv::FILLED, cv::LINE_AA);
  }
  cv::GaussianBlur(blob, blob, cv::Size(0, 0), std::max(1.0, c.size() * 0.012));
  cv::Mat bronchi = c.plane();
  for (int i = 0; i < 3; ++i) {
    double x = centre.x, y = centre.y, a = uniform(rng, 0, 2 * kPi);
    for (int s = 0; s < 4; ++s) {
      const double nx = x + 0.014 * std::cos(a), ny = y + 0.014 * std::sin(a);
      cv::line(bronchi, c.at(x, y), c.at(nx, ny), cv::Scalar(1.0), 1, cv::LINE_AA);
      x = nx;
      y = ny;
      a += uniform(rng, -0.3, 0.3);
    }
  }
  cv::Mat lungf;
  lung.convertTo(lungf, CV_32F, 1.0 / 255.0);
  cv::GaussianBlur(lungf, lungf, cv::Size(0, 0), std::max(0.7, c.size() * 0.004));
  cv::Mat opacity = blob.mul(lungf);                       // only where there is lung
  img = img.mul(1.0 - opacity) + opacity * (kFluid + 0.04);  // airspace filled with fluid-dense material
  img -= 0.16 * bronchi.mul(opacity);                      // air bronchograms stay dark inside it
}

void draw_granuloma(const Canvas& c, cv::Mat& img, cv::Point2d at) {
  const int r = std::max(2, c.px(0.010));
  cv::circle(img, c.at(at.x, at.y), r, cv::Scalar(1.0), cv::FILLED, cv::LINE_AA);
}

}  // namespace

// PA (ap = false) or AP (ap = true). AP: the heart is magnified (it sits farther from the detector) and the
// clavicles project higher.
Frontal render_frontal(const StudySpec& spec, const Canvas& c, bool ap, std::mt19937_64& rng) {
  Frontal out;
  cv::Mat img = c.plane(kAir);
  // body: neck, shoulders, trunk
  cv::Mat body = c.mask();
  cv::rectangle(body, c.at(0.41, 0.0), c.at(0.59, 0.2), cv::Scalar(255), cv::FILLED);
  cv::ellipse(body, c.at(0.5, 0.3), cv::Size(c.px(0.47), c.px(0.2)), 0, 0, 360, cv::Scalar(255), cv::FILLED);
  cv::ellipse(body, c.at(0.5, 0.6), cv::Size(c.px(0.45), c.px(0.5)), 0, 0, 360, cv::Scalar(255), cv::FILLED);
  img.setTo(kSoft, body);

  // lungs
  std::array<cv::Mat, 2> lung = {c.mask(), c.mask()};  // [0] patient right (image left), [1] patient left
  const double domes[2] = {spec.right_dome, spec.left_dome};
  for (int s = 0; s < 2; ++s) {
    std::vector<std::vector<cv::Point>> poly = {lung_outline(c, domes[s], s == 1)};
    cv::fillPoly(lung[s], poly, cv::Scalar(255), cv::LINE_8);
  }
  cv::Mat lungs = lung[0] | lung[1];
  out.thorax_mask = lungs.clone();
  // The inner thorax spans wall to wall at every lung row: fill between the lungs (the mediastinum).
  for (int y = 0; y < c.size(); ++y) {
    const uchar* row = lungs.ptr<uchar>(y);
    int first = -1, last = -1;
    for (int x = 0; x < c.size(); ++x) {
      if (row[x]) {
        if (first < 0) first = x;
        last = x;
      }
    }
    if (first >= 0) out.thorax_mask.row(y).colRange(first, last + 1).setTo(255);
  }

  // pneumothorax: the lung has fallen away from the apex and the lateral wall; the gap is air without vessels
  std::array<cv::Mat, 2> aerated = {lung[0].clone(), lung[1].clone()};
  cv::Mat ptx_air = c.mask();
  cv::Mat pleural_line = c.mask();
  if (spec.has(Finding::kPneumothorax)) {
    for (int s = 0; s < 2; ++s) {
      const bool affected = spec.pneumothorax_side == Side::kBilateral || static_cast<int>(spec.pneumothorax_side) == s;
      if (!affected) continue;
      const int d = std::max(3, c.px(spec.pneumothorax_depth));
      cv::Mat shrunk;
      cv::erode(lung[s], shrunk, cv::getStructuringElement(cv::MORPH_ELLIPSE, cv::Size(2 * d + 1, 2 * d + 1)));
      // only the upper two thirds and the lateral side: the lung stays attached at the base and the hilum
      cv::Mat region = c.mask();
      const double lateral_x0 = s == 0 ? 0.0 : 0.5 + 0.05, lateral_x1 = s == 0 ? 0.5 - 0.05 : 1.0;
      cv::rectangle(region, c.at(lateral_x0, 0.0), c.at(lateral_x1, 0.55), cv::Scalar(255), cv::FILLED);
      cv::Mat gap = lung[s] & ~shrunk & region;
      ptx_air |= gap;
      aerated[s] = lung[s] & ~gap;
      cv::Mat inner_edge;
      cv::dilate(gap, inner_edge, cv::getStructuringElement(cv::MORPH_RECT, cv::Size(3, 3)));
      pleural_line |= inner_edge & aerated[s];
    }
  }

  // effusion: fluid replaces lung below a meniscus that rises toward the lateral wall
  cv::Mat fluid = c.mask();
  if (spec.has(Finding::kPleuralEffusion)) {
    for (int s = 0; s < 2; ++s) {
      const bool affected = spec.effusion_side == Side::kBilateral || static_cast<int>(spec.effusion_side) == s;
      if (!affected) continue;
      const double cp_y = dome_y(domes[s], kWallX);
      for (int y = 0; y < c.size(); ++y) {
        for (int x = 0; x < c.size(); ++x) {
          if (!lung[s].at<uchar>(y, x)) continue;
          const double fx = (x + 0.5) / c.size(), fy = (y + 0.5) / c.size();
          const double from_wall = s == 0 ? fx - kWallX : (1.0 - kWallX) - fx;  // distance from the lateral wall
          const double level = cp_y - spec.effusion_height - 0.07 * std::exp(-std::max(0.0, from_wall) / 0.045);
          if (fy > level) fluid.at<uchar>(y, x) = 255;
        }
      }
    }
  }

  // lung fields with their markings
  cv::Mat vessels = c.plane();
  draw_vessels(c, vessels, 0.43, 0.45, -1.0, rng);
  draw_vessels(c, vessels, 0.57, 0.46, 1.0, rng);
  cv::Mat lungs_aerated = aerated[0] | aerated[1];
  img.setTo(kLung, lungs);
  cv::Mat marking = c.plane();
  vessels.copyTo(marking, lungs_aerated & ~fluid);
  img += 0.13 * marking;
  img.setTo(kAir + 0.03, ptx_air);
  img.setTo(kSoft * 0.7, pleural_line);  // the visceral pleura, a thin white line

  // mediastinum, aortic knob, heart (the heart's widest extent sets the cardiothoracic ratio)
  cv::rectangle(img, c.at(kMedialX, 0.14), c.at(1.0 - kMedialX, 0.62), cv::Scalar(0.66), cv::FILLED);
  cv::ellipse(img, c.at(0.565, 0.30), cv::Size(c.px(0.04), c.px(0.033)), 0, 0, 360, cv::Scalar(0.66), cv::FILLED);
  const double thorax_width = 1.0 - 2 * kWallX;
  const double half_width = spec.ctr * thorax_width / 2.0 * (ap ? 1.12 : 1.0);
  const double half_height = 0.10 + 0.25 * (half_width - 0.14);
  const double heart_cx = 0.5 + 0.3 * half_width, heart_cy = std::min(spec.right_dome, spec.left_dome) - 0.05;
  out.heart_mask = c.mask();
  cv::ellipse(out.heart_mask, c.at(heart_cx, heart_cy), cv::Size(c.px(half_width), c.px(half_height)), 0, 0, 360,
              cv::Scalar(255), cv::FILLED);
  img.setTo(kHeart, out.heart_mask);

  // pleural fluid over the base (drawn after the heart: a left effusion hides the left heart border's base)
  img.setTo(kFluid, fluid);

  // abdomen below the domes
  cv::Mat abdomen = c.mask();
  std::vector<cv::Point> belly;
  for (int i = 0; i <= 40; ++i) {
    const double x = i / 40.0;
    const double xr = x < 0.5 ? x : 1.0 - x;
    belly.push_back(c.at(x, dome_y(x < 0.5 ? spec.right_dome : spec.left_dome, std::max(xr, 0.0)) + 0.005));
  }
  belly.push_back(c.at(1.0, 1.0));
  belly.push_back(c.at(0.0, 1.0));
  cv::fillPoly(abdomen, std::vector<std::vector<cv::Point>>{belly}, cv::Scalar(255));
  img.setTo(kAbdomen, abdomen & ~fluid);
  // gastric bubble under the left dome
  cv::ellipse(img, c.at(0.66, spec.left_dome + 0.06), cv::Size(c.px(0.04), c.px(0.025)), 0, 0, 360, cv::Scalar(0.25),
              cv::FILLED);

  // trachea
  cv::rectangle(img, c.at(0.488, 0.0), c.at(0.512, 0.27), cv::Scalar(0.32), cv::FILLED);

  // findings inside the lungs
  if (spec.has(Finding::kConsolidation)) draw_consolidation(c, img, lungs_aerated, zone_frontal(spec.consolidation_zone), rng);
  // bones: posterior ribs, clavicles, spine
  cv::Mat bone = c.plane();
  for (int i = 0; i < 10; ++i) {
    const double y = 0.19 + i * spec.rib_spacing;
    const double ax = 0.2 + 0.012 * i, ay = 0.07 + 0.004 * i;
    const int t = std::max(1, c.px(0.011));
    cv::ellipse(bone, c.at(0.49, y + ay), cv::Size(c.px(ax), c.px(ay)), 8, 180, 275, cv::Scalar(1.0), t);
    cv::ellipse(bone, c.at(0.51, y + ay), cv::Size(c.px(ax), c.px(ay)), -8, 265, 360, cv::Scalar(1.0), t);
  }
  const double clav_y = ap ? 0.13 : 0.17;
  const int ct = std::max(1, c.px(0.015));
  cv::ellipse(bone, c.at(0.33, clav_y + 0.07), cv::Size(c.px(0.15), c.px(0.07)), 0, 200, 320, cv::Scalar(1.0), ct);
  cv::ellipse(bone, c.at(0.67, clav_y + 0.07), cv::Size(c.px(0.15), c.px(0.07)), 0, 220, 340, cv::Scalar(1.0), ct);
  cv::Mat spine = c.plane();
  cv::rectangle(spine, c.at(0.47, 0.0), c.at(0.53, 1.0), cv::Scalar(1.0), cv::FILLED);
  const bool degenerative = spec.has(Finding::kDegenerativeSpine);
  for (double y = 0.03; y < 1.0; y += 0.036) {
    cv::line(spine, c.at(0.47, y), c.at(0.53, y), cv::Scalar(degenerative ? 0.6 : 0.0), std::max(1, c.px(degenerative ? 0.003 : 0.006)));
    if (degenerative) {  // marginal osteophytes: spurs off the endplates, both sides
      for (int side = -1; side <= 1; side += 2) {
        const double x0 = 0.5 + side * 0.03;
        std::vector<cv::Point> spur = {c.at(x0, y - 0.008), c.at(x0 + side * 0.017, y + 0.002), c.at(x0, y + 0.008)};
        cv::fillPoly(spine, std::vector<std::vector<cv::Point>>{spur}, cv::Scalar(1.0));
      }
    }
  }
  img += 0.14 * bone + 0.12 * spine;
  if (spec.has(Finding::kCalcifiedGranuloma)) {
    const cv::Point2d z = zone_frontal(spec.granuloma_zone);
    draw_granuloma(c, img, {z.x + (spec.granuloma_x - 0.5) * 0.08, z.y + (spec.granuloma_y - 0.5) * 0.08});
  }
  img.setTo(kAir, ~body);
  out.image = img;
  return out;
}

// Lateral view, anterior to the image left; the right lateral is the same projection seen from the other side
// (mirrored on the detector, slightly different magnification of the near side).
cv::Mat render_lateral(const StudySpec& spec, const Canvas& c, std::mt19937_64& rng) {
  cv::Mat img = c.plane(kAir);
  cv::Mat body = c.mask();
  cv::rectangle(body, c.at(0.38, 0.0), c.at(0.64, 0.2), cv::Scalar(255), cv::FILLED);
  cv::ellipse(body, c.at(0.5, 0.58), cv::Size(c.px(0.31), c.px(0.5)), 0, 0, 360, cv::Scalar(255), cv::FILLED);
  img.setTo(kSoft, body);
  const double dome = std::min(spec.right_dome, spec.left_dome);
  cv::Mat lung = c.mask();
  cv::ellipse(lung, c.at(0.52, 0.46), cv::Size(c.px(0.22), c.px(spec.lung_height + 0.04)), 0, 0, 360, cv::Scalar(255),
              cv::FILLED);
  // diaphragm: lung ends at a dome that dips into the posterior sulcus
  cv::Mat below = c.mask();
  std::vector<cv::Point> dia;
  for (int i = 0; i <= 30; ++i) {
    const double x = 0.2 + 0.6 * i / 30.0;
    dia.push_back(c.at(x, dome + 0.05 * std::pow((x - 0.45) / 0.3, 2.0) * (x > 0.45 ? 2.0 : 0.6)));
  }
  dia.push_back(c.at(0.8, 1.0));
  dia.push_back(c.at(0.2, 1.0));
  cv::fillPoly(below, std::vector<std::vector<cv::Point>>{dia}, cv::Scalar(255));
  lung &= ~below;
  img.setTo(kLung + 0.04, lung);  // both lungs superimposed: a little denser than one
  cv::Mat vessels = c.plane();
  draw_vessels(c, vessels, 0.5, 0.43, -1.0, rng);
  draw_vessels(c, vessels, 0.5, 0.43, 1.0, rng);
  cv::Mat marking = c.plane();
  vessels.copyTo(marking, lung);
  img += 0.09 * marking;
  // heart, anterior, its size following the frontal cardiothoracic ratio
  const double scale = spec.ctr / 0.44;
  cv::ellipse(img, c.at(0.38, dome - 0.06), cv::Size(c.px(0.12 * scale), c.px(0.11 * std::sqrt(scale))), 15, 0, 360,
              cv::Scalar(kHeart - 0.1), cv::FILLED);
  if (spec.has(Finding::kPleuralEffusion)) {  // fluid fills the posterior costophrenic sulcus, meniscus up the back
    cv::Mat fluid = c.mask();
    for (int y = 0; y < c.size(); ++y) {
      for (int x = 0; x < c.size(); ++x) {
        if (!lung.at<uchar>(y, x)) continue;
        const double fx = (x + 0.5) / c.size(), fy = (y + 0.5) / c.size();
        const double level = dome + 0.07 - spec.effusion_height - 0.08 * std::exp(-std::max(0.0, 0.73 - fx) / 0.05);
        if (fy > level && fx > 0.45) fluid.at<uchar>(y, x) = 255;
      }
    }
    img.setTo(kFluid - 0.04, fluid);
  }
  img.setTo(kAbdomen, below & body);
  cv::rectangle(img, c.at(0.485, 0.0), c.at(0.515, 0.28), cv::Scalar(0.32), cv::FILLED);  // trachea
  if (spec.has(Finding::kConsolidation)) draw_consolidation(c, img, lung, zone_lateral(spec.consolidation_zone), rng);

  cv::Mat bone = c.plane();
  const bool degenerative = spec.has(Finding::kDegenerativeSpine);
  const double disc = degenerative ? 0.003 : 0.009;  // narrowed disc spaces
  for (double y = 0.04; y < 0.98; y += 0.042) {
    cv::rectangle(bone, c.at(0.68, y), c.at(0.75, y + 0.042 - disc), cv::Scalar(1.0), cv::FILLED);
    if (degenerative) {  // anterior osteophytes: beaks off both endplates toward the next body
      const double top = y, bottom = y + 0.042 - disc;
      std::vector<cv::Point> up = {c.at(0.68, top), c.at(0.662, top - 0.004), c.at(0.68, top + 0.01)};
      std::vector<cv::Point> down = {c.at(0.68, bottom), c.at(0.662, bottom + 0.004), c.at(0.68, bottom - 0.01)};
      cv::fillPoly(bone, std::vector<std::vector<cv::Point>>{up, down}, cv::Scalar(1.0));
    }
  }
  cv::line(bone, c.at(0.245, 0.2), c.at(0.225, 0.55), cv::Scalar(0.8), std::max(1, c.px(0.02)));  // sternum
  for (int i = 0; i < 8; ++i) {
    const double y = 0.24 + i * spec.rib_spacing;
    cv::ellipse(bone, c.at(0.5, y + 0.1), cv::Size(c.px(0.26), c.px(0.1)), 5, 200, 340, cv::Scalar(0.5),
                std::max(1, c.px(0.01)));
  }
  img += 0.15 * bone;
  if (spec.has(Finding::kCalcifiedGranuloma)) {
    const cv::Point2d z = zone_lateral(spec.granuloma_zone);
    draw_granuloma(c, img, {z.x + (spec.granuloma_x - 0.5) * 0.08, z.y + (spec.granuloma_y - 0.5) * 0.08});
  }
  img.setTo(kAir, ~body);
  return img;
}

}  // namespace cmn::phantom::render_detail
