// cmn_fhir's DiagnosticReport: every output is checked by the real FHIR.js validator (tests/fhir/validate.js)
// and by asserts on the fields an EHR reads.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cmn/metrics/observations.h"
#include "cmn/pipeline/fhir_report.h"
#include "common/fhir_validator.h"

namespace cmn::pipeline {
namespace {

using nlohmann::json;
using cmn::testing::fhir_validator_missing;
using cmn::testing::validate_fhir_json;

constexpr char kStudy[] = "1.2.826.0.1.3680043.10.543.7.1";
// Present, absent and uncertain statements in the words cmn's models write.
constexpr char kText[] =
    "the heart is enlarged . there is no pleural effusion . possible right pneumothorax . no acute bony "
    "abnormality .";

FhirReportInput input(const std::string& text = kText, bool untrained = false) {
  FhirReportInput in;
  in.study_instance_uid = kStudy;
  in.text = text;
  in.model = {"phantom-r2gencmn", "3", "sha256:" + std::string(64, 'a'), "cmn", untrained};
  in.issued = "2026-12-04T05:30:00Z";
  return in;
}

// Decodes standard base64 (the test's own decoder, not the writer's).
std::string unbase64(const std::string& text) {
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    if (c == '=') break;
    acc = (acc << 6) | static_cast<uint32_t>(alphabet.find(c));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

const json* contained(const json& report, const std::string& id) {
  for (const auto& r : report["contained"]) {
    if (r.value("id", "") == id) return &r;
  }
  return nullptr;
}

class FhirReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string missing = fhir_validator_missing();
    ASSERT_TRUE(missing.empty()) << missing;
  }
  // Written, valid for FHIR.js, and parsed.
  json write_valid(const FhirReportInput& in) {
    auto written = write_fhir_report(in);
    EXPECT_TRUE(written.ok()) << written.status();
    if (!written.ok()) return json();
    const auto v = validate_fhir_json(*written);
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err << "\n" << *written;
    return json::parse(*written);
  }
};

TEST_F(FhirReportTest, ReportCarriesStudyModelTextAndStatus) {
  const json r = write_valid(input());
  EXPECT_EQ(r["resourceType"], "DiagnosticReport");
  EXPECT_EQ(r["status"], "preliminary");
  EXPECT_EQ(r["category"][0]["coding"][0]["system"], "http://terminology.hl7.org/CodeSystem/v2-0074");
  EXPECT_EQ(r["category"][0]["coding"][0]["code"], "RAD");
  EXPECT_EQ(r["code"]["coding"][0]["system"], "http://loinc.org");
  EXPECT_EQ(r["code"]["coding"][0]["code"], "18748-4");
  EXPECT_EQ(r["imagingStudy"][0]["identifier"]["system"], "urn:dicom:uid");
  EXPECT_EQ(r["imagingStudy"][0]["identifier"]["value"], std::string("urn:oid:") + kStudy);
  EXPECT_EQ(r["conclusion"], kText);
  EXPECT_EQ(r["issued"], "2026-12-04T05:30:00Z");
  EXPECT_EQ(r["effectiveDateTime"], "2026-12-04T05:30:00Z");
  EXPECT_FALSE(r.contains("subject")) << "the patient reference is the integrator's";
  const json& form = r["presentedForm"][0];
  EXPECT_EQ(form["contentType"], "text/plain; charset=utf-8");
  EXPECT_EQ(form["language"], "en");
  EXPECT_EQ(unbase64(form["data"].get<std::string>()), kText);

  const json* device = contained(r, "model");
  ASSERT_NE(device, nullptr) << r.dump(2);
  EXPECT_EQ((*device)["resourceType"], "Device");
  EXPECT_EQ((*device)["deviceName"][0]["name"], "phantom-r2gencmn");
  EXPECT_EQ((*device)["version"][0]["value"], "3");
  EXPECT_EQ((*device)["identifier"][0]["value"], "sha256:" + std::string(64, 'a'));
  EXPECT_FALSE(device->contains("note"));
  // Every contained resource is referenced from the report, and every observation names the device.
  std::set<std::string> results;
  for (const auto& ref : r["result"]) results.insert(ref["reference"].get<std::string>());
  for (const auto& c : r["contained"]) {
    if (c["resourceType"] != "Observation") continue;
    EXPECT_EQ(results.count("#" + c["id"].get<std::string>()), 1u) << c.dump();
    EXPECT_EQ(c["device"]["reference"], "#model");
    EXPECT_EQ(c["status"], "preliminary");
  }
  EXPECT_EQ((*contained(r, "text"))["valueString"], kText);
}

TEST_F(FhirReportTest, ConsistencyIsAnExtensionAndALowOneANoteOnTheText) {
  // No score: neither.
  const json plain = write_valid(input());
  EXPECT_FALSE(plain.contains("extension"));
  EXPECT_FALSE(contained(plain, "text")->contains("note"));
  auto in = input();
  in.consistency = 0.87349;
  in.consistency_warn_below = 0.5;
  const json high = write_valid(in);
  ASSERT_EQ(high["extension"].size(), 1u) << high.dump(2);
  EXPECT_EQ(high["extension"][0]["url"], kFhirConsistencyExtension);
  EXPECT_DOUBLE_EQ(high["extension"][0]["valueDecimal"].get<double>(), 0.873);
  EXPECT_FALSE(contained(high, "text")->contains("note"));
  in.consistency = 0.2;
  const json low = write_valid(in);
  EXPECT_DOUBLE_EQ(low["extension"][0]["valueDecimal"].get<double>(), 0.2);
  const json* text = contained(low, "text");
  ASSERT_TRUE(text->contains("note")) << low.dump(2);
  EXPECT_NE((*text)["note"][0]["text"].get<std::string>().find("low image-text consistency: review first"),
            std::string::npos);
  // The extension is not part of what identifies the report: the same text is the same report.
  EXPECT_EQ(high["identifier"], plain["identifier"]);
}

TEST_F(FhirReportTest, StatedObservationsAreCodedAndOnlyPresentOnesConcluded) {
  const json r = write_valid(input());
  // What the labeler says the text states, and what the report says.
  std::map<std::string, std::string> expected, coded;
  std::set<std::string> present_codes;
  for (const auto& o : metrics::stated_observations(kText)) {
    const auto code = metrics::observation_code(o.name);
    if (code.code.empty()) continue;
    expected[code.code] = metrics::state_name(o.state);
    if (o.state == metrics::StatedObservation::State::kPresent) present_codes.insert(code.code);
  }
  // The anchors of this text, whatever else the labeler finds in it.
  EXPECT_EQ(expected[metrics::observation_code("Cardiomegaly").code], "present");
  EXPECT_EQ(expected[metrics::observation_code("Pleural Effusion").code], "absent");
  EXPECT_EQ(expected[metrics::observation_code("Pneumothorax").code], "uncertain");
  const std::map<std::string, std::string> qualifier = {
      {"52101004", "present"}, {"2667000", "absent"}, {"60022001", "uncertain"}};
  for (const auto& c : r["contained"]) {
    if (c["resourceType"] != "Observation" || c["id"] == "text") continue;
    EXPECT_EQ(c["code"]["coding"][0]["system"], "http://snomed.info/sct");
    const std::string value = c["valueCodeableConcept"]["coding"][0]["code"];
    ASSERT_EQ(qualifier.count(value), 1u) << value;
    coded[c["code"]["coding"][0]["code"].get<std::string>()] = qualifier.at(value);
  }
  EXPECT_EQ(coded, expected);
  std::set<std::string> concluded;
  for (const auto& cc : r["conclusionCode"]) {
    EXPECT_EQ(cc["coding"][0]["system"], "http://snomed.info/sct");
    concluded.insert(cc["coding"][0]["code"].get<std::string>());
  }
  EXPECT_EQ(concluded, present_codes);
  EXPECT_EQ(concluded.count(metrics::observation_code("Cardiomegaly").code), 1u);
}

// CheXpert's No Finding rule: a report that states no observation is coded as No Finding only, and the text
// observation still references the model Device.
TEST_F(FhirReportTest, NothingAbnormalIsCodedAsNoFindingAndStillReferencesTheDevice) {
  const json r = write_valid(input("the osseous structures are unremarkable ."));
  ASSERT_EQ(r["conclusionCode"].size(), 1u);
  EXPECT_EQ(r["conclusionCode"][0]["coding"][0]["code"], metrics::observation_code("No Finding").code);
  ASSERT_EQ(r["result"].size(), 2u);
  EXPECT_EQ(r["result"][0]["reference"], "#obs-0");  // the No Finding observation, then the text
  EXPECT_EQ(r["result"][1]["reference"], "#text");
  EXPECT_EQ((*contained(r, "text"))["device"]["reference"], "#model");
}

TEST_F(FhirReportTest, UntrainedModelSaysSoAndCodesNothing) {
  const json r = write_valid(input(kText, /*untrained=*/true));
  const std::string conclusion = r["conclusion"];
  EXPECT_EQ(conclusion.rfind("UNTRAINED model", 0), 0u) << conclusion;
  EXPECT_NE(conclusion.find(kText), std::string::npos);
  EXPECT_FALSE(r.contains("conclusionCode"));
  EXPECT_EQ(r["result"].size(), 1u);
  EXPECT_NE(r["presentedForm"][0]["title"].get<std::string>().find("UNTRAINED"), std::string::npos);
  EXPECT_EQ(unbase64(r["presentedForm"][0]["data"].get<std::string>()), conclusion);
  const json* device = contained(r, "model");
  ASSERT_NE(device, nullptr);
  EXPECT_NE((*device)["note"][0]["text"].get<std::string>().find("UNTRAINED"), std::string::npos);
}

TEST_F(FhirReportTest, EmptyTextAndDefaultTimesStayValid) {
  FhirReportInput in = input("");
  in.issued.clear();
  const json r = write_valid(in);
  EXPECT_FALSE(r.contains("conclusion"));
  const std::string issued = r["issued"];
  EXPECT_EQ(issued.size(), 20u) << issued;  // YYYY-MM-DDThh:mm:ssZ
  EXPECT_EQ(issued.back(), 'Z');
  EXPECT_EQ(r["effectiveDateTime"], issued);
}

TEST_F(FhirReportTest, IdentifierIsStableForTheSameReportOnly) {
  const auto a = fhir_report_identifier(input());
  EXPECT_EQ(a.rfind("urn:uuid:", 0), 0u);
  EXPECT_EQ(a.size(), 9u + 36u);
  EXPECT_EQ(a, fhir_report_identifier(input()));
  EXPECT_NE(a, fhir_report_identifier(input("no acute disease .")));
  FhirReportInput other_model = input();
  other_model.model.digest = "sha256:" + std::string(64, 'b');
  EXPECT_NE(a, fhir_report_identifier(other_model));
  const json r = json::parse(*write_fhir_report(input()));
  EXPECT_EQ(r["identifier"][0]["value"], a);
}

TEST_F(FhirReportTest, BadInputIsRefusedWithTheReason) {
  for (const std::string& uid : std::vector<std::string>{"", "1.2..3", "1.2.abc", ".1.2", std::string(65, '1')}) {
    FhirReportInput in = input();
    in.study_instance_uid = uid;
    const auto r = write_fhir_report(in);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << uid;
    EXPECT_NE(r.status().message().find("not a DICOM UID"), std::string::npos) << r.status();
  }
  FhirReportInput nameless = input();
  nameless.model.name.clear();
  EXPECT_EQ(write_fhir_report(nameless).status().code(), absl::StatusCode::kInvalidArgument);
}

// The validator is not vacuous: it rejects what R4 forbids in a report like ours.
TEST_F(FhirReportTest, ValidatorRejectsBrokenReports) {
  const json good = json::parse(*write_fhir_report(input()));
  json bad_status = good;
  bad_status["status"] = "draft";  // not in the DiagnosticReport status value set
  json no_code = good;
  no_code.erase("code");           // 1..1
  json unknown = good;
  unknown["device"] = {{"reference", "#model"}};  // DiagnosticReport has no device element in R4
  for (const json& bad : {bad_status, no_code, unknown}) {
    const auto v = validate_fhir_json(bad.dump());
    EXPECT_EQ(v.exit_code, 1) << v.out << v.err;
  }
}

}  // namespace
}  // namespace cmn::pipeline
