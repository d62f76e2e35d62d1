// The PACS loop end to end, every part real: Orthanc (Debian package) on loopback ports with a temporary
// storage folder and StableAge 1 s, cmn-server with the untrained 2-view test bundle, cmn-pacs, and the chest
// DICOMs of ../shared/data/dicom/chest uploaded with DCMTK's storescu (C-STORE). Skipped only when the Orthanc
// binary is not installed (Debian: orthanc); CI installs it.
#include <signal.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "common/fhir_validator.h"
#include "fhir/loopback_fhir_server.h"
#include "pacs/pacs_e2e_fixture.h"

namespace cmn::pacs::testing {
namespace {

TEST_F(PacsEndToEndTest, EveryUploadedStudyGetsOneSrMatchingTheServersReport) {
  const auto start = Clock::now();
  ASSERT_TRUE(orthanc_.start()) << "Orthanc did not start:\n" << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << "cmn-server did not start:\n" << (server_ ? server_->err() : "");
  start_pacs(server_port);

  std::set<std::string> uploaded;
  std::set<std::string> study_uids;
  std::set<std::string> secrets;
  for (const auto& entry : fs::directory_iterator(shared_path("data/dicom/chest"))) {
    if (entry.path().extension() != ".dcm") continue;
    uploaded.insert(upload(entry.path().string()));
    auto info = preprocessing::read_dicom_info(read_bytes(entry.path().string()), entry.path().string());
    if (info.ok()) study_uids.insert(info->study_instance_uid);
    auto file = parse(read_bytes(entry.path().string()));
    for (const DcmTagKey& key : {DCM_PatientName, DCM_PatientID, DCM_PatientBirthDate, DCM_AccessionNumber}) {
      const std::string value = get(file->getDataset(), key);
      if (value.size() >= 4) secrets.insert(value);
    }
  }
  ASSERT_GE(study_uids.size(), 3u);

  // Every study holds an SR within a bounded time.
  json studies;
  const bool all = wait_for(std::chrono::seconds(240), [&] {
    studies = orthanc_.get("/studies");
    if (!studies.is_array() || studies.size() != study_uids.size()) return false;
    for (const auto& s : studies) {
      if (orthanc_.sr_instances(s.get<std::string>()).empty()) return false;
    }
    return true;
  });
  ASSERT_TRUE(all) << "not every study got an SR within 240 s\n" << diagnostics();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::cout << "[ e2e ] " << study_uids.size() << " studies reported in " << seconds << " s" << std::endl;

  // The SR's own arrival makes each study stable again: after that has been seen, still one SR per study.
  ASSERT_TRUE(pacs_settled()) << diagnostics();
  for (const auto& s : studies) expect_sr_matches_server(s.get<std::string>(), server_port, uploaded);

  // Logs carry no patient identifiers (those of the uploaded files).
  const std::string logs = pacs_->err() + pacs_->out();
  for (const auto& secret : secrets) {
    EXPECT_EQ(logs.find(secret), std::string::npos) << "cmn-pacs log contains a patient attribute";
  }
  // The state file knows every study as done.
  pacs_->stop();
  auto state = load_state(dir_->file("pacs-state.json"));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->done.size(), study_uids.size());
  EXPECT_TRUE(state->pending.empty());
  EXPECT_TRUE(state->failed.empty());

