#include "cmn/train/data.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include <opencv2/core.hpp>

#include "cmn/preprocessing/dicom.h"

namespace cmn::train {

namespace {

// SplitMix64: a seed per (seed, epoch, index) that does not depend on thread scheduling.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b) { return mix(mix(mix(seed) ^ a) ^ b); }

// Uniform integer in [0, n) without modulo bias (Lemire-style rejection), the same on every standard library
// (std::uniform_int_distribution's algorithm is implementation-defined).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return x % n;
}

bool has_dicom_extension(const std::string& path) {
  auto dot = path.find_last_of('.');
  if (dot == std::string::npos) return false;
  std::string ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == "dcm" || ext == "dicom";
}

// ToTensor + Normalize of an 8-bit image (1 or 3 channels) into CHW floats, the same float operations as
// preprocessing::to_model_input: (v / 255 - mean) / std in float32.
preprocessing::FloatImage normalize(const cv::Mat& image8, const preprocessing::ImageOptions& options) {
  preprocessing::FloatImage out;
  out.channels = 3;
  out.height = image8.rows;
  out.width = image8.cols;
  const size_t plane = static_cast<size_t>(out.height) * out.width;
  out.data.resize(3 * plane);
  const int in_channels = image8.channels();
  for (int c = 0; c < 3; ++c) {
    float lut[256];
    for (int v = 0; v < 256; ++v) lut[v] = (static_cast<float>(v) / 255.0f - options.mean[c]) / options.std[c];
    float* dst = out.data.data() + c * plane;
    const int src_c = in_channels == 1 ? 0 : c;
    for (int y = 0; y < out.height; ++y) {
      const uint8_t* row = image8.ptr<uint8_t>(y);
      for (int x = 0; x < out.width; ++x) dst[static_cast<size_t>(y) * out.width + x] = lut[row[x * in_channels + src_c]];
    }
  }
  return out;
}

}  // namespace

BadImagePolicy parse_bad_image_policy(const std::string& name) {
  if (name == "skip") return BadImagePolicy::kSkip;
  if (name == "fatal") return BadImagePolicy::kFatal;
  TORCH_CHECK(false, "on_bad_image must be skip or fatal, got '", name, "'");
}

absl::StatusOr<cv::Mat> read_training_image(const std::string& path) {
  if (has_dicom_extension(path)) {
    auto dicom = preprocessing::read_dicom_file(path);
    if (!dicom.ok()) return dicom.status();
    return dicom->grey8;
  }
  return preprocessing::read_rgb8(path);
}

std::pair<int, int> resize_shorter_side(int width, int height, int size) {
  TORCH_CHECK(width > 0 && height > 0 && size > 0, "bad resize of ", width, "x", height, " to ", size);
  const bool width_short = width <= height;
  const int shorter = width_short ? width : height;
  const int longer = width_short ? height : width;
  // torchvision: int(size * long / short) with Python float division
  const int new_long = static_cast<int>(static_cast<double>(size) * longer / shorter);
  return width_short ? std::make_pair(size, new_long) : std::make_pair(new_long, size);
}

preprocessing::FloatImage train_transform(const cv::Mat& image8, const TransformOptions& options, std::mt19937_64& rng) {
  TORCH_CHECK(!image8.empty() && (image8.type() == CV_8UC3 || image8.type() == CV_8UC1),
              "train_transform needs an 8-bit grey or RGB image");
  auto [w, h] = resize_shorter_side(image8.cols, image8.rows, options.train_resize);
  cv::Mat resized = (w == image8.cols && h == image8.rows) ? image8 : preprocessing::resize_bilinear_pil(image8, w, h);
  const int crop = options.train_crop;
  TORCH_CHECK(resized.cols >= crop && resized.rows >= crop, "image of ", resized.cols, "x", resized.rows,
              " after resize is smaller than the crop ", crop);
  const int top = static_cast<int>(uniform_below(rng, static_cast<uint64_t>(resized.rows - crop + 1)));
  const int left = static_cast<int>(uniform_below(rng, static_cast<uint64_t>(resized.cols - crop + 1)));
  cv::Mat patch = resized(cv::Rect(left, top, crop, crop));
  const bool flip = options.horizontal_flip && uniform_below(rng, 2) == 1;
  cv::Mat out;
  if (flip) {
    cv::flip(patch, out, /*flipCode=*/1);
  } else {
    out = patch.clone();
  }
  return normalize(out, options.image);
}

