#pragma once
// A model bundle: the directory a server or the batch CLI loads (DESIGN.md, "Model bundle").
//
//   model.yaml   name, version, untrained, intended_use, architecture (R2GenCMN argument names), decoding
//                defaults, preprocessing, weights file name and format
//   weights.pth  R2GenCMN checkpoint ({epoch, state_dict, optimizer, monitor_best}, torch.save zip format),
//                loadable by torch.load in Python as well
//   vocab.txt    one token per line; line i (from 0) is id i+1 (id 0 = bos = eos = pad)
//   SHA256SUMS   `sha256sum` output ("<64 hex>  <file>") covering the three files above
//
// The bundle's identity is `digest` = "sha256:" + SHA-256 of the SHA256SUMS bytes: it changes whenever any
// covered file changes, and costs one tiny hash once the files are verified. Servers report it next to the
// model name so a report can be traced to the exact weights that wrote it.
//
// This header holds what a bundle says (no LibTorch: servers and tools that only read bundles include it);
// bundle.h loads, writes and imports the weights.
//
// Everything here returns absl::Status naming the file (and the YAML key) at fault; c10::Error and
// std::exception from model code are caught at this seam and never escape.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cmn/model/config.h"
#include "cmn/model/tokenizer.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::pipeline {

// File names inside a bundle directory (the weights file name is configurable in model.yaml, but the tools
// here always write this one).
inline constexpr char kModelYaml[] = "model.yaml";
inline constexpr char kDefaultWeightsFile[] = "weights.pth";
inline constexpr char kVocabFile[] = "vocab.txt";
inline constexpr char kChecksumFile[] = "SHA256SUMS";
// The only `weights_format` so far: a torch.save zip holding an R2GenCMN state_dict (see model/checkpoint.h).
inline constexpr char kWeightsFormatR2GenCMN[] = "r2gencmn_pth";

// What model.yaml says, plus where the bundle is and its digest. model.yaml layout (every key shown; the
// ones marked optional take the default of the field below):
//   name: iu-xray-cmn                  version: "1.0"          untrained: false
//   intended_use: "..."                (optional)
//   architecture: {visual_extractor, d_vf, d_model, d_ff, num_heads, num_layers, cmm_size, cmm_dim, topk,
//                  use_bn, dropout, drop_prob_lm, vocab_size, views, dataset_name, threshold}
//                  (each optional except views; vocab_size 0/absent = the vocab.txt line count)
//   decoding:     {beam_size, max_seq_length, sample_method, temperature, block_trigrams, length_penalty,
//                  seed}   (optional)
//   preprocessing: {image_size, mean: [r, g, b], std: [r, g, b]}   (optional)
//   weights: weights.pth               weights_format: r2gencmn_pth
//   weights_dtype: float16             (optional; how the floating tensors are stored, they load as float32)
// Any other key, at any level, is an error naming it: a typo must not silently fall back to a default.
struct BundleInfo {
  std::string name;                     // model name, shown in logs, responses and the DICOM SR device context
  std::string version;                  // free text ("1.0", "2024-05-01"); a YAML number is read as its text
  bool untrained = false;               // true = random weights (demos/tests); servers warn loudly about it
  std::string intended_use;             // human-readable statement of what the model is (not) for
  model::ModelConfig config;            // architecture + decoding defaults, R2GenCMN argument names
  preprocessing::ImageOptions image;    // `preprocessing` section: resize target and ImageNet mean/std
  // `preprocessing.allowed_modalities`: DICOM modalities this model reads; instances of others are skipped
  // (with the reason) when a study is assembled. Chest radiographs by default.
  std::vector<std::string> allowed_modalities = {"CR", "DX", "DR"};
  std::string weights_file = kDefaultWeightsFile;   // file name inside the bundle (no '/')
  std::string weights_format = kWeightsFormatR2GenCMN;
  std::string weights_dtype = "float32";            // float32 | float16 (storage only)

  // Filled by read_bundle_info; ignored by write_bundle.
  std::string dir;                      // the bundle directory as given
  std::string digest;                   // "sha256:<64 hex>" of the SHA256SUMS content
};

// Parses and validates model.yaml, then checks every SHA256SUMS line against the file it names. Errors:
// NotFound (no directory / missing file), DataLoss (checksum mismatch, naming the file),
// InvalidArgument (bad YAML, unknown key, bad value, a required file not covered by SHA256SUMS).
// Reads each covered file once (the weights are streamed through the hash, not held in memory).
absl::StatusOr<BundleInfo> read_bundle_info(const std::string& dir);

// --- helpers, public for tools and tests ---

// Lower-case hex SHA-256 of a file, streamed in 1 MiB blocks (OpenSSL EVP). NotFound if it cannot be opened.
absl::StatusOr<std::string> sha256_file(const std::string& path);
// Lower-case hex SHA-256 of bytes.
std::string sha256_hex(const std::string& bytes);

// (Re)writes dir/SHA256SUMS over model.yaml, the weights file named in it and vocab.txt (for a bundle whose
// model.yaml was edited by hand). Does not validate model.yaml beyond finding `weights`.
absl::Status write_sha256sums(const std::string& dir);

}  // namespace cmn::pipeline
