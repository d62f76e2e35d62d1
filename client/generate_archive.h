#pragma once
// cmn-generate's archive mode (--dicom, --manifest, --split) and its merge subcommand, over cmn_batch: list the
// studies, keep this shard's, skip those already in --output, run the rest (one synced line each, SR / FHIR files
// beside), then the summary, with BLEU/METEOR/ROUGE-L/CIDEr and CheXpert-14 CE scores for --split.
#include <string>
#include <vector>

#include "cmn/batch/batch.h"
#include "cmn/pipeline/report_generator.h"

namespace cmn::client {

struct ArchiveRequest {
  std::vector<std::string> dicom_paths;
  std::string manifest, annotation, split, image_root;
  std::vector<std::string> modalities;
  std::string output;
  bool overwrite = false;
  cmn::batch::Shard shard;
  bool sharded = false;
  bool fail_on_error = false;
  bool read_ahead = true;
  std::string progress, attention_dir, summary_path, sr_dir, findings_sr_dir, fhir_dir;
  // --draft-decode: JPEG 2000 / 8-bit JPEG decoded at the smallest size still covering the model input
  // (DicomReadOptions::draft_min_side = the model's image size).
  bool draft_decode = false;
  // --consistency-warn-below: lines (and their SR / FHIR) of drafts under it carry the low-consistency warning.
  double consistency_warn_below = 0.0;
  // --score-reports: JSONL of {"id", "report"}; each study's given report is scored instead of generated.
  std::string score_reports;
};

// Exit status: 0; 1 when a study failed and the run writes to stdout or --fail-on-error was given, or the model
// or the output failed.
int run_archive(pipeline::ReportGenerator& generator, const pipeline::GeneratorOptions& options,
                const ArchiveRequest& req);

// `cmn-generate merge`: 0 when the shards are complete (and the output written), else 1.
int run_merge(const std::vector<std::string>& inputs, const std::string& output, bool force);

}  // namespace cmn::client
