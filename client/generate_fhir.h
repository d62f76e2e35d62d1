#pragma once
// cmn-generate --fhir-dir: each reported DICOM study's FHIR R4 DiagnosticReport (cmn/pipeline/fhir_report.h),
// written atomically as DIR/<study key>.json before the study's line is appended (a line in the output means
// its file exists).
#include <string>

#include <nlohmann/json.hpp>

#include "cmn/pipeline/report_generator.h"

namespace cmn::client {

// From the line's "study" (StudyInstanceUID) and "report". Adds "fhir_file", or "fhir_error" (the study itself
// still counts as reported). Lines without a report (failed) or without a StudyInstanceUID (image studies) are
// left as they are. The line's "consistency", when there, goes into the report (warned under warn_below > 0).
void add_fhir(const std::string& fhir_dir, const pipeline::ModelIdentity& id, double warn_below, nlohmann::json& line);

}  // namespace cmn::client
