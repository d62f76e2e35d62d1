// Tests for cmn::preprocessing's image pipeline. The parity test compares against the tensors that the
// Python reference (PIL + torchvision) produced for the dev fixture; the others pin down pieces of the
// behaviour with hand-computed values or an independent implementation (OpenCV).
#include "cmn/preprocessing/image_pipeline.h"

#include <gtest/gtest.h>
#include <torch/script.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace cmn::preprocessing {
namespace {

namespace fs = std::filesystem;

const std::string kParityDir = std::string(CMN_SHARED_DIR) + "/parity/dev";

// A per-test scratch directory, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("cmn_image_pipeline_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
             std::to_string(std::random_device{}()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::vector<std::uint8_t> row_values(const cv::Mat& m, int row) {
  const auto* p = m.ptr<std::uint8_t>(row);
  return std::vector<std::uint8_t>(p, p + m.cols * m.channels());
}

// ---------------------------------------------------------------------------------------------------
// Parity with the reference transform.

TEST(ImagePipelineParity, MatchesReferenceInputsWithinOneGreyLevel) {
  const std::string inputs_path = kParityDir + "/inputs.pt";
  ASSERT_TRUE(fs::exists(inputs_path)) << inputs_path;
  torch::jit::script::Module inputs = torch::jit::load(inputs_path);
  const torch::Tensor images = inputs.attr("images").toTensor().to(torch::kFloat32).contiguous();
  ASSERT_EQ(images.dim(), 5);
  ASSERT_EQ(images.size(2), 3);
  ASSERT_EQ(images.size(3), 224);
  ASSERT_EQ(images.size(4), 224);

  double max_diff = 0.0;
  std::int64_t total = 0;
  std::int64_t within_1e5 = 0;
  std::int64_t exact = 0;
  for (int s = 0; s < images.size(0); ++s) {
    for (int v = 0; v < images.size(1); ++v) {
      const std::string path =
          kParityDir + "/images/study" + std::to_string(s) + "_view" + std::to_string(v) + ".png";
      auto loaded = load_model_input(path);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      ASSERT_EQ(loaded->channels, 3);
      ASSERT_EQ(loaded->height, 224);
      ASSERT_EQ(loaded->width, 224);
      const torch::Tensor ref = images[s][v].contiguous();
      const float* r = ref.data_ptr<float>();
      ASSERT_EQ(static_cast<std::int64_t>(loaded->data.size()), ref.numel());
      double view_max = 0.0;
      for (std::size_t i = 0; i < loaded->data.size(); ++i) {
        const double d = std::abs(static_cast<double>(loaded->data[i]) - r[i]);
        view_max = std::max(view_max, d);
        within_1e5 += d <= 1e-5;
        exact += loaded->data[i] == r[i];
        ++total;
      }
      max_diff = std::max(max_diff, view_max);
      std::cout << "[ parity ] " << path << ": max |diff| = " << view_max << "\n";
    }
  }
  std::cout << "[ parity ] overall max |diff| = " << max_diff << ", bit-exact " << exact << "/" << total
            << ", within 1e-5 " << within_1e5 << "/" << total << "\n";
  ::testing::Test::RecordProperty("max_abs_diff", std::to_string(max_diff));
  // The bar: within one grey level before normalisation. (One level on G, std 0.224, is slightly
  // more than this bound, so a 1-level miss there fails too; we expect exact anyway.)
  EXPECT_LE(max_diff, (1.0 / 255.0) / 0.225 + 1e-6);
  EXPECT_GT(static_cast<double>(within_1e5), 0.999 * static_cast<double>(total));
}

// ---------------------------------------------------------------------------------------------------
// read_rgb8 / to_rgb8

TEST(ReadRgb8, GreyPngIsReplicatedIntoRgb) {
  const std::string path = kParityDir + "/images/study0_view2.png";
  auto rgb = read_rgb8(path);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  const cv::Mat grey = cv::imread(path, cv::IMREAD_GRAYSCALE);
  ASSERT_FALSE(grey.empty());
  ASSERT_EQ(rgb->type(), CV_8UC3);
  ASSERT_EQ(rgb->size(), grey.size());
  std::vector<cv::Mat> planes;
  cv::split(*rgb, planes);
  for (const cv::Mat& p : planes) EXPECT_EQ(cv::norm(p, grey, cv::NORM_INF), 0.0);
}

TEST(ReadRgb8, RgbaPngDropsAlphaAndReturnsRgbOrder) {
  TempDir dir;
  // BGRA as OpenCV stores it; alpha varies (including fully transparent) and must not affect colour.
  cv::Mat bgra(3, 4, CV_8UC4);
  for (int y = 0; y < bgra.rows; ++y) {
    for (int x = 0; x < bgra.cols; ++x) {
      bgra.at<cv::Vec4b>(y, x) = cv::Vec4b(static_cast<std::uint8_t>(10 + x),        // B
                                           static_cast<std::uint8_t>(100 + y),       // G
                                           static_cast<std::uint8_t>(200 + x + y),   // R
                                           static_cast<std::uint8_t>(x * 80));       // A: 0..240
    }
  }
  const std::string path = dir.file("rgba.png");
  ASSERT_TRUE(cv::imwrite(path, bgra));
  auto rgb = read_rgb8(path);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  ASSERT_EQ(rgb->type(), CV_8UC3);
  ASSERT_EQ(rgb->rows, 3);
  ASSERT_EQ(rgb->cols, 4);
  for (int y = 0; y < 3; ++y) {
    for (int x = 0; x < 4; ++x) {
      const cv::Vec3b p = rgb->at<cv::Vec3b>(y, x);
      EXPECT_EQ(p[0], 200 + x + y) << "R at " << x << "," << y;
      EXPECT_EQ(p[1], 100 + y) << "G at " << x << "," << y;
      EXPECT_EQ(p[2], 10 + x) << "B at " << x << "," << y;
    }
  }
}

TEST(ReadRgb8, SixteenBitGreyPngKeepsHighByte) {
  TempDir dir;
  const std::vector<std::uint16_t> values = {0, 255, 256, 0x1234, 0x80FF, 0xFF80, 0xFFFF};
  cv::Mat grey16(1, static_cast<int>(values.size()), CV_16UC1);
  for (std::size_t i = 0; i < values.size(); ++i) grey16.at<std::uint16_t>(0, static_cast<int>(i)) = values[i];
  const std::string path = dir.file("grey16.png");
  ASSERT_TRUE(cv::imwrite(path, grey16));
  // Make sure the fixture really is 16-bit on disk, or the test proves nothing.
  ASSERT_EQ(cv::imread(path, cv::IMREAD_UNCHANGED).depth(), CV_16U);
  auto rgb = read_rgb8(path);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  ASSERT_EQ(rgb->type(), CV_8UC3);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const cv::Vec3b p = rgb->at<cv::Vec3b>(0, static_cast<int>(i));
    const int expected = values[i] >> 8;
    EXPECT_EQ(p[0], expected) << "value " << values[i];
    EXPECT_EQ(p[1], expected) << "value " << values[i];
    EXPECT_EQ(p[2], expected) << "value " << values[i];
  }
}

TEST(ReadRgb8, SixteenBitColourPngKeepsHighByteInRgbOrder) {
  TempDir dir;
  cv::Mat bgr16(1, 2, CV_16UC3);
  bgr16.at<cv::Vec3w>(0, 0) = cv::Vec3w(0x0102, 0x8081, 0xFFFF);  // B, G, R
  bgr16.at<cv::Vec3w>(0, 1) = cv::Vec3w(0xFF80, 0x00FF, 0x7F00);
  const std::string path = dir.file("bgr16.png");
  ASSERT_TRUE(cv::imwrite(path, bgr16));
  auto rgb = read_rgb8(path);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  EXPECT_EQ(rgb->at<cv::Vec3b>(0, 0), cv::Vec3b(0xFF, 0x80, 0x01));
  EXPECT_EQ(rgb->at<cv::Vec3b>(0, 1), cv::Vec3b(0x7F, 0x00, 0xFF));
}

TEST(ToRgb8, GreyAlphaDropsAlpha) {
  cv::Mat grey_alpha(1, 3, CV_8UC2);
  grey_alpha.at<cv::Vec2b>(0, 0) = cv::Vec2b(7, 0);
  grey_alpha.at<cv::Vec2b>(0, 1) = cv::Vec2b(128, 255);
  grey_alpha.at<cv::Vec2b>(0, 2) = cv::Vec2b(250, 9);
  auto rgb = to_rgb8(grey_alpha);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  EXPECT_EQ(rgb->at<cv::Vec3b>(0, 0), cv::Vec3b(7, 7, 7));
  EXPECT_EQ(rgb->at<cv::Vec3b>(0, 1), cv::Vec3b(128, 128, 128));
  EXPECT_EQ(rgb->at<cv::Vec3b>(0, 2), cv::Vec3b(250, 250, 250));
}

TEST(ToRgb8, RejectsFloatImages) {
  const cv::Mat f(2, 2, CV_32FC1, cv::Scalar(0.5));
  auto rgb = to_rgb8(f);
  EXPECT_FALSE(rgb.ok());
}

TEST(ReadRgb8, MissingFileIsNotFoundAndNamesTheFile) {
  TempDir dir;
  const std::string path = dir.file("does_not_exist_xyz.png");
  auto rgb = read_rgb8(path);
  ASSERT_FALSE(rgb.ok());
  EXPECT_EQ(rgb.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(rgb.status().message()).find("does_not_exist_xyz.png"), std::string::npos)
      << rgb.status();
  // load_model_input passes the error through.
  auto input = load_model_input(path);
  ASSERT_FALSE(input.ok());
  EXPECT_NE(std::string(input.status().message()).find("does_not_exist_xyz.png"), std::string::npos);
}

TEST(ReadRgb8, NonImageFileIsAnErrorNamingTheFile) {
  TempDir dir;
  const std::string path = dir.file("not_an_image.png");
  {
    std::ofstream out(path);
    out << "this is plain text, not a PNG\n";
  }
  auto rgb = read_rgb8(path);
  ASSERT_FALSE(rgb.ok());
  EXPECT_EQ(rgb.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(rgb.status().message()).find("not_an_image.png"), std::string::npos) << rgb.status();
}

TEST(ReadRgb8, EmptyFileAndDirectoryAreErrorsNamingThePath) {
  TempDir dir;
  const std::string empty = dir.file("empty_file.png");
  { std::ofstream out(empty); }
  auto rgb = read_rgb8(empty);
  ASSERT_FALSE(rgb.ok());
  EXPECT_NE(std::string(rgb.status().message()).find("empty_file.png"), std::string::npos) << rgb.status();

  const std::string sub = dir.file("a_directory.png");
  fs::create_directories(sub);
  auto from_dir = read_rgb8(sub);
  ASSERT_FALSE(from_dir.ok());
  EXPECT_NE(std::string(from_dir.status().message()).find("a_directory.png"), std::string::npos)
      << from_dir.status();
}

// ---------------------------------------------------------------------------------------------------
// resize_bilinear_pil

TEST(ResizeBilinearPil, DownscaleAntialiasesWithHandComputedWeights) {
  // 4 -> 2: scale 2, support 2. Output 0 reads inputs 0..2 with weights 0.75, 0.75, 0.25 (/1.75), output 1
  // reads inputs 1..3 with 0.25, 0.75, 0.75: [0, 70, 140, 210] -> [50, 160]. Plain (non-antialiased)
  // bilinear, e.g. cv::INTER_LINEAR, would give [35, 175].
  cv::Mat in = (cv::Mat_<std::uint8_t>(1, 4) << 0, 70, 140, 210);
  const cv::Mat out = resize_bilinear_pil(in, 2, 1);
  ASSERT_EQ(out.rows, 1);
  ASSERT_EQ(out.cols, 2);
  EXPECT_EQ(row_values(out, 0), (std::vector<std::uint8_t>{50, 160}));

  // Same along the vertical axis (the second pass).
  const cv::Mat col = resize_bilinear_pil(in.t(), 1, 2);
  ASSERT_EQ(col.rows, 2);
  ASSERT_EQ(col.cols, 1);
  EXPECT_EQ(col.at<std::uint8_t>(0, 0), 50);
  EXPECT_EQ(col.at<std::uint8_t>(1, 0), 160);
}

TEST(ResizeBilinearPil, UpscaleUsesUnitSupportAndClampsEdges) {
  // 2 -> 4: centres 0.25, 0.75, 1.25, 1.75; the edges clamp to the end pixels and the inner samples
  // are 0.75/0.25 blends: 63.75 -> 64 and 191.25 -> 191 after fixed-point rounding.
  cv::Mat in = (cv::Mat_<std::uint8_t>(1, 2) << 0, 255);
  const cv::Mat out = resize_bilinear_pil(in, 4, 1);
  EXPECT_EQ(row_values(out, 0), (std::vector<std::uint8_t>{0, 64, 191, 255}));
}

TEST(ResizeBilinearPil, UpscaleSmallImageTo224MatchesOpenCvBilinearWithinOneLevel) {
  // When enlarging, PIL's bilinear is ordinary half-pixel bilinear interpolation, which OpenCV's
  // INTER_LINEAR also computes (with 11-bit fixed point), so the two agree to within rounding.
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> dist(0, 255);
  cv::Mat small(5, 7, CV_8UC3);
  for (int y = 0; y < small.rows; ++y) {
    for (int x = 0; x < small.cols * 3; ++x) small.ptr<std::uint8_t>(y)[x] = static_cast<std::uint8_t>(dist(rng));
  }
  const cv::Mat ours = resize_bilinear_pil(small, 224, 224);
  cv::Mat opencv;
  cv::resize(small, opencv, cv::Size(224, 224), 0, 0, cv::INTER_LINEAR);
  ASSERT_EQ(ours.size(), cv::Size(224, 224));
  ASSERT_EQ(ours.type(), CV_8UC3);
  EXPECT_LE(cv::norm(ours, opencv, cv::NORM_INF), 1.0);

  // And the full pipeline accepts it.
  const FloatImage input = to_model_input(small);
  EXPECT_EQ(input.height, 224);
  EXPECT_EQ(input.width, 224);
  EXPECT_EQ(input.data.size(), 3u * 224 * 224);
}

TEST(ResizeBilinearPil, NonSquareTargetHasWidthAndHeightInTheRightOrder) {
  cv::Mat in(30, 50, CV_8UC1, cv::Scalar(77));
  const cv::Mat out = resize_bilinear_pil(in, 13, 41);  // shrink x, enlarge y
  EXPECT_EQ(out.cols, 13);
  EXPECT_EQ(out.rows, 41);
  // A constant image stays constant: the fixed-point weights of each output sum to ~1 << 22.
  EXPECT_EQ(cv::norm(out, cv::Mat(41, 13, CV_8UC1, cv::Scalar(77)), cv::NORM_INF), 0.0);
}

TEST(ResizeBilinearPil, SameSizeIsACopy) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> dist(0, 255);
  cv::Mat in(9, 11, CV_8UC3);
  for (int y = 0; y < in.rows; ++y) {
    for (int x = 0; x < in.cols * 3; ++x) in.ptr<std::uint8_t>(y)[x] = static_cast<std::uint8_t>(dist(rng));
  }
  const cv::Mat out = resize_bilinear_pil(in, 11, 9);
  EXPECT_EQ(cv::norm(in, out, cv::NORM_INF), 0.0);
}

