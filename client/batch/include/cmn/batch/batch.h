#pragma once
// Batch offline generation (cmn-generate over archives; cmn_batch, client/batch/, which only cmn-generate links): which studies there are, which of them this shard
// takes, which are already in the output, and the run itself (read-ahead thread, batched decoding, one
// JSON line appended and flushed per study, progress, summary). Also the merge of shard outputs.
//
// Output lines (JSONL, one per study): "id" (the study key: StudyInstanceUID for DICOM folder trees, the
// manifest's or annotation's id otherwise), for DICOM "study" (StudyInstanceUID), "instances" (slot ->
// instance and why) and "skipped"; for image studies "images"; "model" {name, version, digest, untrained};
// then either "report", "token_ids", "log_prob", "timings" {read_s, preprocess_s, visual_s, encode_s,
// decode_s} or "error" (+ "error_code"). Nothing about the patient beyond the study UID.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cmn/pipeline/annotation.h"
#include "cmn/pipeline/report_generator.h"
#include "cmn/preprocessing/dicom.h"

namespace cmn::batch {

using pipeline::AnnotationExample;
using pipeline::GeneratorOptions;
using pipeline::ReportGenerator;


// ---- studies --------------------------------------------------------------------------------------------

struct BatchStudy {
  enum class Source { kDicom, kImages };
  std::string key;                         // stable study key (sharding, resume, merge)
  Source source = Source::kDicom;
  std::vector<std::string> files;          // DICOM instances, or `views` image files in slot order
  std::optional<std::string> reference;    // the annotation's report, when there is one (scoring)
  bool key_is_study_uid = false;           // folder trees: the key is the StudyInstanceUID
};

struct StudyList {
  std::vector<BatchStudy> studies;         // ordered by key for folder trees; input order otherwise
  std::vector<std::string> file_errors;    // files that could not be used, one message each (no patient data)
};

// Files and folder trees (recursive, names starting with '.' ignored, each file once), read as DICOM and
// grouped by StudyInstanceUID (attributes only: pixels are decoded later, per study).
StudyList list_dicom_studies(const std::vector<std::string>& paths, const preprocessing::DicomReadOptions& read = {});

// A manifest of studies: CSV with a header naming columns "id" and "path" (extra columns ignored; rows with
// the same id add files to one study), or JSONL (".jsonl"/".ndjson") of {"id": ..., "path": "..."} or
// {"id": ..., "paths": [...]}. A path is a file or a folder (recursive); relative paths are relative to the
// manifest's folder. A study whose files are all .png/.jpg/.jpeg is an image study (files in slot order),
// otherwise DICOM. Errors name the manifest line.
absl::StatusOr<StudyList> list_manifest_studies(const std::string& manifest_path);

// cmn-generate --score-reports: a JSONL file of {"id": key, "report": text}, keyed like the studies (an integer id
// is its decimal text). Errors name the file and line: not JSON, no id or report, an id listed twice.
absl::StatusOr<std::map<std::string, std::string>> read_given_reports(const std::string& path);

// An annotation.json split: image_path entries are joined to `image_root`; the report becomes the reference.
StudyList annotation_studies(const std::vector<AnnotationExample>& split, const std::string& image_root);

// ---- sharding -------------------------------------------------------------------------------------------

// 64-bit FNV-1a: stable across machines, builds and runs (std::hash is not).
uint64_t fnv1a64(const std::string& bytes);

struct Shard {
  int64_t index = 0;  // 0-based
  int64_t count = 1;
  std::string text() const { return std::to_string(index) + "/" + std::to_string(count); }
};
// "i/n" with 0 <= i < n.
absl::StatusOr<Shard> parse_shard(const std::string& text);
inline bool in_shard(const std::string& key, const Shard& shard) {
  return fnv1a64(key) % static_cast<uint64_t>(shard.count) == static_cast<uint64_t>(shard.index);
}

// ---- the output file ------------------------------------------------------------------------------------

struct ExistingOutput {
  std::unordered_set<std::string> keys;  // studies already written (reported or failed)
  int64_t lines = 0;
  uint64_t valid_bytes = 0;              // length of the complete lines: a torn tail (a kill mid-write) is cut
  bool torn_tail = false;
};
// A missing file is an empty output. A malformed line that is not the last one is DataLoss naming it.
absl::StatusOr<ExistingOutput> scan_output(const std::string& path);

// Appends one line per call and makes it durable (write + fdatasync) before returning, so a kill loses at
// most the studies still in flight.
class JsonlAppender {
 public:
  // Truncates the file to `keep_bytes` (dropping a torn tail), creating it when missing.
  static absl::StatusOr<JsonlAppender> open(const std::string& path, uint64_t keep_bytes, bool sync = true);
  JsonlAppender(JsonlAppender&& other) noexcept;
  JsonlAppender& operator=(JsonlAppender&& other) noexcept;
  JsonlAppender(const JsonlAppender&) = delete;
  JsonlAppender& operator=(const JsonlAppender&) = delete;
  ~JsonlAppender();
  absl::Status append(const std::string& line);  // `line` without the newline