preprocessing::FloatImage eval_transform(const cv::Mat& image8, const TransformOptions& options) {
  return preprocessing::to_model_input(image8, options.image);
}

std::vector<std::string> select_view_paths(const std::vector<std::string>& paths, int64_t views) {
  std::vector<std::string> out;
  if (paths.empty()) return out;
  for (int64_t k = 0; k < views; ++k) out.push_back(paths[static_cast<size_t>(k) % paths.size()]);
  return out;
}

std::vector<Example> make_examples(const std::vector<pipeline::AnnotationExample>& split,
                                   const model::Tokenizer& tokenizer, const ExampleOptions& options) {
  TORCH_CHECK(options.views >= 1, "views must be >= 1");
  TORCH_CHECK(options.max_seq_length >= 2, "max_seq_length must be >= 2");
  std::vector<Example> out;
  out.reserve(split.size());
  for (const auto& a : split) {
    TORCH_CHECK(!a.image_paths.empty(), "study '", a.id, "' has no image_path");
    Example e;
    e.id = a.id;
    e.report = a.report;
    for (const auto& p : select_view_paths(a.image_paths, options.views)) {
      e.image_paths.push_back(options.image_dir.empty() || (!p.empty() && p[0] == '/') ? p
                                                                                        : options.image_dir + "/" + p);
    }
    e.ids = tokenizer.encode(a.report);
    if (static_cast<int64_t>(e.ids.size()) > options.max_seq_length) e.ids.resize(options.max_seq_length);
    out.push_back(std::move(e));
  }
  return out;
}

DataLoader::DataLoader(std::vector<Example> examples, LoaderOptions options)
    : examples_(std::move(examples)), options_(std::move(options)) {
  TORCH_CHECK(options_.batch_size >= 1, "batch_size must be >= 1");
  TORCH_CHECK(options_.prefetch_batches >= 1, "prefetch_batches must be >= 1");
  TORCH_CHECK(options_.num_workers >= 0, "num_workers must be >= 0");
  reader_ = options_.reader ? options_.reader : ImageReader(read_training_image);
}

DataLoader::~DataLoader() { stop_workers(); }

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(examples_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  if (options_.shuffle && order.size() > 1) {
    std::mt19937_64 rng(derive_seed(options_.seed, 0x5f0f1e, static_cast<uint64_t>(epoch)));
    for (size_t i = order.size() - 1; i > 0; --i) {  // Fisher-Yates
      std::swap(order[i], order[uniform_below(rng, i + 1)]);
    }
  }
  return order;
}

int64_t DataLoader::num_batches() const {
  const int64_t n = size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  consumed_.notify_all();
  produced_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stopping_ = false;
}

void DataLoader::start_epoch(int64_t epoch) {
  stop_workers();
  std::lock_guard<std::mutex> lock(mutex_);
  epoch_ = epoch;
  order_ = epoch_order(epoch);
  total_batches_ = num_batches();
  ready_.clear();
  next_to_claim_ = 0;
  next_to_return_ = 0;
  for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

void DataLoader::worker_loop() {
  // Workers only copy pixels: keep LibTorch from spawning intra-op threads under them.
  torch::NoGradGuard no_grad;
  while (true) {
    int64_t index;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      consumed_.wait(lock, [&] {
        return stopping_ || next_to_claim_ >= total_batches_ ||
               next_to_claim_ < next_to_return_ + options_.prefetch_batches;
      });
      if (stopping_ || next_to_claim_ >= total_batches_) return;
      index = next_to_claim_++;
    }
    Slot slot;
    try {
      slot = produce(index);
    } catch (const std::exception& ex) {
      slot.error = ex.what();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_[index] = std::move(slot);
    }
    produced_.notify_all();
  }
}