// ---------------------------------------------------------------------------------------------------
// to_model_input

TEST(ToModelInput, NormalisesPerChannelInChwOrderLikeTorchvision) {
  // A constant colour survives the resize unchanged, so every value is torchvision's
  // ((v / 255) - mean) / std for its channel, computed in float32.
  cv::Mat rgb(300, 260, CV_8UC3, cv::Scalar(10, 128, 250));  // R, G, B (to_model_input takes RGB)
  const FloatImage input = to_model_input(rgb);
  ASSERT_EQ(input.channels, 3);
  ASSERT_EQ(input.height, 224);
  ASSERT_EQ(input.width, 224);
  const int values[3] = {10, 128, 250};
  const float mean[3] = {0.485f, 0.456f, 0.406f};
  const float stdev[3] = {0.229f, 0.224f, 0.225f};
  const std::size_t plane = 224 * 224;
  for (int c = 0; c < 3; ++c) {
    const float expected = (static_cast<float>(values[c]) / 255.0f - mean[c]) / stdev[c];
    for (std::size_t i : {std::size_t{0}, plane / 2 + 17, plane - 1}) {
      EXPECT_EQ(input.data[c * plane + i], expected) << "channel " << c << " index " << i;
    }
  }
}

TEST(ToModelInput, EveryByteValueNormalisesExactlyAsTorchvisionFloat32) {
  // A 16x16 image already at the target size is not resampled, so each of the 256 byte values must map
  // to exactly ((float)v / 255 - mean) / std: the same float32 operations, in the same order, as
  // ToTensor + Normalize (a reciprocal multiply or a fused form would be off by an ulp somewhere).
  cv::Mat rgb(16, 16, CV_8UC3);
  for (int i = 0; i < 256; ++i) {
    const auto v = static_cast<std::uint8_t>(i);
    rgb.at<cv::Vec3b>(i / 16, i % 16) = cv::Vec3b(v, static_cast<std::uint8_t>(255 - i), v);
  }
  ImageOptions options;
  options.size = 16;
  const FloatImage input = to_model_input(rgb, options);
  ASSERT_EQ(input.data.size(), 3u * 256);
  const float mean[3] = {0.485f, 0.456f, 0.406f};
  const float stdev[3] = {0.229f, 0.224f, 0.225f};
  for (int i = 0; i < 256; ++i) {
    const int values[3] = {i, 255 - i, i};
    for (int c = 0; c < 3; ++c) {
      volatile float x = static_cast<float>(values[c]) / 255.0f;  // volatile: no constant-folded shortcuts
      volatile float centred = x - mean[c];
      const float expected = centred / stdev[c];
      EXPECT_EQ(input.data[c * 256 + i], expected) << "channel " << c << " value " << values[c];
    }
  }
}

TEST(ToModelInput, GreyInputEqualsReplicatedRgbInput) {
  const cv::Mat grey = cv::imread(kParityDir + "/images/study1_view0.png", cv::IMREAD_GRAYSCALE);
  ASSERT_FALSE(grey.empty());
  cv::Mat rgb;
  cv::cvtColor(grey, rgb, cv::COLOR_GRAY2RGB);
  ImageOptions options;
  options.size = 64;
  const FloatImage a = to_model_input(grey, options);
  const FloatImage b = to_model_input(rgb, options);
  ASSERT_EQ(a.data.size(), 3u * 64 * 64);
  EXPECT_EQ(a.data, b.data);
}

}  // namespace
}  // namespace cmn::preprocessing
