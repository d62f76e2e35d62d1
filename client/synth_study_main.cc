// cmn-synth-study: writes a made-up chest radiograph study as 8-bit grey PNGs (view0.png, view1.png, ...).
//   cmn-synth-study --out DIR [--views 4] [--size 512] [--seed 1]
// The repository ships no patient images; this is the input of README's demo. The pictures are cartoons
// (body outline, dark lung fields, mediastinum and heart shadow, spine, ribs as arcs, diaphragm domes,
// clavicles, film noise), good enough to exercise decoding, resizing and the whole pipeline, and useless for
// judging a model. Views cycle PA, lateral, AP, left lateral. Same seed, same bytes.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "cmn/preprocessing/image_pipeline.h"

namespace {

struct SynthOptions {
  int size = 512;      // output width = height, pixels
  uint64_t seed = 1;   // drives anatomy jitter and noise
};

// Per-study anatomy, drawn once so all views of a study agree (same heart, same diaphragm).
struct Anatomy {
  double heart_scale;     // cardiothoracic ratio jitter, ~1
  double lung_height;     // fraction of the image
  double rib_spacing;     // fraction of the image between posterior ribs
  double right_dome;      // y of the right hemidiaphragm apex (image left), fraction
  double left_dome;       // y of the left hemidiaphragm apex
  double tilt_degrees;    // patient rotation on the detector
};

Anatomy draw_anatomy(cv::RNG& rng) {
  Anatomy a;
  a.heart_scale = rng.uniform(0.9, 1.15);
  a.lung_height = rng.uniform(0.25, 0.29);
  a.rib_spacing = rng.uniform(0.052, 0.06);
  a.right_dome = rng.uniform(0.66, 0.70);
  a.left_dome = a.right_dome + rng.uniform(0.01, 0.03);  // the left dome usually sits a little lower
  a.tilt_degrees = rng.uniform(-2.0, 2.0);
  return a;
}

// Drawing in fractions of the image size keeps the picture the same at every --size.
class Canvas {
 public:
  explicit Canvas(int size) : size_(size), image_(size, size, CV_32F, cv::Scalar(0.04)) {}

  cv::Point at(double x, double y) const { return {px(x), px(y)}; }
  int px(double fraction) const { return static_cast<int>(std::lround(fraction * size_)); }

  void ellipse(cv::Mat& target, double cx, double cy, double ax, double ay, double angle, double value,
               double start = 0, double end = 360, double thickness = -1) const {
    const int t = thickness < 0 ? cv::FILLED : std::max(1, px(thickness));
    cv::ellipse(target, at(cx, cy), cv::Size(std::max(1, px(ax)), std::max(1, px(ay))), angle, start, end,
                cv::Scalar(value), t, cv::LINE_8);
  }
  void ellipse(double cx, double cy, double ax, double ay, double angle, double value) {
    ellipse(image_, cx, cy, ax, ay, angle, value);
  }
  void rect(double x0, double y0, double x1, double y1, double value) {
    cv::rectangle(image_, at(x0, y0), at(x1, y1), cv::Scalar(value), cv::FILLED);
  }
  cv::Mat layer() const { return cv::Mat::zeros(size_, size_, CV_32F); }
  cv::Mat& image() { return image_; }
  int size() const { return size_; }