 private:
  JsonlAppender(int fd, std::string path, bool sync) : fd_(fd), path_(std::move(path)), sync_(sync) {}
  int fd_ = -1;
  std::string path_;
  bool sync_ = true;
};

// The key list a shard's run covers, written beside its output as "<output>.keys.json" ({"shard": "i/n",
// "keys": [...]}) so that a merge can tell a missing study from one that was never in the shard.
std::string keys_file_for(const std::string& output);
absl::Status write_keys_file(const std::string& output, const Shard& shard, const std::vector<std::string>& keys);

// A study key as a file or folder name: anything but [A-Za-z0-9._-] becomes '_' (UIDs and IU ids pass
// unchanged). Used for --attention-dir and --sr-dir.
std::string safe_file_name(const std::string& key);

// ---- the run --------------------------------------------------------------------------------------------

struct BatchOptions {
  GeneratorOptions generator;              // decoding, image transform, batch size
  preprocessing::StudyOptions study;       // DICOM assembly (views, modalities)
  bool read_ahead = true;                  // read/decode DICOM and images on a thread ahead of the model
  std::string attention_dir;               // non-empty: per-sentence attention PNGs in <dir>/<key>/
  std::string progress = "auto";           // auto (stderr is a terminal) | always | never
  // A line whose consistency is below this (> 0) gets "consistency_warning" (cmn/pipeline/consistency.h).
  double consistency_warn_below = 0.0;
  // --score-reports: study key -> a given report. Set: each study's given report is scored (teacher-forced
  // log-prob, consistency) instead of a draft being written; a study without one fails (NotFound).
  const std::map<std::string, std::string>* score_reports = nullptr;
};

struct BatchSummary {
  int64_t total = 0;                            // studies in this run's list (after sharding)
  int64_t done = 0;                             // reported now
  int64_t skipped = 0;                          // already in the output
  int64_t failed = 0;                           // written with an error now
  std::map<std::string, int64_t> failed_by_reason;  // absl status code name -> count
  double elapsed_s = 0.0;
  double studies_per_s = 0.0;                   // (done + failed) / elapsed_s
};

// Runs `studies` (already without the skipped ones) through the generator and calls `emit` with each
// study's JSON line, in input order, as soon as its batch is decoded. Bad studies are lines with "error";
// they never stop the run. An `emit` error stops it (the output can no longer be written).
absl::StatusOr<BatchSummary> run_batch(ReportGenerator& generator, const std::vector<BatchStudy>& studies,
                                       const BatchOptions& options,
                                       const std::function<absl::Status(const std::string& line)>& emit);

// ---- merge ----------------------------------------------------------------------------------------------

struct MergeResult {
  int64_t lines = 0;                       // studies in the merged output
  int64_t failed = 0;                      // of them, lines with "error"
  std::vector<std::string> problems;       // missing / duplicated keys, shard set gaps, torn tails (notes)
  bool ok = false;                         // no missing or duplicated study, complete shard set
};
// Joins shard outputs (in the order given) into `output` (written atomically, only when ok or `force`).
// Uses each input's keys file when present to find missing studies and checks the shards form 0..n-1.
absl::StatusOr<MergeResult> merge_outputs(const std::vector<std::string>& inputs, const std::string& output,
                                          bool force = false);

}  // namespace cmn::batch
