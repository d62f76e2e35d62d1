// output.dicom_sr: the server returns the report as a DICOM SR whose text, study and evidence match the response
// (a real server on 127.0.0.1:0, the untrained 2-view test bundle, chest DICOMs from ../shared).
#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "cmn/pipeline/dicom_sr.h"
#include "cmn/pipeline/findings_sr.h"
#include "common/sr_validators.h"
#include "server_test_util.h"

namespace cmn::server {
namespace {

using namespace cmn::server::testing;  // NOLINT: test helpers

// One study: two PA instances (RG1) and, made part of it, a lateral; the 2-view model takes PA + lateral.
std::vector<std::string> study_with_lateral() {
  const std::string rg1 = chest("RG1_J2KI.dcm");
  DcmFileFormat file;
  const std::string path = (fs::path(::testing::TempDir()) / ("cmn_sr_uid_" + std::to_string(::getpid()) + ".dcm")).string();
  write_bytes(path, rg1);
  EXPECT_TRUE(file.loadFile(path.c_str()).good());
  std::remove(path.c_str());
  OFString study_uid;
  file.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study_uid);
  const std::string lateral =
      edit_dicom(chest("NIH-ChestXray14_DX_implicitLE.dcm"),
                 {{DCM_StudyInstanceUID, study_uid.c_str()}, {DCM_ViewPosition, "LL"}, {DCM_PatientName, "Sr^Test"}});
  return {rg1, chest("RG1_JLSN.dcm"), lateral};
}

class DicomSrServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = test_config(untrained_bundle_dir());
    config_.sr.uid_root = "1.2.826.0.1.3680043.10.543.99";
  }
  ServerConfig config_;
};

TEST_F(DicomSrServiceTest, ResponseCarriesAnSrOfTheReportInTheSameStudy) {
  RunningServer s = start_server(config_, untrained_model());
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(120));
  auto request = make_request(study_with_lateral(), 12);
  request.mutable_output()->set_dicom_sr(true);
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(response.dicom_sr().empty());

  auto sr = pipeline::read_report_sr(response.dicom_sr());
  ASSERT_TRUE(sr.ok()) << sr.status();
  EXPECT_EQ(sr->text(), response.report());
  EXPECT_EQ(std::vector<std::string>(response.sentences().begin(), response.sentences().end()), sr->findings);
  EXPECT_EQ(sr->study_instance_uid, response.study_instance_uid());
  EXPECT_EQ(sr->completion_flag, "COMPLETE");
  EXPECT_EQ(sr->verification_flag, "UNVERIFIED");
  EXPECT_EQ(sr->device_observer_name, response.model().name());
  EXPECT_NE(sr->draft_statement.find("UNTRAINED"), std::string::npos) << "the demo model's SR must say so";
  EXPECT_EQ(sr->sop_instance_uid.rfind(config_.sr.uid_root + ".", 0), 0u) << sr->sop_instance_uid;
  // Evidence = the instances that fill the slots, and not the skipped one.
  std::set<std::string> slots, evidence;
  for (const auto& slot : response.slots()) slots.insert(slot.sop_instance_uid());
  for (const auto& e : sr->evidence) evidence.insert(e.sop_instance_uid);
  EXPECT_EQ(evidence, slots);
  EXPECT_EQ(slots.size(), 2u);
  ASSERT_EQ(response.skipped_size(), 1);
  EXPECT_EQ(evidence.count(response.skipped(0).sop_instance_uid()), 0u);
  // The algorithm identification names the served model; PixelMed and dciodvfy find nothing wrong.
  ASSERT_EQ(sr->contributing_equipment.size(), 1u);
  EXPECT_EQ(sr->contributing_equipment[0].model_name, response.model().name());
  EXPECT_EQ(sr->contributing_equipment[0].device_uid, sr->device_observer_uid);
  EXPECT_FALSE(response.model().digest().empty());
  EXPECT_EQ(sr->preliminary_flag, "PRELIMINARY");
  EXPECT_TRUE(response.findings_sr().empty()) << "not asked for";
  EXPECT_EQ(cmn::testing::sr_validator_problems({response.dicom_sr()}, "TID_2000", study_with_lateral()), "");
}

