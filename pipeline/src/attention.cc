#include "cmn/pipeline/attention.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cmn/common/file_util.h"
#include "cmn/common/status_macros.h"

namespace cmn::pipeline {
namespace {

constexpr int64_t kPatches = kPatchGrid * kPatchGrid;

}  // namespace

absl::StatusOr<std::vector<AttentionMap>> sentence_attention_maps(const std::vector<int64_t>& token_ids,
                                                                  const engine::TokenAttention& att,  // [layers,T,S]
                                                                  const model::Tokenizer& tokenizer,
                                                                  int64_t views) {
  if (att.empty()) {
    if (token_ids.empty()) return std::vector<AttentionMap>{};
    return absl::FailedPreconditionError("report was generated without attention capture (GeneratorOptions::attention)");
  }
  if (att.tokens != static_cast<int64_t>(token_ids.size()) || att.patches != views * kPatches ||
      att.values.size() != static_cast<size_t>(att.layers * att.tokens * att.patches)) {
    return absl::InvalidArgumentError(absl::StrCat("token attention [", att.layers, ",", att.tokens, ",", att.patches,
                                                   "] does not fit ", token_ids.size(), " tokens x ", views,
                                                   " views x ", kPatches, " patches"));
  }
  const auto& words = tokenizer.tokens();
  auto word = [&](int64_t id) -> std::string {
    return id >= 1 && id <= static_cast<int64_t>(words.size()) ? words[static_cast<size_t>(id - 1)] : "<unk>";
  };
  // Sentences: runs of tokens ending with "." (a trailing run without one is a sentence too).
  std::vector<std::pair<int64_t, int64_t>> spans;  // [first, last)
  int64_t first = 0;
  const int64_t n = static_cast<int64_t>(token_ids.size());
  for (int64_t t = 0; t < n; ++t) {
    if (word(token_ids[static_cast<size_t>(t)]) == "." || t == n - 1) {
      spans.emplace_back(first, t + 1);
      first = t + 1;
    }
  }
  std::vector<AttentionMap> maps;
  for (size_t s = 0; s < spans.size(); ++s) {
    const auto [a, b] = spans[s];
    std::string text;
    for (int64_t t = a; t < b; ++t) {
      if (!text.empty()) text += ' ';
      text += word(token_ids[static_cast<size_t>(t)]);
    }
    for (int64_t l = 0; l < att.layers; ++l) {
      for (int64_t v = 0; v < views; ++v) {
        AttentionMap m;
        m.sentence = static_cast<int64_t>(s);
        m.text = text;
        m.layer = l;
        m.view = v;
        m.weights.assign(kPatches, 0.0f);
        // Mean over the sentence's tokens of this layer's row, this view's 49 patches.
        for (int64_t p = 0; p < kPatches; ++p) {
          double sum = 0;
          for (int64_t t = a; t < b; ++t) sum += att.at(l, t, v * kPatches + p);
          m.weights[static_cast<size_t>(p)] = static_cast<float>(sum / static_cast<double>(b - a));
        }
        maps.push_back(std::move(m));
      }
    }
  }
  return maps;
}

absl::StatusOr<std::string> render_attention_png(const AttentionMap& map, const preprocessing::FloatImage& view,
                                                 const preprocessing::ImageOptions& image_options) {
  if (map.weights.size() != static_cast<size_t>(kPatches)) {
    return absl::InvalidArgumentError(absl::StrCat("attention map has ", map.weights.size(), " values, want ", kPatches));
  }
  const int h = view.height, w = view.width;
  if (view.channels != 3 || h <= 0 || w <= 0 || view.data.size() != static_cast<size_t>(3 * h * w)) {
    return absl::InvalidArgumentError(absl::StrCat("view image is ", view.channels, "x", h, "x", w, " with ",
                                                   view.data.size(), " values"));
  }
  // The image as the reference plots it: clamp((x * std + mean) * 255, 0, 255), then an int cast.
  cv::Mat image(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y) {
    auto* row = image.ptr<uint8_t>(y);
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {
        const float v = view.data[static_cast<size_t>(c * h * w + y * w + x)];
        const float px = std::clamp((v * image_options.std[c] + image_options.mean[c]) * 255.0f, 0.0f, 255.0f);
        row[x * 3 + (2 - c)] = static_cast<uint8_t>(px);  // RGB -> OpenCV's BGR
      }
    }
  }
  // generate_heatmap: weights - min, / max, resize (bilinear) to the image, uint8(255 * w), JET, 0.5 + 0.5.
  cv::Mat weights(kPatchGrid, kPatchGrid, CV_32F);
  std::copy(map.weights.begin(), map.weights.end(), weights.ptr<float>());
  double lo = 0, hi = 0;
  cv::minMaxLoc(weights, &lo, &hi);
  weights -= lo;
  if (hi - lo > 0) weights /= (hi - lo);  // a flat map stays 0 (the reference would divide by 0 -> NaN)
  cv::Mat up;
  cv::resize(weights, up, cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
  cv::Mat grey;
  up.convertTo(grey, CV_8U, 255.0);
  cv::Mat heat;
  cv::applyColorMap(grey, heat, cv::COLORMAP_JET);
  cv::Mat blended;
  cv::addWeighted(heat, 0.5, image, 0.5, 0.0, blended);
  std::vector<uint8_t> png;
  if (!cv::imencode(".png", blended, png)) return absl::InternalError("PNG encoding failed");
  return std::string(png.begin(), png.end());
}

absl::Status write_attention_maps(const std::string& dir, const std::vector<AttentionMap>& maps,
                                  const std::vector<preprocessing::FloatImage>& views,
                                  const preprocessing::ImageOptions& image_options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create '", dir, "': ", ec.message()));
  nlohmann::ordered_json index = nlohmann::ordered_json::array();
  for (const auto& m : maps) {
    if (m.view < 0 || m.view >= static_cast<int64_t>(views.size())) {
      return absl::InvalidArgumentError(absl::StrCat("attention map for view ", m.view, " but ", views.size(), " views"));
    }
    CMN_ASSIGN_OR_RETURN(auto png, render_attention_png(m, views[static_cast<size_t>(m.view)], image_options));
    const std::string name = absl::StrFormat("s%02d_layer%d_view%d.png", m.sentence, m.layer, m.view);
    CMN_RETURN_IF_ERROR(write_file_atomically((fs::path(dir) / name).string(), png));
    index.push_back({{"sentence", m.sentence}, {"text", m.text}, {"layer", m.layer}, {"view", m.view}, {"file", name}});
  }
  return write_file_atomically((fs::path(dir) / "sentences.json").string(), index.dump(1) + "\n");
}

}  // namespace cmn::pipeline
