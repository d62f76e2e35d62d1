#pragma once
// Writing phantom studies to disk: PNG views and an R2Gen annotation.json (what cmn-train reads), DICOM
// studies (what cmn-generate / cmn-server read), and a manifest with the ground truth of every study.
//
// Layout under the output directory:
//   images/<id>/0.png .. 3.png      views in slot order PA, LL, AP, RL (8-bit grey), as select_views fills
//                                   a 4-view model's slots from the DICOM study (frontal, paired lateral, ...)
//   dicom/<id>/0.dcm .. 3.dcm       the same views as CR or DX instances (with --dicom)
//   annotation.json                 {"train": [...], "val": [...], "test": [...]}, R2Gen entries
//                                   {"id", "report", "image_path": ["<id>/0.png", ...], "split"}
//   manifest.jsonl                  one line per study: id, split, seed, findings, geometry, view files
// Every file is written durably (temporary name, fsync, rename), so a killed run leaves whole files only.
#include <array>
#include <cstdint>
#include <string>

#include <opencv2/core.hpp>

#include "cmn/phantom/phantom.h"

namespace cmn::phantom {

enum class TransferSyntax { kExplicitLittle, kImplicitLittle, kRleLossless, kJpegLossless, kJpegLsLossless };
const char* transfer_syntax_name(TransferSyntax t);  // "explicit-le", "implicit-le", "rle", "jpeg-lossless", "jpeg-ls"

struct DicomViewOptions {
  std::string modality = "CR";  // CR (SOP class CR Image Storage) or DX (Digital X-Ray For Presentation)
  bool monochrome1 = false;     // store inverted (bone dark), as many CR plates do
  TransferSyntax syntax = TransferSyntax::kExplicitLittle;
};

struct DicomIdentity {
  std::string study_uid, series_uid, sop_uid;
  std::string patient_id = "PHANTOM";
  std::string study_id;          // Study ID and Accession Number
  int series_number = 1, instance_number = 1;
};

// One view as a Part 10 file: 12 bits stored in 16, Window 2048/4096 (the 8-bit image comes back on reading),
// View Position, Image Laterality, Body Part CHEST. Throws std::runtime_error naming the path on failure.
void write_dicom_view(const std::string& path, const cv::Mat& image8, const std::string& view_position,
                      const DicomViewOptions& options, const DicomIdentity& identity);

struct DatasetOptions {
  int studies = 100;
  uint64_t seed = 1;
  double val_fraction = 0.1;    // splits by index: train first, then val, then test
  double test_fraction = 0.2;
  bool png = true;
  bool dicom = false;
  RenderOptions render;
  DrawOptions draw;
  const SentenceBank* bank = nullptr;  // real sentences instead of the templates
};

struct DatasetSummary {
  int train = 0, val = 0, test = 0;
  std::array<int, kNumFindings> positives{};  // studies with each finding
  int normal = 0;
};

// Writes `options.studies` studies under `out_dir` (created). Throws std::runtime_error naming the path.
DatasetSummary write_dataset(const std::string& out_dir, const DatasetOptions& options);

// Seed of study `index` in a dataset seeded with `seed` (what the manifest records).
uint64_t study_seed(uint64_t dataset_seed, int index);

// Replaces `path` with `bytes` durably (cmn/common/durable_write.h: temporary file beside it, fsync, rename,
// fsync of the folder). Throws std::runtime_error naming the path and the reason.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace cmn::phantom
