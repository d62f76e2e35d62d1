// The report SR (cmn/pipeline/dicom_sr.h): structure checked by DCMTK's own dsrdump / dcmdump, the evidence
// against what preprocessing chose, the text round trip, the copied patient/study modules.
#include "cmn/pipeline/dicom_sr.h"

#include <algorithm>
#include <set>
#include <tuple>

#include <gtest/gtest.h>

#include "cmn/preprocessing/dicom.h"
#include "common/sr_validators.h"
#include "pacs/pacs_test_util.h"

namespace cmn::pacs::testing {
namespace {

constexpr char kStudyUid[] = "1.2.826.0.1.3680043.10.543.7.1";
constexpr char kComprehensiveSr[] = "1.2.840.10008.5.1.4.1.1.88.33";

// Three real chest radiographs made into one study of one (fictional) patient: two PA, one lateral.
std::vector<std::string> one_study() {
  const std::vector<std::pair<DcmTagKey, std::string>> common = {
      {DCM_StudyInstanceUID, kStudyUid}, {DCM_PatientName, "Testpatient^Jane"}, {DCM_PatientID, "PID-4711"},
      {DCM_PatientBirthDate, "19700101"}, {DCM_AccessionNumber, "ACC-99"}, {DCM_StudyID, "S1"}};
  auto with = [&](std::vector<std::pair<DcmTagKey, std::string>> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  return {
      edit_dicom(chest("gdcm-CR-MONO1-10-chest_explicitLE.dcm"),
                 with({{DCM_ViewPosition, "PA"}, {DCM_SeriesNumber, "1"}, {DCM_SOPInstanceUID, "1.2.826.0.1.3680043.10.543.7.1.1.1"},
                       {DCM_SeriesInstanceUID, "1.2.826.0.1.3680043.10.543.7.1.1"}})),
      edit_dicom(chest("NIH-ChestXray14_DX_implicitLE.dcm"),
                 with({{DCM_ViewPosition, "LL"}, {DCM_SeriesNumber, "2"}, {DCM_SOPInstanceUID, "1.2.826.0.1.3680043.10.543.7.1.2.1"},
                       {DCM_SeriesInstanceUID, "1.2.826.0.1.3680043.10.543.7.1.2"}})),
      edit_dicom(chest("RG1_J2KI.dcm"),
                 with({{DCM_ViewPosition, "PA"}, {DCM_SeriesNumber, "3"}, {DCM_SOPInstanceUID, "1.2.826.0.1.3680043.10.543.7.1.3.1"},
                       {DCM_SeriesInstanceUID, "1.2.826.0.1.3680043.10.543.7.1.3"}})),
  };
}

pipeline::SrOptions test_options() {
  pipeline::SrOptions options;
  options.uid_root = "1.2.826.0.1.3680043.10.543";
  options.model_name = "cmn-untrained-test";
  options.model_version = "0.7";
  options.untrained = true;
  return options;
}

const std::vector<std::string> kSentences = {"the heart is normal in size .", "the lungs are clear .",
                                             "no pleural effusion or pneumothorax ."};

TEST(DicomSrTest, DsrdumpAndDcmdumpReadItWithoutWarnings) {
  ScopedDir dir("dsrdump");
  const auto study = one_study();
  auto sr = pipeline::write_report_sr({study[0], study[1]}, kSentences, test_options());
  ASSERT_TRUE(sr.ok()) << sr.status();
  write_bytes(dir.file("sr.dcm"), *sr);

  // dsrdump checks the SR IOD's relationship content constraints and value types; any deviation is a warning
  // or an error on stderr.
  const ProcessResult dsr = run_process({"dsrdump", "+Pt", "+Pl", "+Pc", dir.file("sr.dcm")}, dir.path());
  ASSERT_NE(dsr.exit_code, 127) << "dsrdump (Debian: dcmtk) not installed";
  EXPECT_EQ(dsr.exit_code, 0) << dsr.err;
  EXPECT_EQ(dsr.err, "") << "dsrdump complained";
  EXPECT_NE(dsr.out.find("Comprehensive SR Document"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find(": COMPLETE\n"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find(": UNVERIFIED\n"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("(18748-4,LN,\"Diagnostic Imaging Report\")"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("(121070,DCM,\"Findings\")"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("(121071,DCM,\"Finding\")"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("(121111,DCM,\"Summary\")"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find(": PRELIMINARY\n"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("(121007,DCM,\"Device\")"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("(en,RFC5646,\"English\")"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("Diagnostic Imaging Report"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("TID 2000 (DCMR)"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("\"the lungs are clear .\""), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("NOT FOR DIAGNOSTIC USE"), std::string::npos) << dsr.out;
  EXPECT_NE(dsr.out.find("Device Observer Name"), std::string::npos) << dsr.out;

  const ProcessResult dump = run_process({"dcmdump", "-dc", "+E", dir.file("sr.dcm")}, dir.path());
  EXPECT_EQ(dump.exit_code, 0) << dump.err;
  EXPECT_EQ(dump.err, "") << "dcmdump complained";
  EXPECT_NE(dump.out.find("(0040,a375) SQ"), std::string::npos) << "no Current Requested Procedure Evidence Sequence";
  EXPECT_NE(dump.out.find("[SR]"), std::string::npos) << "Modality is not SR";
  EXPECT_EQ(cmn::testing::sr_validator_problems({*sr}, "TID_2000", {study[0], study[1]}), "");
}

TEST(DicomSrTest, EvidenceListsExactlyTheInstancesPreprocessingChose) {
  const auto study = one_study();
  std::vector<preprocessing::InstanceInfo> infos;
  for (size_t i = 0; i < study.size(); ++i) {
    auto info = preprocessing::read_dicom_info(study[i], "instance[" + std::to_string(i) + "]");
    ASSERT_TRUE(info.ok()) << info.status();
    infos.push_back(*info);
  }
  preprocessing::StudyOptions options;
  options.views = 2;  // frontal + lateral: one of the two PA images is surplus
  auto selection = preprocessing::select_views(infos, options);
  ASSERT_TRUE(selection.ok()) << selection.status();
  ASSERT_EQ(selection->skipped.size(), 1u);

  std::vector<std::string> used;
  std::set<std::string> expected;
  for (size_t index : selection->slot_inputs) {
    used.push_back(study[index]);
    expected.insert(infos[index].sop_instance_uid);
  }
  auto bytes = pipeline::write_report_sr(used, kSentences, test_options());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto sr = pipeline::read_report_sr(*bytes);
  ASSERT_TRUE(sr.ok()) << sr.status();

  std::set<std::string> listed;
  for (const auto& e : sr->evidence) {
    listed.insert(e.sop_instance_uid);
    EXPECT_EQ(e.study_instance_uid, kStudyUid);
    const auto info = std::find_if(infos.begin(), infos.end(),
                                   [&](const auto& i) { return i.sop_instance_uid == e.sop_instance_uid; });
    ASSERT_NE(info, infos.end());
    EXPECT_EQ(e.series_instance_uid, info->series_instance_uid);
    EXPECT_EQ(e.sop_class_uid, info->sop_class_uid);
  }
  EXPECT_EQ(sr->evidence.size(), expected.size());
  EXPECT_EQ(listed, expected);
  EXPECT_EQ(listed.count(selection->skipped[0].instance.sop_instance_uid), 0u) << "a skipped instance is evidence";
  EXPECT_EQ(cmn::testing::sr_validator_problems({*bytes}, "TID_2000", used), "");
}

TEST(DicomSrTest, TextFlagsAndUidsRoundTrip) {
  const auto study = one_study();
  const pipeline::SrOptions options = test_options();
  // The same instance twice is listed once.
  auto bytes = pipeline::write_report_sr({study[0], study[1], study[0]}, kSentences, options);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto sr = pipeline::read_report_sr(*bytes);
  ASSERT_TRUE(sr.ok()) << sr.status();
  EXPECT_EQ(sr->findings, kSentences);
  EXPECT_EQ(sr->text(), "the heart is normal in size . the lungs are clear . no pleural effusion or pneumothorax .");
  EXPECT_EQ(sr->evidence.size(), 2u);
  EXPECT_EQ(sr->sop_class_uid, kComprehensiveSr);
  EXPECT_EQ(sr->completion_flag, "COMPLETE");
  EXPECT_EQ(sr->verification_flag, "UNVERIFIED");
  EXPECT_EQ(sr->template_id, "2000");
  EXPECT_EQ(sr->study_instance_uid, kStudyUid);
  EXPECT_EQ(sr->device_observer_name, "cmn-untrained-test");
  EXPECT_NE(sr->draft_statement.find("NOT VERIFIED"), std::string::npos) << sr->draft_statement;
  EXPECT_NE(sr->draft_statement.find("UNTRAINED"), std::string::npos) << sr->draft_statement;
  EXPECT_NE(sr->series_description.find("AI DRAFT"), std::string::npos);
  // New series and instance under the configured root, never a source's.
  EXPECT_EQ(sr->series_instance_uid.rfind(options.uid_root + ".", 0), 0u) << sr->series_instance_uid;
  EXPECT_EQ(sr->sop_instance_uid.rfind(options.uid_root + ".", 0), 0u) << sr->sop_instance_uid;
  EXPECT_NE(sr->series_instance_uid, sr->sop_instance_uid);
  for (const auto& e : sr->evidence) EXPECT_NE(e.series_instance_uid, sr->series_instance_uid);
  // The device observer is one stable UID per model version.
  auto again = pipeline::read_report_sr(*pipeline::write_report_sr({study[0]}, kSentences, options));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->device_observer_uid, sr->device_observer_uid);
  EXPECT_NE(again->sop_instance_uid, sr->sop_instance_uid);
  EXPECT_EQ(sr->device_observer_uid.rfind("2.25.", 0), 0u);
  EXPECT_EQ(cmn::testing::sr_validator_problems({*bytes}, "TID_2000", {study[0], study[1]}), "");
}

TEST(DicomSrTest, ConsistencyIsASecondSummaryItemAndWarnsUnderTheThreshold) {
  const auto study = one_study();
  pipeline::SrOptions options = test_options();
  // No score (a model without the alignment head): no item at all.
  auto none = pipeline::read_report_sr(*pipeline::write_report_sr({study[0]}, kSentences, options));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->consistency_statement, "");
  options.consistency = 0.8734;
  options.consistency_warn_below = 0.5;
  auto high = pipeline::write_report_sr({study[0]}, kSentences, options);
  ASSERT_TRUE(high.ok()) << high.status();
  auto sr = pipeline::read_report_sr(*high);
  ASSERT_TRUE(sr.ok()) << sr.status();
  EXPECT_EQ(sr->consistency_statement,
            "Image-report consistency 0.873 (the model's probability that this draft matches the images)");
  EXPECT_NE(sr->draft_statement.find("NOT VERIFIED"), std::string::npos);  // the statement stays first
  EXPECT_EQ(sr->findings, kSentences);
  options.consistency = 0.21;
  auto low = pipeline::write_report_sr({study[0]}, kSentences, options);
  ASSERT_TRUE(low.ok()) << low.status();
  EXPECT_EQ(pipeline::read_report_sr(*low)->consistency_statement,
            "Image-report consistency 0.210 (the model's probability that this draft matches the images); "
            "low image-text consistency: review first");
  // Both still TID 2000 as PixelMed and dciodvfy read it.
  EXPECT_EQ(cmn::testing::sr_validator_problems({*high, *low}, "TID_2000", {study[0]}), "");
}

TEST(DicomSrTest, CopiesPatientAndStudyModulesFromTheSource) {
  const auto study = one_study();
  auto bytes = pipeline::write_report_sr({study[1]}, kSentences, test_options());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto sr = parse(*bytes);
  auto source = parse(study[1]);
  DcmDataset* out = sr->getDataset();
  DcmDataset* in = source->getDataset();
  for (const DcmTagKey& key : {DCM_PatientName, DCM_PatientID, DCM_PatientBirthDate, DCM_PatientSex,
                               DCM_StudyInstanceUID, DCM_StudyDate, DCM_StudyTime, DCM_AccessionNumber, DCM_StudyID,
                               DCM_ReferringPhysicianName}) {
    EXPECT_EQ(get(out, key), get(in, key)) << DcmTag(key).getTagName();
  }
  EXPECT_EQ(get(out, DCM_PatientName), "Testpatient^Jane");
  EXPECT_EQ(get(out, DCM_Modality), "SR");
  EXPECT_EQ(get(out, DCM_Manufacturer), "cmn");
  EXPECT_FALSE(get(out, DCM_ContentDate).empty());
  EXPECT_FALSE(get(out, DCM_ContentTime).empty());
  EXPECT_EQ(get(sr->getMetaInfo(), DCM_MediaStorageSOPInstanceUID), get(out, DCM_SOPInstanceUID));
  EXPECT_EQ(cmn::testing::sr_validator_problems({*bytes}, "TID_2000", {study[1]}), "");
}

TEST(DicomSrTest, RefusesSourcesOfTwoStudiesAndNonDicom) {
  const auto study = one_study();
  const std::string other = edit_dicom(study[0], {{DCM_StudyInstanceUID, "1.2.826.0.1.3680043.10.543.8"}});
  auto mixed = pipeline::write_report_sr({study[0], other}, kSentences, test_options());
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(mixed.status().message().find("several studies"), std::string::npos) << mixed.status();
  EXPECT_EQ(mixed.status().message().find("Testpatient"), std::string::npos) << "patient name in a message";

  auto garbage = pipeline::write_report_sr({std::string("hello, not DICOM")}, kSentences, test_options());
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline::write_report_sr({}, kSentences, test_options()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline::read_report_sr(study[0]).status().code(), absl::StatusCode::kInvalidArgument)
      << "an image is not an SR";
}

TEST(DicomSrTest, UidsUnderTheRootOrUuidDerived) {
  auto uuid = pipeline::make_uid("");
  ASSERT_TRUE(uuid.ok());
  EXPECT_EQ(uuid->rfind("2.25.", 0), 0u);
  EXPECT_LE(uuid->size(), 64u);
  EXPECT_NE(*uuid, *pipeline::make_uid(""));
  auto rooted = pipeline::make_uid("1.2.3");
  ASSERT_TRUE(rooted.ok());
  EXPECT_EQ(rooted->rfind("1.2.3.", 0), 0u);
  EXPECT_EQ(rooted->size(), 6u + 39u) << "root, dot and 39 random digits (a 128-bit number with its top bit set)";
  EXPECT_NE(*rooted, *pipeline::make_uid("1.2.3"));
  EXPECT_EQ(pipeline::make_uid("1.2.03").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline::make_uid("1..2").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pipeline::make_uid("1.2.abc").status().code(), absl::StatusCode::kInvalidArgument);
  // DCMTK's own generator would silently truncate under this root.
  const std::string long_root = "1.2.826.0.1.3680043.10.543.1234567890.1234567890.12345";
  auto too_long = pipeline::make_uid(long_root);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("64"), std::string::npos) << too_long.status();
}

// PixelMed (TID 2000 + Comprehensive SR IOD) and dciodvfy on the shapes a report SR takes: a trained model's
// short report, an untrained model's, a long report, several sources of three transfer syntaxes, and an empty
// report (the model may stop at once).
TEST(DicomSrTest, ValidatorsFindNothingWrongWithAnyShapeOfReportSr) {
  const auto study = one_study();
  pipeline::SrOptions trained = test_options();
  trained.untrained = false;
  trained.model_digest = "sha256:" + std::string(64, 'a');
  std::vector<std::string> long_report;
  for (int i = 0; i < 80; ++i) {
    long_report.push_back("sentence " + std::to_string(i) + " of a long report , with a comma and words ( 3 cm ) .");
  }
  std::vector<std::string> srs;
  for (const auto& [sources, sentences, options] :
       std::vector<std::tuple<std::vector<std::string>, std::vector<std::string>, pipeline::SrOptions>>{
           {{study[0]}, kSentences, trained},
           {{study[1]}, kSentences, test_options()},
           {{study[0]}, long_report, trained},
           {study, kSentences, test_options()},
           {{study[2]}, {}, trained},
       }) {
    auto sr = pipeline::write_report_sr(sources, sentences, options);
    ASSERT_TRUE(sr.ok()) << sr.status();
    srs.push_back(*sr);
  }
  EXPECT_EQ(cmn::testing::sr_validator_problems(srs, "TID_2000", study), "");
}

// IHE AI Results: the algorithm is named in the Contributing Equipment Sequence; its Device UID is the device
// observer's and follows the model's digest, so a retrained model (same name and version) is a new device.
TEST(DicomSrTest, AlgorithmIdentificationReadsBackAndFollowsTheDigest) {
  const auto study = one_study();
  pipeline::SrOptions options = test_options();
  options.model_digest = "sha256:" + std::string(64, '1');
  auto sr = pipeline::read_report_sr(*pipeline::write_report_sr({study[0]}, kSentences, options));
  ASSERT_TRUE(sr.ok()) << sr.status();
  EXPECT_EQ(sr->preliminary_flag, "PRELIMINARY");
  EXPECT_EQ(sr->verification_flag, "UNVERIFIED");
  EXPECT_EQ(sr->manufacturer_model_name, "cmn-untrained-test 0.7") << "cmn-pacs recognises its SRs by it";
  ASSERT_EQ(sr->contributing_equipment.size(), 1u);
  const pipeline::SrEquipment& e = sr->contributing_equipment[0];
  EXPECT_EQ(e.purpose_code, "Newcode1");
  EXPECT_EQ(e.purpose_scheme, "99IHE");
  EXPECT_EQ(e.manufacturer, "cmn");
  EXPECT_EQ(e.model_name, "cmn-untrained-test");
  ASSERT_EQ(e.software_versions.size(), 2u);
  EXPECT_EQ(e.software_versions[0].rfind("cmn ", 0), 0u) << e.software_versions[0];
  EXPECT_EQ(e.software_versions[1], "0.7");
  EXPECT_EQ(e.device_uid, sr->device_observer_uid);
  EXPECT_EQ(e.device_uid.rfind("2.25.", 0), 0u);
  EXPECT_LE(e.device_uid.size(), 64u);

  auto same = pipeline::read_report_sr(*pipeline::write_report_sr({study[1]}, {"other text ."}, options));
  pipeline::SrOptions retrained = options;
  retrained.model_digest = "sha256:" + std::string(64, '2');
  auto other = pipeline::read_report_sr(*pipeline::write_report_sr({study[0]}, kSentences, retrained));
  pipeline::SrOptions no_digest = options;
  no_digest.model_digest.clear();
  auto fallback = pipeline::read_report_sr(*pipeline::write_report_sr({study[0]}, kSentences, no_digest));
  pipeline::SrOptions configured = options;
  configured.device_uid = "1.2.826.0.1.3680043.10.543.99";
  auto fixed = pipeline::read_report_sr(*pipeline::write_report_sr({study[0]}, kSentences, configured));
  ASSERT_TRUE(same.ok() && other.ok() && fallback.ok() && fixed.ok());
  EXPECT_EQ(same->device_observer_uid, sr->device_observer_uid) << "same digest, same device";
  EXPECT_NE(other->device_observer_uid, sr->device_observer_uid) << "a retrained model is a new device";
  EXPECT_EQ(other->contributing_equipment[0].device_uid, other->device_observer_uid);
  EXPECT_NE(fallback->device_observer_uid, sr->device_observer_uid);
  EXPECT_EQ(fixed->device_observer_uid, configured.device_uid);
  EXPECT_EQ(fixed->contributing_equipment[0].device_uid, configured.device_uid);
}

// The validator helper itself: it reports a dciodvfy error of the SR's own, a PixelMed template warning, and a
// document of another template than the one expected (so a clean result above means something).
TEST(DicomSrTest, ValidatorHelperReportsWhatIsWrong) {
  const auto study = one_study();
  pipeline::SrOptions too_long = test_options();
  too_long.series_description = std::string(70, 'x');  // LO: 64 characters at most
  auto bad_vr = pipeline::write_report_sr({study[0]}, kSentences, too_long);
  ASSERT_TRUE(bad_vr.ok()) << bad_vr.status();
  const std::string vr_problems = cmn::testing::sr_validator_problems({*bad_vr}, "TID_2000", {study[0]});
  EXPECT_NE(vr_problems.find("dciodvfy"), std::string::npos) << vr_problems;
  EXPECT_NE(vr_problems.find("Series Description"), std::string::npos) << vr_problems;

  // The section heading of earlier versions, (121071, DCM, "Finding"), which is not in CID 7001.
  auto good = pipeline::write_report_sr({study[0]}, kSentences, test_options());
  ASSERT_TRUE(good.ok()) << good.status();
  auto file = parse(*good);
  bool changed = false;
  DcmItem* root = file->getDataset();
  for (unsigned long i = 0;; ++i) {
    DcmItem* item = nullptr;
    if (root->findAndGetSequenceItem(DCM_ContentSequence, item, static_cast<int>(i)).bad()) break;
    DcmItem* concept = nullptr;
    if (item->findAndGetSequenceItem(DCM_ConceptNameCodeSequence, concept, 0).good() &&
        get(concept, DCM_CodeValue) == "121070") {
      concept->putAndInsertString(DCM_CodeValue, "121071");
      concept->putAndInsertString(DCM_CodeMeaning, "Finding");
      changed = true;
    }
  }
  ASSERT_TRUE(changed);
  DcmFileFormat copy(*file);
  const std::string out_path = ::testing::TempDir() + "/old_heading_" + std::to_string(::getpid()) + ".dcm";
  ASSERT_TRUE(copy.saveFile(out_path.c_str(), EXS_LittleEndianExplicit).good());
  const std::string old_heading = read_bytes(out_path);
  std::remove(out_path.c_str());
  const std::string template_problems = cmn::testing::sr_validator_problems({old_heading}, "TID_2000", {study[0]});
  EXPECT_NE(template_problems.find("not in template"), std::string::npos) << template_problems;

  const std::string wrong_root = cmn::testing::sr_validator_problems({*good}, "TID_1500", {study[0]});
  EXPECT_NE(wrong_root.find("expected root template TID_1500"), std::string::npos) << wrong_root;
}

}  // namespace
}  // namespace cmn::pacs::testing
