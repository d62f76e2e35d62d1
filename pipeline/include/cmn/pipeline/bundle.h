#pragma once
// Model bundles with their weights: load, write, import an R2GenCMN checkpoint, make the untrained demo bundle.
// What a bundle is and says: bundle_info.h. Errors are absl::Status naming the file; c10::Error and
// std::exception from model code are caught at this seam and never escape.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cmn/model/r2gencmn.h"
#include "cmn/model/tokenizer.h"
#include "cmn/pipeline/bundle_info.h"

namespace cmn::pipeline {

// A bundle ready to decode with: the tokenizer uses the dataset's cleaning rule (model::cleaning_rule_for_
// dataset(config.dataset_name)); the model is on the CPU in eval mode, config.vocab_size = tokenizer size.
struct LoadedBundle {
  BundleInfo info;
  model::Tokenizer tokenizer;
  model::R2GenCMN model{nullptr};
};

// read_bundle_info + vocab.txt + weights. vocab.txt must have architecture.vocab_size lines when that key is
// non-zero, and the weights must fit the architecture exactly (missing/unexpected/mis-shaped keys are listed).
absl::StatusOr<LoadedBundle> load_bundle(const std::string& dir);

struct WriteBundleOptions {
  bool overwrite = false;  // replace an existing non-empty `dir` (an empty one is always replaced)
};

// Writes a complete bundle: everything goes into a fresh temporary directory beside `dir` (same file system)
// that is renamed to `dir` only when all four files are written and hashed, so readers never see half a
// bundle. The architecture written is model->config()'s (the weights fit it); decoding defaults come from
// meta.config; vocab_size is the tokenizer's and must match the model's logit layer. meta.digest/dir are
// ignored. With overwrite, an existing bundle is swapped out atomically (renameat2 RENAME_EXCHANGE) and
// then deleted.
absl::Status write_bundle(const std::string& dir, const BundleInfo& meta, model::R2GenCMN& model,
                          const model::Tokenizer& tokenizer, const WriteBundleOptions& options = {});

struct ImportOptions {
  std::string name = "r2gencmn";   // bundle name
  std::string version = "1";       // bundle version
  std::string intended_use;        // "" = a research-use statement naming the source checkpoint
  // "" = keep the dtype the checkpoint stores its floating tensors in (float16 stays float16, no loss);
  // "float32" | "float16" to force one.
  std::string weights_dtype;
  bool overwrite = false;          // see WriteBundleOptions
};

// Turns a published R2GenCMN checkpoint into a bundle (untrained: false):
//   args_json        the run's arguments (main_train.py names; unknown keys ignored), e.g. parity/dev/config.json
//   annotation_json  {"train": [{"report": ...}, ...], ...}: the vocabulary is rebuilt from the train split
//                    with args.dataset_name's cleaning rule and args.threshold, as R2GenCMN's Tokenizer does
// The tokenizer's size must equal the checkpoint's logit rows - 1 (and args.vocab_size when present).
// Returns the written bundle's info (with digest), as read back from out_dir.
absl::StatusOr<BundleInfo> import_r2gencmn(const std::string& checkpoint_pth, const std::string& args_json,
                                           const std::string& annotation_json, const std::string& out_dir,
                                           const ImportOptions& options = {});

struct InitUntrainedOptions {
  // Vocabulary source: exactly one of the two. A vocab file is used as is (sorted list with "<unk>", e.g.
  // configs/default_vocab.txt); an annotation.json is tokenised as import_r2gencmn does.
  std::string vocab_file;
  std::string annotation_json;
  int64_t views = 4;                   // images per study, 1..4
  uint64_t seed = 1;                   // torch::manual_seed before the weights are drawn: same seed, same bundle
  std::string name = "cmn-untrained";  // bundle name
  std::string version = "0";           // bundle version
  std::string dataset_name = "iu_xray";  // cleaning rule (and threshold source when tokenising annotations)
  int threshold = 3;                   // annotation_json only: vocabulary count threshold
  std::string weights_dtype = "float16";  // random weights lose nothing that matters; halves the file
  bool overwrite = false;              // see WriteBundleOptions
  int64_t align_queries = 0;           // > 0: with an (untrained) alignment head, so consistency is computed
};

// A randomly initialised R2GenCMN (published architecture, ModelConfig defaults) as a bundle marked
// untrained: true. For pipeline demos and tests where no trained weights may be shipped.
absl::StatusOr<BundleInfo> init_untrained(const std::string& out_dir, const InitUntrainedOptions& options);

}  // namespace cmn::pipeline