 private:
  int size_;
  cv::Mat image_;  // CV_32F, 0 = black (air), 1 = white (bone/metal)
};

// Posterior ribs: arcs leaving the spine, rising, then sweeping out and down along the chest wall.
void draw_ribs_frontal(const Canvas& c, cv::Mat& ribs, const Anatomy& a, double spine_x) {
  for (int i = 0; i < 10; ++i) {
    const double y = 0.2 + i * a.rib_spacing;
    const double ax = 0.2 + 0.012 * i;
    const double ay = 0.07 + 0.004 * i;
    c.ellipse(ribs, spine_x - 0.01, y + ay, ax, ay, 8, 1.0, 180, 275, 0.013);   // patient right
    c.ellipse(ribs, spine_x + 0.01, y + ay, ax, ay, -8, 1.0, 265, 360, 0.013);  // patient left
  }
}

// Everything outside the patient is air: clears what the interior shapes drew past the skin line.
void clip_to_body(cv::Mat& img, const cv::Mat& body_mask) {
  cv::Mat outside;
  cv::bitwise_not(body_mask, outside);
  img.setTo(cv::Scalar(0.04), outside);
}

// PA (ap = false) or AP (ap = true) frontal view: AP magnifies the heart and raises the clavicles.
cv::Mat frontal(const SynthOptions& o, const Anatomy& a, bool ap) {
  Canvas c(o.size);
  const double heart = a.heart_scale * (ap ? 1.15 : 1.0);
  // body outline: neck, shoulders, trunk
  cv::Mat body = cv::Mat::zeros(o.size, o.size, CV_8U);
  cv::rectangle(body, c.at(0.42, 0.0), c.at(0.58, 0.2), cv::Scalar(255), cv::FILLED);
  c.ellipse(body, 0.5, 0.3, 0.47, 0.2, 0, 255);
  c.ellipse(body, 0.5, 0.6, 0.44, 0.5, 0, 255);
  c.rect(0.0, 0.0, 1.0, 1.0, 0.55);  // soft tissue everywhere, clipped to the body at the end
  // lung fields, air-filled and dark
  c.ellipse(0.32, 0.47, 0.135, a.lung_height, 4, 0.16);
  c.ellipse(0.68, 0.48, 0.135, a.lung_height, -4, 0.16);
  // diaphragm domes cut the lung bases; below them, the abdomen
  c.ellipse(0.31, a.right_dome + 0.3, 0.21, 0.3, 0, 0.6);
  c.ellipse(0.69, a.left_dome + 0.3, 0.21, 0.3, 0, 0.6);
  c.rect(0.0, std::max(a.right_dome, a.left_dome) + 0.12, 1.0, 1.0, 0.6);
  // mediastinum and heart shadow (the heart bulges to the patient's left = image right)
  c.rect(0.445, 0.14, 0.555, 0.62, 0.68);
  c.ellipse(0.565, 0.32, 0.04, 0.035, 0, 0.68);  // aortic knob
  c.ellipse(0.54, 0.57, 0.15 * heart, 0.115 * heart, -20, 0.72);
  // trachea: a dark air column down the midline to the carina
  c.rect(0.488, 0.0, 0.512, 0.29, 0.32);

  cv::Mat bone = c.layer();
  draw_ribs_frontal(c, bone, a, 0.5);
  const double clav_y = ap ? 0.14 : 0.18;
  c.ellipse(bone, 0.33, clav_y + 0.07, 0.15, 0.07, 0, 1.0, 200, 320, 0.016);  // clavicles
  c.ellipse(bone, 0.67, clav_y + 0.07, 0.15, 0.07, 0, 1.0, 220, 340, 0.016);
  // spine: a bright column with darker disc spaces, seen faintly through the mediastinum
  cv::Mat spine = c.layer();
  c.ellipse(spine, 0.5, 0.55, 0.03, 0.6, 0, 1.0);
  for (double y = 0.03; y < 1.0; y += 0.036) {
    cv::line(spine, c.at(0.46, y), c.at(0.54, y), cv::Scalar(0.0), std::max(1, c.px(0.006)));
  }
  cv::Mat& img = c.image();
  img += 0.13 * bone + 0.1 * spine;
  clip_to_body(img, body);
  return img;
}

// Lateral view: anterior to the image left (facing_left) or right (a left lateral flipped on the detector).
cv::Mat lateral(const SynthOptions& o, const Anatomy& a, bool facing_left) {
  Canvas c(o.size);
  cv::Mat body = cv::Mat::zeros(o.size, o.size, CV_8U);
  cv::rectangle(body, c.at(0.38, 0.0), c.at(0.64, 0.2), cv::Scalar(255), cv::FILLED);  // neck
  c.ellipse(body, 0.5, 0.58, 0.31, 0.5, 0, 255);                                     // trunk side-on
  c.rect(0.0, 0.0, 1.0, 1.0, 0.55);
  c.ellipse(0.51, 0.47, 0.22, a.lung_height + 0.03, 0, 0.2);  // both lungs, superimposed
  c.ellipse(0.37, 0.61, 0.13 * a.heart_scale, 0.12 * a.heart_scale, 15, 0.58);  // heart, anterior
  c.ellipse(0.5, std::min(a.right_dome, a.left_dome) + 0.3, 0.29, 0.3, 0, 0.6);  // diaphragm
  c.rect(0.0, std::max(a.right_dome, a.left_dome) + 0.14, 1.0, 1.0, 0.6);
  c.rect(0.485, 0.0, 0.515, 0.3, 0.32);  // trachea
  cv::Mat bone = c.layer();
  // thoracic vertebral bodies, posterior, with disc spaces between them
  for (double y = 0.04; y < 0.98; y += 0.042) {
    cv::rectangle(bone, c.at(0.68, y), c.at(0.75, y + 0.034), cv::Scalar(1.0), cv::FILLED);
  }
  cv::line(bone, c.at(0.245, 0.2), c.at(0.225, 0.55), cv::Scalar(0.8), std::max(1, c.px(0.02)));  // sternum
  for (int i = 0; i < 8; ++i) {  // rib arcs, faint where left and right overlap
    const double y = 0.24 + i * a.rib_spacing;
    c.ellipse(bone, 0.5, y + 0.1, 0.26, 0.1, 5, 0.5, 200, 340, 0.01);
  }
  cv::Mat& img = c.image();
  img += 0.14 * bone;
  clip_to_body(img, body);
  if (!facing_left) cv::flip(img, img, 1);
  return img;
}

// Blur (detector unsharpness), tilt, a little heel-effect gradient and quantum noise, then 8 bits.
cv::Mat finish(cv::Mat img, const SynthOptions& o, const Anatomy& a, cv::RNG& rng) {
  const double sigma = std::max(0.6, o.size * 0.004);
  cv::GaussianBlur(img, img, cv::Size(0, 0), sigma);
  const cv::Mat rot = cv::getRotationMatrix2D(cv::Point2f(o.size / 2.0f, o.size / 2.0f), a.tilt_degrees, 1.0);
  cv::warpAffine(img, img, rot, img.size(), cv::INTER_LINEAR, cv::BORDER_CONSTANT, cv::Scalar(0.04));
  for (int y = 0; y < img.rows; ++y) img.row(y) *= 1.0 - 0.08 * y / img.rows;
  cv::Mat noise(img.size(), CV_32F);
  rng.fill(noise, cv::RNG::NORMAL, 0.0, 0.018);
  img += noise;
  cv::Mat out;
  img.convertTo(out, CV_8U, 255.0);  // saturates outside [0, 1]
  return out;
}

cv::Mat render_view(int view, const SynthOptions& o, const Anatomy& a, cv::RNG& rng) {
  switch (view % 4) {
    case 0: return finish(frontal(o, a, /*ap=*/false), o, a, rng);
    case 1: return finish(lateral(o, a, /*facing_left=*/true), o, a, rng);
    case 2: return finish(frontal(o, a, /*ap=*/true), o, a, rng);
    default: return finish(lateral(o, a, /*facing_left=*/false), o, a, rng);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cmn-synth-study: write a made-up chest radiograph study (8-bit grey PNGs)", "cmn-synth-study"};
  std::string out_dir;
  int views = 4;
  SynthOptions options;
  app.add_option("--out", out_dir, "output directory (created if missing)")->required();
  app.add_option("--views", views, "number of images (PA, lateral, AP, left lateral, ...)")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  app.add_option("--size", options.size, "width = height in pixels")->check(CLI::Range(64, 4096))->capture_default_str();
  app.add_option("--seed", options.seed, "random seed (anatomy and noise)")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "cmn-synth-study: " << e.what() << " (run with --help for usage)\n";
    return 2;
  }

  try {
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) {
      std::cerr << "cmn-synth-study: cannot create '" << out_dir << "': " << ec.message() << "\n";
      return 1;
    }
    cv::RNG rng(options.seed);
    const Anatomy anatomy = draw_anatomy(rng);
    for (int v = 0; v < views; ++v) {
      const cv::Mat image = render_view(v, options, anatomy, rng);
      const std::string path = (std::filesystem::path(out_dir) / ("view" + std::to_string(v) + ".png")).string();
      if (!cv::imwrite(path, image, {cv::IMWRITE_PNG_COMPRESSION, 6})) {
        std::cerr << "cmn-synth-study: cannot write '" << path << "'\n";
        return 1;
      }
      // Read it back through the model's own reader so a demo never starts from a file the pipeline rejects.
      if (auto check = cmn::preprocessing::read_rgb8(path); !check.ok()) {
        std::cerr << "cmn-synth-study: " << check.status().message() << "\n";
        return 1;
      }
      std::cout << path << "\n";
    }
  } catch (const cv::Exception& e) {
    std::cerr << "cmn-synth-study: OpenCV: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
