#pragma once
// R2Gen-format data for training and evaluation: annotation.json splits + an image root -> batches of
// [B,V,3,224,224] images with padded token targets, as R2GenCMN's datasets.py / dataloaders.py make them.
//
// Differences from the reference, all deliberate:
//   - any number of views per study: the first V image paths are used, and a study with M < V images repeats
//     them (slot k takes image k mod M), as the DICOM issue's view selection fills slots;
//   - decoding and augmentation run on worker threads with a bounded prefetch queue, and are deterministic
//     under a seed whatever the thread count (the order of epoch e and every crop/flip of example i in epoch
//     e are functions of (seed, e, i) only; torch's RNG is never touched, so it stays the model's);
//   - a missing or corrupt image is reported with its path and either skipped (the study is left out of its
//     batch) or fatal, by a setting.
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <opencv2/core.hpp>
#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "cmn/model/tokenizer.h"
#include "cmn/pipeline/annotation.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::train {

// What to do with a study whose image cannot be read.
enum class BadImagePolicy { kSkip, kFatal };
BadImagePolicy parse_bad_image_policy(const std::string& name);  // "skip" | "fatal"

// Image file -> 8-bit image (CV_8UC3 R,G,B or CV_8UC1 grey). The default reads PNG/JPEG with
// preprocessing::read_rgb8 and DICOM (.dcm / .dicom, any case) with preprocessing::read_dicom_file.
using ImageReader = std::function<absl::StatusOr<cv::Mat>(const std::string& path)>;
absl::StatusOr<cv::Mat> read_training_image(const std::string& path);

struct TransformOptions {
  // Training (transforms.Resize(256), RandomCrop(224), RandomHorizontalFlip(), ToTensor, Normalize):
  int train_resize = 256;       // the SHORTER side is resized to this, keeping the aspect ratio (PIL bilinear)
  int train_crop = 224;         // square random crop (uniform offsets, as RandomCrop)
  bool horizontal_flip = true;  // p = 0.5
  // Evaluation: Resize((size, size)) + Normalize with these (the model's test transform).
  preprocessing::ImageOptions image;
};

// torchvision's Resize(int) output size for an image of width x height: the shorter side becomes `size`, the
// longer int(size * long / short) (Python's truncation). Returns (width, height).
std::pair<int, int> resize_shorter_side(int width, int height, int size);

// The training transform of one image; `rng` decides crop offsets and flip. Returns CHW floats, train_crop^2.
preprocessing::FloatImage train_transform(const cv::Mat& image8, const TransformOptions& options, std::mt19937_64& rng);
// The evaluation transform (preprocessing::to_model_input).
preprocessing::FloatImage eval_transform(const cv::Mat& image8, const TransformOptions& options);

// The first `views` paths; fewer are filled by repeating (slot k = paths[k % M]). Empty paths -> empty.
std::vector<std::string> select_view_paths(const std::vector<std::string>& paths, int64_t views);

// One study, ready for the loader.
struct Example {
  std::string id;
  std::string report;                  // as in annotation.json
  std::vector<std::string> image_paths;  // exactly `views` full paths (image_dir joined)
  std::vector<int64_t> ids;            // tokenizer(report)[:max_seq_length] (0 at both ends unless truncated)
};

struct ExampleOptions {
  std::string image_dir;               // joined in front of every image_path ("" = paths used as they are)
  int64_t views = 2;                   // the model's N
  int64_t max_seq_length = 60;         // --max_seq_length: ids are cut to this many (bos included)
};
// A study without any image path is an error naming its id.
std::vector<Example> make_examples(const std::vector<pipeline::AnnotationExample>& split, const model::Tokenizer& tokenizer,
                                   const ExampleOptions& options);

struct Batch {
  std::vector<std::string> ids;        // study ids, in batch order
  std::vector<int64_t> indices;        // their indices in the loader's example list
  torch::Tensor images;                // [B,V,3,S,S] float32
  torch::Tensor targets;               // [B,L] int64, padded with 0 to the longest in the batch
  torch::Tensor masks;                 // [B,L] float32, 1 on tokens
  std::vector<std::string> skipped;    // "study <id>: <error naming the path>" for studies left out (kSkip)
};

struct LoaderOptions {
  int64_t batch_size = 16;
  bool shuffle = false;                // new order each epoch (train split)
  bool augment = false;                // training transform (else the evaluation transform)
  bool drop_last = false;              // R2GenCMN keeps the last partial batch
  uint64_t seed = 9233;                // order and augmentation seed
  int num_workers = 2;                 // decoding threads (0 = decode on the calling thread)
  int prefetch_batches = 4;            // batches decoded ahead at most (the bounded queue)
  BadImagePolicy on_bad_image = BadImagePolicy::kSkip;
  TransformOptions transform;
  ImageReader reader;                  // empty = read_training_image
};

// Batches of one split, epoch by epoch. Not thread-safe: one consumer.
class DataLoader {
 public:
  DataLoader(std::vector<Example> examples, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Example order of an epoch (a permutation when shuffling, else 0..n-1): a function of (seed, epoch) only.
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  int64_t num_batches() const;
  int64_t size() const { return static_cast<int64_t>(examples_.size()); }
  const std::vector<Example>& examples() const { return examples_; }
  const LoaderOptions& options() const { return options_; }

  // Starts (or restarts) decoding epoch `epoch` (numbered from 1 as the trainer does; any value works).
  void start_epoch(int64_t epoch);
  // The next batch of the current epoch; nullopt when it is over. With kFatal, an unreadable image throws
  // c10::Error naming the study and the path. With kSkip, a batch whose studies were all skipped is passed over.
  std::optional<Batch> next();

 private:
  struct Slot {
    std::optional<Batch> batch;
    std::string error;  // kFatal: the study and path that failed (thrown by next())
  };
  void stop_workers();
  void worker_loop();
  Slot produce(int64_t batch_index) const;

  std::vector<Example> examples_;
  LoaderOptions options_;
  ImageReader reader_;

  // Current epoch; guarded by mutex_ except for fields fixed while workers run.
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;
  int64_t total_batches_ = 0;
  std::mutex mutex_;
  std::condition_variable produced_, consumed_;
  std::map<int64_t, Slot> ready_;
  int64_t next_to_claim_ = 0;
  int64_t next_to_return_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace cmn::train
