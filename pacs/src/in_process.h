#pragma once
// cmn-pacs without a cmn-server (--bundle): the model runs inside cmn-pacs, through the same pipeline the
// server uses (assemble_study -> ReportGenerator -> write_report_sr). Private to cmn_pacs_loop; torch stays out
// of pacs_loop.h.
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cmn/pipeline/dicom_sr.h"

namespace cmn::pacs {

struct InProcessReport {
  std::string report;      // the text
  std::string dicom_sr;    // Part 10 SR
  std::string fhir;        // FHIR R4 DiagnosticReport (JSON), as cmn-server's output.fhir
  int slots = 0;
};

class InProcessReporter {
 public:
  // Loads and verifies the bundle; `threads` LibTorch intra-op threads (0 = one per core). `sr` gives the UID
  // root and series description; the model name, version and untrained flag come from the bundle.
  static absl::StatusOr<std::unique_ptr<InProcessReporter>> load(const std::string& bundle_dir, int threads,
                                                                 const pipeline::SrOptions& sr);
  virtual ~InProcessReporter() = default;
  // "<name> <version>" (what the SR's ManufacturerModelName says).
  virtual const std::string& model_key() const = 0;
  // The study's instances (Part 10 bytes) -> report and SR. InvalidArgument when the study has no usable image.
  virtual absl::StatusOr<InProcessReport> report(const std::vector<std::string>& instances) = 0;
};

}  // namespace cmn::pacs
