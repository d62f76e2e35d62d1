#pragma once
// The report as a FHIR R4 DiagnosticReport (JSON), for EHRs (issue 12 part 5). Library `cmn_fhir`: no LibTorch,
// no DCMTK; nlohmann-json, OpenSSL (SHA-256 for the stable identifier) and cpp-httplib (the POST) stay private.
//
// Resource written by write_fhir_report (FHIR R4 4.0.1, base DiagnosticReport, no profile claimed):
//   DiagnosticReport
//     contained   Device "model"        the model: deviceName (model-name), version, manufacturer, identifier with
//                                       the bundle digest ("sha256:..."), a note when untrained
//                 Observation "obs-N"   one per CheXpert observation the report states (present / absent /
//                                       uncertain; cmn/metrics/observations.h): code = the observation's SNOMED CT
//                                       code, value = SNOMED CT qualifier Present / Absent / Uncertain,
//                                       device -> #model. Left out for an untrained model (its words are noise).
//                 Observation "text"    the report text as "Procedure findings" (LOINC 59776-5), device -> #model:
//                                       always present, so the Device is referenced from the report even when no
//                                       observation is stated (R4's DiagnosticReport.performer cannot reference a
//                                       Device; Observation.device can, as the DICOM SR -> FHIR mapping IG does
//                                       for algorithm identification)
//     extension   kFhirConsistencyExtension: valueDecimal = the image-report consistency, when the model has one
//     identifier  urn:ietf:rfc:3986 urn:uuid:<SHA-256 of study UID, model digest and text, as a UUID>: the same
//                 report of the same study by the same model gets the same identifier (conditional create)
//     status      preliminary (a machine draft nobody has signed)
//     category    v2-0074 RAD "Radiology"
//     code        LOINC 18748-4 "Diagnostic imaging study"
//     imagingStudy  {type ImagingStudy, identifier urn:dicom:uid urn:oid:<StudyInstanceUID>} (a logical reference:
//                 a contained ImagingStudy would need a subject, which is the integrator's)
//     effectiveDateTime / issued   FhirReportInput::effective / issued (default: now, UTC)
//     result      -> every contained Observation
//     conclusion  the report text (prefixed with the UNTRAINED statement for an untrained model)
//     conclusionCode  the SNOMED CT codes of the observations stated PRESENT (none for an untrained model)
//     presentedForm   text/plain; charset=utf-8, language en, base64 of the conclusion, title naming the model
//   Not written (the integrator's): subject (Patient), encounter, basedOn (the order), performer /
//   resultsInterpreter (who signs it), specimen, media.
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cmn/pipeline/retry.h"

namespace cmn::pipeline {

struct FhirModel {
  std::string name;               // bundle name (Device.deviceName, type model-name)
  std::string version;            // bundle version (Device.version)
  std::string digest;             // "sha256:..." bundle identity (Device.identifier); may be empty
  std::string manufacturer = "cmn";
  bool untrained = false;         // random weights: the report says its text is not a report
};

struct FhirReportInput {
  std::string study_instance_uid;  // the DICOM study (digits and dots, at most 64 characters)
  std::string text;                // the report text (may be empty: then there is no conclusion to code)
  FhirModel model;
  std::string issued;              // FHIR instant, e.g. "2026-12-04T05:30:00Z"; "" = now (UTC)
  std::string effective;           // FHIR dateTime the report is about; "" = issued (the acquisition time is
                                   // not known to cmn; an integrator may replace it with the study's)
  // The draft's image-report consistency (consistency.h), written as the DiagnosticReport extension
  // kFhirConsistencyExtension (valueDecimal, 3 decimals); when below consistency_warn_below (> 0) the text
  // Observation also gets a note with the low-consistency warning. nullopt: neither (no alignment head).
  std::optional<double> consistency;
  double consistency_warn_below = 0.0;
};

// The extension's canonical URL (a cmn-defined extension; no registry holds one for this yet).
inline constexpr char kFhirConsistencyExtension[] =
    "http://cmn.local/fhir/StructureDefinition/image-report-consistency";

// The DiagnosticReport JSON (compact, UTF-8). InvalidArgument when the study UID is empty or not a DICOM UID,
// or the model has no name.
absl::StatusOr<std::string> write_fhir_report(const FhirReportInput& input);

// The report's identifier value ("urn:uuid:..."), as write_fhir_report writes it (for If-None-Exist and logs:
// it is a hash, it names no patient).
std::string fhir_report_identifier(const FhirReportInput& input);

// A FHIR server's base URL, e.g. "http://127.0.0.1:8080/fhir": the report is POSTed to base_url +
// "/DiagnosticReport" (FHIR create) with Content-Type application/fhir+json.
struct FhirTarget {
  std::string base_url;
  int timeout_s = 60;             // connect, read and write, each
  std::string bearer_token;       // "Authorization: Bearer ..." when not empty
};

// POSTs a DiagnosticReport written by write_fhir_report, with If-None-Exist on its identifier (a server that
// supports conditional create keeps one copy when a retry repeats a POST that did arrive). Success: HTTP 200
// or 201. Errors: InvalidArgument (not http://, or `report_json` is not a DiagnosticReport with an identifier;
// not retried), Unavailable (network / 5xx after every attempt), FailedPrecondition (4xx: refused; not
// retried). Messages name the URL and the report identifier, never patient attributes.
absl::Status post_fhir_report(const std::string& report_json, const FhirTarget& target, const RetryPolicy& retry = {});

}  // namespace cmn::pipeline
