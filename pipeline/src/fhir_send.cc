// post_fhir_report (fhir_report.h): FHIR create of a DiagnosticReport over HTTP with cpp-httplib.
#include <httplib.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "http_url.h"
#include "cmn/pipeline/fhir_report.h"

namespace cmn::pipeline {

absl::Status post_fhir_report(const std::string& report_json, const FhirTarget& target, const RetryPolicy& retry) {
  std::string origin, path;
  if (!split_url(target.base_url, &origin, &path) || origin.rfind("http://", 0) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("FHIR: base URL '", target.base_url,
                                                   "' is not an http://host[:port][/path] URL (https is not built in)"));
  }
  const auto report = nlohmann::json::parse(report_json, nullptr, /*allow_exceptions=*/false);
  if (!report.is_object() || report.value("resourceType", std::string()) != "DiagnosticReport" ||
      !report.contains("identifier") || !report["identifier"].is_array() || report["identifier"].empty()) {
    return absl::InvalidArgumentError("FHIR: the body is not a DiagnosticReport with an identifier");
  }
  const auto& id = report["identifier"][0];
  const std::string system = id.value("system", std::string());
  const std::string value = id.value("value", std::string());
  const std::string where = absl::StrCat("FHIR POST to ", origin, path, "/DiagnosticReport (report ", value, ")");
  httplib::Headers headers = {{"Accept", "application/fhir+json"},
                              // As in the spec's examples (identifier=system|value): the system is a
                              // fixed URI and the value a urn:uuid, nothing in them needs escaping.
                              {"If-None-Exist", absl::StrCat("identifier=", system, "|", value)}};

  // Retried as the SR senders retry (retry.h): network errors and 5xx with doubling back-off; 4xx not.
  return with_retries(retry, [&]() -> absl::Status {
    httplib::Client client(origin);
    client.set_connection_timeout(target.timeout_s, 0);
    client.set_read_timeout(target.timeout_s, 0);
    client.set_write_timeout(target.timeout_s, 0);
    if (!target.bearer_token.empty()) client.set_bearer_token_auth(target.bearer_token);
    auto result = client.Post(path + "/DiagnosticReport", headers, report_json, "application/fhir+json");
    if (!result) return absl::UnavailableError(absl::StrCat(where, ": ", httplib::to_string(result.error())));
    if (result->status == 200 || result->status == 201) return absl::OkStatus();
    const std::string answer = absl::StrCat(where, ": HTTP ", result->status, ": ", result->body.substr(0, 300));
    return result->status >= 500 ? absl::UnavailableError(answer) : absl::FailedPreconditionError(answer);
  });
}

}  // namespace cmn::pipeline