DataLoader::Slot DataLoader::produce(int64_t batch_index) const {
  Slot slot;
  const int64_t begin = batch_index * options_.batch_size;
  const int64_t end = std::min<int64_t>(begin + options_.batch_size, static_cast<int64_t>(order_.size()));
  const int size = options_.augment ? options_.transform.train_crop : options_.transform.image.size;

  Batch batch;
  std::vector<std::vector<preprocessing::FloatImage>> images;
  for (int64_t pos = begin; pos < end; ++pos) {
    const int64_t idx = order_[static_cast<size_t>(pos)];
    const Example& e = examples_[static_cast<size_t>(idx)];
    std::mt19937_64 rng(derive_seed(options_.seed, static_cast<uint64_t>(epoch_), static_cast<uint64_t>(idx)));
    std::vector<preprocessing::FloatImage> views;
    std::string error;
    for (const auto& path : e.image_paths) {
      auto image = reader_(path);
      if (!image.ok()) {
        error = std::string(image.status().message());
        if (error.find(path) == std::string::npos) error = path + ": " + error;
        break;
      }
      try {
        views.push_back(options_.augment ? train_transform(*image, options_.transform, rng)
                                         : eval_transform(*image, options_.transform));
      } catch (const std::exception& ex) {
        error = path + ": " + ex.what();
        break;
      }
    }
    if (!error.empty()) {
      std::string message = "study '" + e.id + "': cannot use image " + error;
      if (options_.on_bad_image == BadImagePolicy::kFatal) {
        slot.error = message;
        return slot;
      }
      batch.skipped.push_back(message);
      continue;
    }
    batch.ids.push_back(e.id);
    batch.indices.push_back(idx);
    images.push_back(std::move(views));
  }

  const int64_t b = static_cast<int64_t>(images.size());
  if (b == 0) {
    slot.batch = std::move(batch);  // everything skipped: next() passes over it
    return slot;
  }
  const int64_t v = static_cast<int64_t>(images[0].size());
  batch.images = torch::empty({b, v, 3, size, size}, torch::kFloat);
  float* dst = batch.images.data_ptr<float>();
  const size_t per_image = static_cast<size_t>(3) * size * size;
  for (const auto& study : images) {
    for (const auto& img : study) {
      TORCH_CHECK(img.data.size() == per_image, "transformed image has ", img.data.size(), " values, want ", per_image);
      std::memcpy(dst, img.data.data(), per_image * sizeof(float));
      dst += per_image;
    }
  }
  int64_t max_len = 0;
  for (int64_t idx : batch.indices) {
    max_len = std::max<int64_t>(max_len, static_cast<int64_t>(examples_[static_cast<size_t>(idx)].ids.size()));
  }
  batch.targets = torch::zeros({b, max_len}, torch::kLong);
  batch.masks = torch::zeros({b, max_len}, torch::kFloat);
  auto targets = batch.targets.accessor<int64_t, 2>();
  auto masks = batch.masks.accessor<float, 2>();
  for (int64_t i = 0; i < b; ++i) {
    const auto& ids = examples_[static_cast<size_t>(batch.indices[static_cast<size_t>(i)])].ids;
    for (size_t t = 0; t < ids.size(); ++t) {
      targets[i][static_cast<int64_t>(t)] = ids[t];
      masks[i][static_cast<int64_t>(t)] = 1.0f;
    }
  }
  slot.batch = std::move(batch);
  return slot;
}

std::optional<Batch> DataLoader::next() {
  while (true) {
    Slot slot;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (next_to_return_ >= total_batches_) return std::nullopt;
      if (workers_.empty()) {
        // No worker threads: decode here.
        const int64_t index = next_to_return_;
        lock.unlock();
        slot = produce(index);
        lock.lock();
      } else {
        produced_.wait(lock, [&] { return ready_.count(next_to_return_) > 0; });
        slot = std::move(ready_[next_to_return_]);
        ready_.erase(next_to_return_);
      }
      ++next_to_return_;
    }
    consumed_.notify_all();
    TORCH_CHECK(slot.error.empty(), slot.error);
    if (slot.batch && !slot.batch->ids.empty()) return std::move(slot.batch);
    // all studies of this batch were skipped: report and go on
    if (slot.batch) {
      for (const auto& m : slot.batch->skipped) LOG(WARNING) << m;
    }
  }
}

}  // namespace cmn::train