// output.findings_sr: the CheXpert observations the report states, coded, over the slot instances.
TEST_F(DicomSrServiceTest, FindingsSrWhenAsked) {
  RunningServer s = start_server(config_, untrained_model());
  ASSERT_TRUE(s.server);
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(120));
  auto request = make_request(study_with_lateral(), 12);
  request.mutable_output()->set_findings_sr(true);
  v1::GenerateReportResponse response;
  const grpc::Status status = s.stub->GenerateReport(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.dicom_sr().empty()) << "not asked for";
  ASSERT_FALSE(response.findings_sr().empty());
  auto sr = pipeline::read_findings_sr(response.findings_sr());
  ASSERT_TRUE(sr.ok()) << sr.status();
  EXPECT_EQ(sr->study_instance_uid, response.study_instance_uid());
  const auto stated = cmn::metrics::stated_observations(response.report());
  ASSERT_EQ(sr->evaluations.size(), stated.size());
  for (size_t i = 0; i < stated.size(); ++i) {
    EXPECT_EQ(sr->evaluations[i].observation.value, cmn::metrics::observation_code(stated[i].name).code);
    EXPECT_EQ(sr->evaluations[i].state, pipeline::state_code(stated[i].state));
  }
  std::set<std::string> slots, images(sr->image_sop_instance_uids.begin(), sr->image_sop_instance_uids.end());
  for (const auto& slot : response.slots()) slots.insert(slot.sop_instance_uid());
  EXPECT_EQ(images, slots);
  EXPECT_EQ(sr->algorithm_name, response.model().name());
  const std::string beam = "beam_size=" + std::to_string(response.decoding().beam_size());
  EXPECT_NE(std::find(sr->algorithm_parameters.begin(), sr->algorithm_parameters.end(), beam),
            sr->algorithm_parameters.end())
      << beam;
  EXPECT_EQ(cmn::testing::sr_validator_problems({response.findings_sr()}, "TID_1500", study_with_lateral()), "");
}

TEST_F(DicomSrServiceTest, NoSrUnlessAskedAndStreamingFinalCarriesIt) {
  RunningServer s = start_server(config_, untrained_model());
  ASSERT_TRUE(s.server);
  {
    grpc::ClientContext context;
    set_deadline(&context, std::chrono::seconds(120));
    v1::GenerateReportResponse response;
    ASSERT_TRUE(s.stub->GenerateReport(&context, make_request(study_with_lateral(), 6), &response).ok());
    EXPECT_TRUE(response.dicom_sr().empty());
  }
  grpc::ClientContext context;
  set_deadline(&context, std::chrono::seconds(120));
  auto request = make_request(study_with_lateral(), 6);
  request.mutable_output()->set_dicom_sr(true);
  auto reader = s.stub->StreamReport(&context, request);
  v1::StreamReportResponse message, last;
  while (reader->Read(&message)) last = message;
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(last.has_final());
  auto sr = pipeline::read_report_sr(last.final().dicom_sr());
  ASSERT_TRUE(sr.ok()) << sr.status();
  EXPECT_EQ(sr->text(), last.final().report());
}

TEST(DicomSrConfigTest, BadUidRootIsAnErrorNamingTheKey) {
  auto config = parse_server_config("", "test", {"sr.uid_root=1.02.3", "model.bundle=x"});
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("sr.uid_root"), std::string::npos) << config.status();
  auto unknown = parse_server_config("sr: {uid_rot: '1.2'}", "test");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("uid_rot"), std::string::npos) << unknown.status();
  auto fine = parse_server_config("", "test", {"sr.uid_root=1.2.826.0.1.3680043.10.543", "model.bundle=x"});
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->sr.uid_root, "1.2.826.0.1.3680043.10.543");
}

}  // namespace
}  // namespace cmn::server