  // Even with its state file lost, a new cmn-pacs replays the whole change feed and finds the SRs already there.
  fs::remove(dir_->file("pacs-state.json"));
  start_pacs(server_port);
  ASSERT_TRUE(wait_for(std::chrono::seconds(240), [&] {
    auto replayed = load_state(dir_->file("pacs-state.json"));
    return replayed.ok() && replayed->done.size() == study_uids.size() && replayed->pending.empty();
  })) << diagnostics();
  for (const auto& s : studies) EXPECT_EQ(orthanc_.sr_instances(s.get<std::string>()).size(), 1u);
}

TEST_F(PacsEndToEndTest, SendersStoreTheSrByCStoreAndByStowRs) {
  if (!fs::exists(kDicomWebPlugin)) GTEST_SKIP() << "orthanc-dicomweb is not installed";
  ASSERT_TRUE(orthanc_.start()) << read_bytes(dir_->file("orthanc.err"));
  const std::string image = read_bytes(shared_path("data/dicom/chest/NIH-ChestXray14_DX_implicitLE.dcm"));
  auto posted = orthanc_.client->Post("/instances", image, "application/dicom");
  ASSERT_TRUE(posted && posted->status == 200);
  const std::string study = json::parse(posted->body).value("ParentStudy", std::string());
  pipeline::SrOptions options;
  options.model_name = "sender-test";

  pipeline::DicomPeer peer;
  peer.port = orthanc_.dicom_port;
  peer.calling_ae = "CMN";
  peer.called_ae = "ORTHANC";
  const auto by_dicom = pipeline::write_report_sr({image}, {"sent by c-store ."}, options);
  ASSERT_TRUE(by_dicom.ok()) << by_dicom.status();
  const absl::Status stored = pipeline::c_store(*by_dicom, peer);
  ASSERT_TRUE(stored.ok()) << stored;

  pipeline::StowTarget stow;
  stow.base_url = "http://127.0.0.1:" + std::to_string(orthanc_.http_port) + "/dicom-web";
  const auto by_web = pipeline::write_report_sr({image}, {"sent by stow-rs ."}, options);
  ASSERT_TRUE(by_web.ok()) << by_web.status();
  const absl::Status posted_sr = pipeline::stow_rs(*by_web, stow);
  ASSERT_TRUE(posted_sr.ok()) << posted_sr;

  std::set<std::string> texts;
  for (const auto& id : orthanc_.sr_instances(study)) {
    auto sr = pipeline::read_report_sr(orthanc_.file(id));
    ASSERT_TRUE(sr.ok()) << sr.status();
    texts.insert(sr->text());
  }
  EXPECT_EQ(texts, (std::set<std::string>{"sent by c-store .", "sent by stow-rs ."}));
}

TEST_F(PacsEndToEndTest, StowRsModeStoresTheSrIntoTheStudy) {
  if (!fs::exists(kDicomWebPlugin)) GTEST_SKIP() << "orthanc-dicomweb is not installed";
  ASSERT_TRUE(orthanc_.start()) << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << (server_ ? server_->err() : "");
  start_pacs(server_port, {"--store", "stow", "--stow-url",
                           "http://127.0.0.1:" + std::to_string(orthanc_.http_port) + "/dicom-web"});
  const std::string image = read_bytes(shared_path("data/dicom/chest/NIH-ChestXray14_DX_implicitLE.dcm"));
  auto posted = orthanc_.client->Post("/instances", image, "application/dicom");
  ASSERT_TRUE(posted && posted->status == 200);
  const std::string study = json::parse(posted->body).value("ParentStudy", std::string());
  ASSERT_TRUE(wait_for(std::chrono::seconds(240), [&] { return !orthanc_.sr_instances(study).empty(); }))
      << diagnostics();
  ASSERT_TRUE(pacs_settled()) << diagnostics();
  expect_sr_matches_server(study, server_port, {"1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888"});
  pacs_->stop();
  EXPECT_NE(pacs_->err().find("store=stow"), std::string::npos) << pacs_->err();
}

TEST_F(PacsEndToEndTest, InProcessModeWritesTheSameReportAsTheServer) {
  ASSERT_TRUE(orthanc_.start()) << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();  // only to compare with: cmn-pacs does not call it
  ASSERT_GT(server_port, 0) << (server_ ? server_->err() : "");
  start_pacs(/*server_port=*/1, {"--bundle", test_bundle(), "--threads", "1"});
  std::set<std::string> uploaded;
  std::string study;
  for (const char* name : {"RG1_J2KI.dcm", "RG1_JLSN.dcm"}) {
    const std::string bytes = read_bytes(shared_path(std::string("data/dicom/chest/") + name));
    auto posted = orthanc_.client->Post("/instances", bytes, "application/dicom");
    ASSERT_TRUE(posted && posted->status == 200);
    study = json::parse(posted->body).value("ParentStudy", std::string());
    auto info = preprocessing::read_dicom_info(bytes, name);
    ASSERT_TRUE(info.ok());
    uploaded.insert(info->sop_instance_uid);
  }
  ASSERT_TRUE(wait_for(std::chrono::seconds(240), [&] { return !orthanc_.sr_instances(study).empty(); }))
      << diagnostics();
  ASSERT_TRUE(pacs_settled()) << diagnostics();
  expect_sr_matches_server(study, server_port, uploaded);
  pacs_->stop();
  EXPECT_NE(pacs_->err().find("in_process"), std::string::npos) << pacs_->err();
}

TEST_F(PacsEndToEndTest, StudyTheServerRefusesIsReportedFailedAtOnce) {
  ASSERT_TRUE(orthanc_.start()) << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << (server_ ? server_->err() : "");
  start_pacs(server_port);
  // An MR image: the chest model takes none of it, the server answers INVALID_ARGUMENT; waiting will not help.
  const std::string mr = edit_dicom(read_bytes(shared_path("data/dicom/chest/gdcm-CR-MONO1-10-chest_explicitLE.dcm")),
                                    {{DCM_Modality, "MR"}});
  auto posted = orthanc_.client->Post("/instances", mr, "application/dicom");
  ASSERT_TRUE(posted && posted->status == 200);
  const std::string study = json::parse(posted->body).value("ParentStudy", std::string());
  ASSERT_TRUE(wait_for(std::chrono::seconds(240), [&] {
    auto state = load_state(dir_->file("pacs-state.json"));
    return state.ok() && state->failed.count(study) == 1;
  })) << diagnostics();
  auto state = load_state(dir_->file("pacs-state.json"));
  EXPECT_EQ(state->failed.at(study).attempts, 1);
  EXPECT_NE(state->failed.at(study).last_error.find("GenerateReport"), std::string::npos);
  EXPECT_TRUE(state->pending.empty());
  EXPECT_TRUE(orthanc_.sr_instances(study).empty());
  pacs_->stop();
  EXPECT_NE(pacs_->err().find("giving up on " + study), std::string::npos) << pacs_->err();
}

TEST(DicomSendTest, FailuresAreReportedWithTheAttemptCount) {
  const int port = free_port();  // nothing listens there
  pipeline::SrOptions options;
  const auto sr = pipeline::write_report_sr({chest("gdcm-CR-MONO1-10-chest_explicitLE.dcm")}, {"x ."}, options);
  ASSERT_TRUE(sr.ok()) << sr.status();
  pipeline::DicomPeer peer;
  peer.port = port;
  peer.connect_timeout_s = 2;
  const pipeline::RetryPolicy retry{3, 0.05, 0.1};
  const absl::Status refused = pipeline::c_store(*sr, peer, retry);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_NE(refused.message().find("after 3 attempts"), std::string::npos) << refused;

  pipeline::StowTarget stow;
  stow.base_url = "http://127.0.0.1:" + std::to_string(port) + "/dicom-web";
  stow.timeout_s = 2;
  const absl::Status unreachable = pipeline::stow_rs(*sr, stow, retry);
  EXPECT_EQ(unreachable.code(), absl::StatusCode::kUnavailable) << unreachable;
  EXPECT_NE(unreachable.message().find("after 3 attempts"), std::string::npos) << unreachable;

  stow.base_url = "ftp://example/dicom-web";
  EXPECT_EQ(pipeline::stow_rs(*sr, stow, retry).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline::c_store("not dicom", peer, retry).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PacsEndToEndTest, StoreFailsWhileOrthancsDicomPortIsDownThenSucceeds) {
  // Orthanc without its DICOM server: the study arrives over REST, becomes stable, is reported, but the
  // C-STORE of the SR is refused. cmn-pacs must keep retrying; when Orthanc comes back with DICOM, the SR lands.
  ASSERT_TRUE(orthanc_.start(/*dicom_enabled=*/false)) << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << (server_ ? server_->err() : "");
  start_pacs(server_port);
  const std::string image = read_bytes(shared_path("data/dicom/chest/gdcm-CR-MONO1-10-chest_explicitLE.dcm"));
  auto posted = orthanc_.client->Post("/instances", image, "application/dicom");
  ASSERT_TRUE(posted && posted->status == 200);
  // Wait until cmn-pacs has failed at least twice on the store.
  ASSERT_TRUE(wait_for(std::chrono::seconds(240), [&] {
    auto state = load_state(dir_->file("pacs-state.json"));
    return state.ok() && !state->pending.empty() && state->pending.begin()->second.attempts >= 2;
  })) << diagnostics();
  auto state = load_state(dir_->file("pacs-state.json"));
  ASSERT_TRUE(state.ok());
  EXPECT_NE(state->pending.begin()->second.last_error.find("C-STORE"), std::string::npos)
      << state->pending.begin()->second.last_error;
  const std::string study = state->pending.begin()->first;
  EXPECT_TRUE(orthanc_.sr_instances(study).empty());

  // Orthanc back with its DICOM port (same storage, same ports).
  orthanc_.process->stop();
  ASSERT_TRUE(orthanc_.start(/*dicom_enabled=*/true)) << read_bytes(dir_->file("orthanc.err"));
  ASSERT_TRUE(wait_for(std::chrono::seconds(240), [&] { return !orthanc_.sr_instances(study).empty(); }))
      << diagnostics();
  std::set<std::string> uploaded = {"1.2.392.200036.9125.0.19950720112207"};
  ASSERT_TRUE(pacs_settled()) << diagnostics();
  expect_sr_matches_server(study, server_port, uploaded);
  pacs_->stop();
  auto final_state = load_state(dir_->file("pacs-state.json"));
  ASSERT_TRUE(final_state.ok());
  EXPECT_TRUE(final_state->pending.empty());
  EXPECT_EQ(final_state->done.size(), 1u);
}

// --fhir-url: after the SR, the report goes to a FHIR server (a recording HTTP server on loopback) as a valid
// DiagnosticReport. The FHIR server fails the first attempt: the study is retried, the report arrives, and the
// study still holds one SR.
TEST_F(PacsEndToEndTest, FhirUrlPostsTheReportAfterTheSrAndRetriesWithoutASecondSr) {
  const std::string missing = cmn::testing::fhir_validator_missing();
  ASSERT_TRUE(missing.empty()) << missing;
  ASSERT_TRUE(orthanc_.start()) << read_bytes(dir_->file("orthanc.err"));
  const int server_port = start_server();
  ASSERT_GT(server_port, 0) << (server_ ? server_->err() : "");
  cmn::testing::LoopbackFhirServer fhir;
  fhir.script({503, 503});  // both tries of the first attempt (store_retry: 2 tries)
  start_pacs(server_port, {"--fhir-url", fhir.base_url("/fhir")});
  const std::string image = read_bytes(shared_path("data/dicom/chest/NIH-ChestXray14_DX_implicitLE.dcm"));
  auto posted = orthanc_.client->Post("/instances", image, "application/dicom");
  ASSERT_TRUE(posted && posted->status == 200);
  const std::string study = json::parse(posted->body).value("ParentStudy", std::string());
  ASSERT_TRUE(wait_for(std::chrono::seconds(240), [&] { return fhir.received().size() >= 3; })) << diagnostics();
  ASSERT_TRUE(pacs_settled()) << diagnostics();  // the SR's arrival must not report the study again
  pacs_->stop();

  const auto got = fhir.received();
  ASSERT_EQ(got.size(), 3u) << diagnostics();
  const auto srs = orthanc_.sr_instances(study);
  ASSERT_EQ(srs.size(), 1u) << "a FHIR retry must not store a second SR";
  auto sr = pipeline::read_report_sr(orthanc_.file(srs[0]));
  ASSERT_TRUE(sr.ok()) << sr.status();
  std::set<std::string> identifiers;
  for (const auto& g : got) {
    EXPECT_EQ(g.path, "/fhir/DiagnosticReport");
    EXPECT_EQ(g.content_type, "application/fhir+json");
    identifiers.insert(json::parse(g.body)["identifier"][0]["value"].get<std::string>());
  }
  EXPECT_EQ(identifiers.size(), 1u) << "the same report of the same study keeps its identifier";
  const auto v = cmn::testing::validate_fhir_json(got.back().body);
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  const json report = json::parse(got.back().body);
  EXPECT_EQ(report["imagingStudy"][0]["identifier"]["value"], "urn:oid:" + sr->study_instance_uid);
  const std::string conclusion = report["conclusion"];
  ASSERT_FALSE(sr->text().empty());
  ASSERT_GE(conclusion.size(), sr->text().size());
  EXPECT_EQ(conclusion.substr(conclusion.size() - sr->text().size()), sr->text()) << "the SR's text";
  EXPECT_FALSE(report.contains("subject"));

  // Logs: the retry and the success, and no study UID or patient attribute.
  const std::string logs = pacs_->err() + pacs_->out();
  EXPECT_NE(logs.find("HTTP 503"), std::string::npos) << logs;
  EXPECT_NE(logs.find("fhir=posted"), std::string::npos) << logs;
  EXPECT_EQ(logs.find(sr->study_instance_uid), std::string::npos) << logs;
  auto file = parse(image);
  for (const DcmTagKey& key : {DCM_PatientName, DCM_PatientID}) {
    const std::string value = get(file->getDataset(), key);
    if (value.size() >= 4) {
      EXPECT_EQ(logs.find(value), std::string::npos) << "cmn-pacs log contains a patient attribute";
    }
  }
  auto state = load_state(dir_->file("pacs-state.json"));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->done.size(), 1u);
  EXPECT_TRUE(state->failed.empty());
}

}  // namespace
}  // namespace cmn::pacs::testing
