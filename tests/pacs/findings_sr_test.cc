// The coded-findings SR (cmn/pipeline/findings_sr.h): clean in PixelMed (TID 1500) and dciodvfy, what it says
// read back against what went in (the observation table of cmn_metrics, the source instances), the same
// algorithm identification as the report SR, and the code table itself.
#include "cmn/pipeline/findings_sr.h"

#include <set>

#include <gtest/gtest.h>

#include "cmn/pipeline/dicom_sr.h"
#include "common/sr_validators.h"
#include "pacs/pacs_test_util.h"

namespace cmn::pacs::testing {
namespace {

using State = metrics::StatedObservation::State;

constexpr char kStudyUid[] = "1.2.826.0.1.3680043.10.543.9.1";
constexpr char kComprehensive3dSr[] = "1.2.840.10008.5.1.4.1.1.88.34";

// Two real radiographs (CR, DX) made into one study.
std::vector<std::string> two_views() {
  const std::vector<std::pair<DcmTagKey, std::string>> common = {{DCM_StudyInstanceUID, kStudyUid},
                                                                 {DCM_PatientID, "PID-0815"}};
  auto with = [&](std::vector<std::pair<DcmTagKey, std::string>> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  return {edit_dicom(chest("gdcm-CR-MONO1-10-chest_explicitLE.dcm"),
                     with({{DCM_SOPInstanceUID, "1.2.826.0.1.3680043.10.543.9.1.1.1"},
                           {DCM_SeriesInstanceUID, "1.2.826.0.1.3680043.10.543.9.1.1"}})),
          edit_dicom(chest("NIH-ChestXray14_DX_implicitLE.dcm"),
                     with({{DCM_SOPInstanceUID, "1.2.826.0.1.3680043.10.543.9.1.2.1"},
                           {DCM_SeriesInstanceUID, "1.2.826.0.1.3680043.10.543.9.1.2"}}))};
}

pipeline::SrOptions options() {
  pipeline::SrOptions o;
  o.uid_root = "1.2.826.0.1.3680043.10.543";
  o.model_name = "cmn-findings-test";
  o.model_version = "1.2";
  o.model_digest = "sha256:" + std::string(64, 'f');
  o.algorithm_parameters = {"method=beam_search", "beam_size=3", "max_length=60"};
  return o;
}

// Every CheXpert observation, the three states in turn.
std::vector<metrics::StatedObservation> all_observations() {
  std::vector<metrics::StatedObservation> out;
  const State states[] = {State::kPresent, State::kAbsent, State::kUncertain};
  size_t i = 0;
  for (const auto& name : metrics::chexpert_observation_names()) out.push_back({name, states[i++ % 3]});
  return out;
}

TEST(FindingsSrTest, ValidatorsFindNothingWrong) {
  const auto sources = two_views();
  std::vector<std::string> srs;
  for (const auto& observations :
       {all_observations(), std::vector<metrics::StatedObservation>{},
        std::vector<metrics::StatedObservation>{{"Cardiomegaly", State::kPresent}}}) {
    auto sr = pipeline::write_findings_sr(sources, observations, options());
    ASSERT_TRUE(sr.ok()) << sr.status();
    srs.push_back(*sr);
  }
  auto one_source = pipeline::write_findings_sr({sources[1]}, all_observations(), options());
  ASSERT_TRUE(one_source.ok()) << one_source.status();
  srs.push_back(*one_source);
  EXPECT_EQ(cmn::testing::sr_validator_problems(srs, "TID_1500", sources), "");
}

TEST(FindingsSrTest, SaysWhatWentIn) {
  const auto sources = two_views();
  const auto observations = all_observations();
  auto bytes = pipeline::write_findings_sr({sources[0], sources[1], sources[0]}, observations, options());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto sr = pipeline::read_findings_sr(*bytes);
  ASSERT_TRUE(sr.ok()) << sr.status();
  EXPECT_EQ(sr->sop_class_uid, kComprehensive3dSr);
  EXPECT_EQ(sr->template_id, "1500");
  EXPECT_EQ(sr->study_instance_uid, kStudyUid);
  EXPECT_EQ(sr->preliminary_flag, "PRELIMINARY");
  EXPECT_EQ(sr->completion_flag, "COMPLETE");
  EXPECT_EQ(sr->verification_flag, "UNVERIFIED");
  ASSERT_EQ(sr->evaluations.size(), observations.size());
  for (size_t i = 0; i < observations.size(); ++i) {
    const metrics::ObservationCode code = metrics::observation_code(observations[i].name);
    EXPECT_EQ(sr->evaluations[i].observation, (pipeline::SrCode{code.code, code.scheme, code.meaning}))
        << observations[i].name;
    EXPECT_EQ(sr->evaluations[i].state, pipeline::state_code(observations[i].state)) << observations[i].name;
  }
  EXPECT_EQ(pipeline::state_code(State::kPresent), (pipeline::SrCode{"52101004", "SCT", "Present"}));
  EXPECT_EQ(pipeline::state_code(State::kAbsent), (pipeline::SrCode{"2667000", "SCT", "Absent"}));
  EXPECT_EQ(pipeline::state_code(State::kUncertain), (pipeline::SrCode{"373068000", "SCT", "Undetermined"}));
  // The image library: each source instance once, in source order.
  EXPECT_EQ(sr->image_sop_instance_uids,
            (std::vector<std::string>{"1.2.826.0.1.3680043.10.543.9.1.1.1", "1.2.826.0.1.3680043.10.543.9.1.2.1"}));
  EXPECT_EQ(sr->algorithm_name, "cmn-findings-test");
  EXPECT_EQ(sr->algorithm_version, "1.2");
  EXPECT_EQ(sr->algorithm_parameters, options().algorithm_parameters);
}

// The findings SR is the same device as the report SR, and cmn-pacs would recognise it as its own.
TEST(FindingsSrTest, SameAlgorithmIdentificationAsTheReportSr) {
  const auto sources = two_views();
  auto findings_bytes = pipeline::write_findings_sr(sources, all_observations(), options());
  auto report_bytes = pipeline::write_report_sr(sources, {"the lungs are clear ."}, options());
  ASSERT_TRUE(findings_bytes.ok() && report_bytes.ok());
  auto findings = pipeline::read_findings_sr(*findings_bytes);
  auto report = pipeline::read_report_sr(*report_bytes);
  ASSERT_TRUE(findings.ok() && report.ok());
  EXPECT_EQ(findings->device_observer_uid, report->device_observer_uid);
  ASSERT_EQ(findings->contributing_equipment.size(), 1u);
  ASSERT_EQ(report->contributing_equipment.size(), 1u);
  EXPECT_EQ(findings->contributing_equipment[0].device_uid, report->contributing_equipment[0].device_uid);
  EXPECT_EQ(findings->contributing_equipment[0].model_name, "cmn-findings-test");
  EXPECT_EQ(findings->contributing_equipment[0].purpose_code, "Newcode1");
  EXPECT_NE(findings->series_instance_uid, report->series_instance_uid);
  auto file = parse(*findings_bytes);
  EXPECT_EQ(get(file->getDataset(), DCM_ManufacturerModelName), report->manufacturer_model_name);
  EXPECT_EQ(get(file->getDataset(), DCM_SeriesNumber), "9902");
  EXPECT_EQ(get(file->getDataset(), DCM_PatientID), "PID-0815");
}

TEST(FindingsSrTest, RefusesAnUnknownObservationAndBadSources) {
  const auto sources = two_views();
  auto unknown = pipeline::write_findings_sr(sources, {{"Hernia", State::kPresent}}, options());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("Hernia"), std::string::npos) << unknown.status();
  EXPECT_EQ(pipeline::write_findings_sr({}, all_observations(), options()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline::write_findings_sr({std::string("not DICOM")}, all_observations(), options()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline::read_findings_sr(sources[0]).status().code(), absl::StatusCode::kInvalidArgument);
}

// The code table (train/metrics observations.cc): every CheXpert observation has one code, no two share one, and
// each fits DICOM (Code Value SH: 16 characters; Code Meaning LO: 64).
TEST(FindingsSrTest, EveryCheXpertObservationHasItsOwnCode) {
  std::set<std::string> seen;
  ASSERT_EQ(metrics::chexpert_observation_names().size(), 14u);
  for (const auto& name : metrics::chexpert_observation_names()) {
    const metrics::ObservationCode code = metrics::observation_code(name);
    EXPECT_FALSE(code.code.empty()) << name;
    EXPECT_FALSE(code.scheme.empty()) << name;
    EXPECT_FALSE(code.fhir_system.empty()) << name;
    EXPECT_FALSE(code.meaning.empty()) << name;
    EXPECT_LE(code.code.size(), 16u) << name;
    EXPECT_LE(code.meaning.size(), 64u) << name;
    EXPECT_TRUE(seen.insert(code.scheme + "|" + code.code).second) << name << " shares a code";
  }
  EXPECT_TRUE(metrics::observation_code("Granuloma").code.empty());
}

}  // namespace
}  // namespace cmn::pacs::testing
