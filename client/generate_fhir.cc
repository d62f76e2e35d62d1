#include "generate_fhir.h"

#include <filesystem>
#include <system_error>

#include "cmn/common/file_util.h"
#include "cmn/batch/batch.h"
#include "cmn/pipeline/fhir_report.h"

namespace cmn::client {

void add_fhir(const std::string& fhir_dir, const pipeline::ModelIdentity& id, double warn_below, nlohmann::json& line) {
  if (!line.contains("report") || !line.contains("study") || !line["study"].is_string()) return;
  pipeline::FhirReportInput input;
  input.study_instance_uid = line["study"].get<std::string>();
  input.text = line["report"].get<std::string>();
  input.model = {id.name, id.version, id.digest, "cmn", id.untrained};
  if (line.contains("consistency") && line["consistency"].is_number()) input.consistency = line["consistency"].get<double>();
  input.consistency_warn_below = warn_below;
  auto report = pipeline::write_fhir_report(input);
  if (!report.ok()) {
    line["fhir_error"] = std::string(report.status().message());
    return;
  }
  std::error_code ec;
  std::filesystem::create_directories(fhir_dir, ec);
  const std::string path =
      (std::filesystem::path(fhir_dir) / (batch::safe_file_name(line["id"].get<std::string>()) + ".json")).string();
  if (!write_file_atomically(path, *report + "\n").ok()) {
    line["fhir_error"] = "cannot write '" + path + "'";
    return;
  }
  line["fhir_file"] = path;
}

}  // namespace cmn::client
