#include "cmn/pipeline/fhir_report.h"

#include <openssl/sha.h>

#include <cmath>
#include <ctime>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cmn/metrics/observations.h"
#include "cmn/pipeline/consistency.h"

namespace cmn::pipeline {

namespace {

using nlohmann::json;

constexpr char kLoinc[] = "http://loinc.org";
constexpr char kSnomed[] = "http://snomed.info/sct";

std::string base64(const std::string& bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                       static_cast<uint8_t>(bytes[i + 2]);
    out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63], kAlphabet[v & 63]};
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    out += {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63], '='};
  }
  return out;
}

bool is_dicom_uid(const std::string& uid) {
  if (uid.empty() || uid.size() > 64 || uid.front() == '.' || uid.back() == '.') return false;
  for (size_t i = 0; i < uid.size(); ++i) {
    const char c = uid[i];
    if (c == '.') {
      if (uid[i + 1] == '.') return false;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return true;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json coding(const char* system, const std::string& code, const std::string& display) {
  return {{"system", system}, {"code", code}, {"display", display}};
}

// SNOMED CT qualifier values for the three states CheXpert distinguishes. "Uncertain" (CheXpert -1: "may
// represent", "possible") is "Possible diagnosis", the qualifier SNOMED CT has for a finding that is suspected.
json state_value(metrics::StatedObservation::State state) {
  switch (state) {
    case metrics::StatedObservation::State::kPresent: return coding(kSnomed, "52101004", "Present");
    case metrics::StatedObservation::State::kAbsent: return coding(kSnomed, "2667000", "Absent");
    case metrics::StatedObservation::State::kUncertain: return coding(kSnomed, "60022001", "Possible diagnosis");
  }
  return json();
}

std::string untrained_statement(const FhirModel& model) {
  return absl::StrCat("UNTRAINED model ", model.name, " (random weights): this text is not a report.");
}

}  // namespace

std::string fhir_report_identifier(const FhirReportInput& input) {
  // Length-prefixed fields, so that no two inputs share the hashed bytes.
  std::string bytes;
  for (const std::string* s : {&input.study_instance_uid, &input.model.digest, &input.model.name,
                               &input.model.version, &input.text}) {
    absl::StrAppend(&bytes, s->size(), ":", *s, ";");
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  // An RFC 4122 name-based UUID layout (version 8 bits: custom hash) over the first 16 bytes.
  digest[6] = static_cast<unsigned char>((digest[6] & 0x0f) | 0x80);
  digest[8] = static_cast<unsigned char>((digest[8] & 0x3f) | 0x80);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string uuid = "urn:uuid:";
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) uuid += '-';
    uuid += kHex[digest[i] >> 4];
    uuid += kHex[digest[i] & 15];
  }
  return uuid;
}

absl::StatusOr<std::string> write_fhir_report(const FhirReportInput& input) {
  if (!is_dicom_uid(input.study_instance_uid)) {
    return absl::InvalidArgumentError(
        absl::StrCat("FHIR report: study instance UID '", input.study_instance_uid.substr(0, 80),
                     "' is not a DICOM UID (digits and dots, at most 64 characters)"));
  }
  if (input.model.name.empty()) return absl::InvalidArgumentError("FHIR report: the model has no name");
  const FhirModel& model = input.model;
  const std::string issued = input.issued.empty() ? utc_now() : input.issued;
  const std::string effective = input.effective.empty() ? issued : input.effective;
  const std::string conclusion =
      model.untrained ? absl::StrCat(untrained_statement(model), " ", input.text) : input.text;

  // The model as a Device (IHE AIR's algorithm identification: name, version, and the bundle digest, which
  // changes whenever the weights do).
  json device = {{"resourceType", "Device"},
                 {"id", "model"},
                 {"status", "active"},
                 {"manufacturer", model.manufacturer},
                 {"deviceName", json::array({{{"name", model.name}, {"type", "model-name"}}})},
                 {"type", {{"text", "AI chest X-ray report generator (R2GenCMN)"}}}};
  if (!model.version.empty()) device["version"] = json::array({{{"value", model.version}}});
  if (!model.digest.empty()) {
    device["identifier"] = json::array(
        {{{"type", {{"text", "model bundle SHA-256 digest"}}}, {"value", model.digest}}});
  }
  if (model.untrained) device["note"] = json::array({{{"text", untrained_statement(model)}}});

  json contained = json::array({device});
  json result = json::array();
  json conclusion_codes = json::array();
  const json device_ref = {{"reference", "#model"}};
  const json category = json::array(
      {{{"coding", json::array({coding("http://terminology.hl7.org/CodeSystem/observation-category", "imaging",
                                       "Imaging")})}}});

  // Coded observations: not for an untrained model, whose words are random.
  if (!model.untrained) {
    int n = 0;
    for (const auto& stated : metrics::stated_observations(input.text)) {
      const metrics::ObservationCode code = metrics::observation_code(stated.name);
      if (code.code.empty()) continue;  // an observation without a code cannot be sent coded
      const std::string id = absl::StrCat("obs-", n++);
      json concept_ = {{"coding", json::array({coding(kSnomed, code.code, code.meaning)})}, {"text", stated.name}};
      contained.push_back({{"resourceType", "Observation"},
                           {"id", id},
                           {"status", "preliminary"},
                           {"category", category},
                           {"code", concept_},
                           {"effectiveDateTime", effective},
                           {"issued", issued},
                           {"valueCodeableConcept",
                            {{"coding", json::array({state_value(stated.state)})},
                             {"text", metrics::state_name(stated.state)}}},
                           {"device", device_ref}});
      result.push_back({{"reference", "#" + id}});
      if (stated.state == metrics::StatedObservation::State::kPresent) conclusion_codes.push_back(concept_);
    }
  }
  // The text as an observation made by the device: references the Device in every case (see the header).
  contained.push_back({{"resourceType", "Observation"},
                       {"id", "text"},
                       {"status", "preliminary"},
                       {"category", category},
                       {"code", {{"coding", json::array({coding(kLoinc, "18782-3",
                                                                "Radiology Study observation (narrative)")})}}},
                       {"effectiveDateTime", effective},
                       {"issued", issued},
                       {"valueString", conclusion.empty() ? std::string("(empty report)") : conclusion},
                       {"device", device_ref}});
  if (consistency_is_low(input.consistency, input.consistency_warn_below)) {
    contained.back()["note"] = json::array({{{"text", consistency_statement(*input.consistency,
                                                                           input.consistency_warn_below)}}});
  }
  result.push_back({{"reference", "#text"}});

  const std::string title = absl::StrCat("AI draft report (unverified) by ", model.name,
                                         model.version.empty() ? "" : " " + model.version,
                                         model.untrained ? " - UNTRAINED model, not a report" : "");
  json report = {
      {"resourceType", "DiagnosticReport"},
      {"language", "en"},
      {"contained", contained},
      {"identifier", json::array({{{"system", "urn:ietf:rfc:3986"}, {"value", fhir_report_identifier(input)}}})},
      {"status", "preliminary"},
      {"category", json::array({{{"coding", json::array({coding("http://terminology.hl7.org/CodeSystem/v2-0074",
                                                                "RAD", "Radiology")})}}})},
      // 18748-4 "Diagnostic imaging study": the code DICOM's TID 2000 gives the same report (cmn's SR root), and
      // right whatever views a bundle takes (2 for IU X-Ray, 4 for the phantoms); a view-specific code such as
      // 36643-5 "XR Chest 2 Views" would be wrong for some bundles and is the order's to say.
      {"code", {{"coding", json::array({coding(kLoinc, "18748-4", "Diagnostic imaging study")})},
                {"text", "Chest X-ray report (AI draft)"}}},
      {"effectiveDateTime", effective},
      {"issued", issued},
      {"imagingStudy", json::array({{{"type", "ImagingStudy"},
                                     {"identifier", {{"system", "urn:dicom:uid"},
                                                     {"value", "urn:oid:" + input.study_instance_uid}}}}})},
      {"result", result},
      {"presentedForm", json::array({{{"contentType", "text/plain; charset=utf-8"},
                                      {"language", "en"},
                                      {"data", base64(conclusion)},
                                      {"title", title}}})},
  };
  if (input.consistency) {
    // Three decimals, as every other output prints it (a JSON number: FHIR decimals keep their precision).
    const double rounded = std::round(*input.consistency * 1000.0) / 1000.0;
    report["extension"] = json::array({{{"url", kFhirConsistencyExtension}, {"valueDecimal", rounded}}});
  }
  if (!conclusion.empty()) report["conclusion"] = conclusion;
  if (!conclusion_codes.empty()) report["conclusionCode"] = conclusion_codes;
  // Replace, not throw, should a model ever emit bytes that are not UTF-8.
  return report.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace cmn::pipeline
