#include "cmn/pipeline/dicom_sr.h"

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>

#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/dsrdoc.h>
#include <dcmtk/oflog/oflog.h>
#include <openssl/sha.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cmn::pipeline {

namespace {

// DCMTK logs through its own logger (to stderr); every problem here is reported through the returned status.
void quiet_dcmtk_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const char* logger : {"dcmtk.dcmdata", "dcmtk.dcmsr"}) {
      OFLog::getLogger(logger).setLogLevel(OFLogger::FATAL_LOG_LEVEL);
    }
  });
}

std::string condition_text(const OFCondition& cond) { return cond.text() == nullptr ? "?" : cond.text(); }

std::string get_string(DcmItem* item, const DcmTagKey& key) {
  OFString value;
  if (item->findAndGetOFStringArray(key, value).bad()) return "";
  return std::string(value.c_str());
}

// A Part 10 file or a bare dataset (any transfer syntax DCMTK detects) from memory.
absl::StatusOr<std::unique_ptr<DcmFileFormat>> parse_bytes(const std::string& bytes, const std::string& label) {
  quiet_dcmtk_once();
  auto file = std::make_unique<DcmFileFormat>();
  DcmInputBufferStream stream;
  stream.setBuffer(bytes.data(), static_cast<offile_off_t>(bytes.size()));
  stream.setEos();
  file->transferInit();
  const OFCondition cond = file->read(stream, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
  file->transferEnd();
  if (cond.bad() || file->getDataset() == nullptr || file->getDataset()->card() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not a readable DICOM instance (", condition_text(cond), ")"));
  }
  return file;
}

// Explicit VR little endian Part 10 bytes of `file` (meta information regenerated from the dataset).
absl::StatusOr<std::string> serialize(DcmFileFormat& file) {
  const OFCondition valid = file.validateMetaInfo(EXS_LittleEndianExplicit);
  if (valid.bad()) return absl::InternalError(absl::StrCat("DICOM SR meta information: ", condition_text(valid)));
  std::string out;
  std::array<char, 64 * 1024> buffer;
  DcmOutputBufferStream stream(buffer.data(), buffer.size());
  file.transferInit();
  OFCondition cond = EC_StreamNotifyClient;
  while (cond == EC_StreamNotifyClient) {
    cond = file.write(stream, EXS_LittleEndianExplicit, EET_ExplicitLength, nullptr);
    void* data = nullptr;
    offile_off_t length = 0;
    stream.flushBuffer(data, length);
    out.append(static_cast<const char*>(data), static_cast<size_t>(length));
  }
  file.transferEnd();
  if (cond.bad()) return absl::InternalError(absl::StrCat("writing the DICOM SR failed: ", condition_text(cond)));
  return out;
}

// 128 bits as a decimal number (for 2.25 UIDs; at most 39 digits).
std::string decimal_u128(unsigned __int128 value) {
  if (value == 0) return "0";
  std::string digits;
  while (value > 0) {
    digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(value % 10)));
    value /= 10;
  }
  return digits;
}

// The first 128 bits of the SHA-256 of `text`.
unsigned __int128 sha256_u128(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  unsigned __int128 value = 0;
  for (int i = 0; i < 16; ++i) value = (value << 8) | digest[i];
  return value;
}

bool valid_uid_prefix(const std::string& root) {
  if (root.empty() || root.front() == '.' || root.back() == '.') return false;
  for (size_t i = 0; i < root.size(); ++i) {
    const char c = root[i];
    if (c == '.') {
      if (root[i - 1] == '.') return false;
      continue;
    }
    if (c < '0' || c > '9') return false;
    // A component may not have a leading zero (PS3.5 9.1), except "0" itself.
    if (c == '0' && (i == 0 || root[i - 1] == '.') && i + 1 < root.size() && root[i + 1] != '.') return false;
  }
  return true;
}

std::string default_statement(const SrOptions& options) {
  std::string text = absl::StrCat("MACHINE-GENERATED DRAFT, NOT VERIFIED, NOT FOR DIAGNOSTIC USE. Written by ",
                                   options.manufacturer, " model ", options.model_name,
                                   options.model_version.empty() ? "" : " version ", options.model_version,
                                   "; it must be reviewed and signed by a radiologist.");
  if (options.untrained) {
    absl::StrAppend(&text, " UNTRAINED model (random weights): this text is not a report.");
  }
  return text;
}

struct SourceInfo {
  SrEvidence uids;
  std::unique_ptr<DcmFileFormat> file;
};

}  // namespace

std::string ReportSr::text() const { return absl::StrJoin(findings, " "); }

absl::StatusOr<std::string> make_uid(const std::string& root) {
  static std::mutex mutex;
  static std::mt19937_64 engine{std::random_device{}()};
  unsigned __int128 value;
  {
    std::lock_guard<std::mutex> lock(mutex);
    value = (static_cast<unsigned __int128>(engine()) << 64) | engine();
  }
  if (root.empty()) {
    // PS3.5 B.2: "2.25." + a random (version 4, variant 10) UUID as one decimal integer.
    value &= ~(static_cast<unsigned __int128>(0xF) << 76);
    value |= static_cast<unsigned __int128>(0x4) << 76;
    value &= ~(static_cast<unsigned __int128>(0x3) << 62);
    value |= static_cast<unsigned __int128>(1) << 63;
    return absl::StrCat("2.25.", decimal_u128(value));
  }
  if (!valid_uid_prefix(root)) {
    return absl::InvalidArgumentError(absl::StrCat("uid_root '", root, "' is not a valid UID prefix (digits and dots, "
                                                   "no empty or zero-led components)"));
  }
  // root + "." + as many random digits as fit in 64 characters. Not DCMTK's dcmGenerateUniqueIdentifier: it
  // silently truncates to 64 characters under a long root, which can make two UIDs equal.
  constexpr size_t kMinRandomDigits = 20;  // >= 64 bits of randomness
  const std::string digits = decimal_u128(value | (static_cast<unsigned __int128>(1) << 127));  // 39 digits
  if (root.size() + 1 + kMinRandomDigits > 64) {
    return absl::InvalidArgumentError(absl::StrCat("uid_root '", root, "' is too long (", root.size(),
                                                   " characters): UIDs under it need ", kMinRandomDigits,
                                                   " random digits and DICOM allows 64 characters in all"));
  }
  return absl::StrCat(root, ".", digits.substr(0, std::min(digits.size(), 64 - root.size() - 1)));
}

absl::StatusOr<std::string> write_report_sr(const std::vector<std::string>& sources,
                                            const std::vector<std::string>& sentences, const SrOptions& options) {
  quiet_dcmtk_once();
  if (sources.empty()) return absl::InvalidArgumentError("DICOM SR: no source instance to report on");

  // 1. The source instances: their UIDs for the evidence, the first one's patient and study modules.
  std::vector<SourceInfo> used;
  std::set<std::string> seen;
  for (size_t i = 0; i < sources.size(); ++i) {
    const std::string label = absl::StrCat("source[", i, "]");
    auto file = parse_bytes(sources[i], label);
    if (!file.ok()) return file.status();
    DcmDataset* dataset = (*file)->getDataset();
    SrEvidence uids{get_string(dataset, DCM_StudyInstanceUID), get_string(dataset, DCM_SeriesInstanceUID),
                    get_string(dataset, DCM_SOPClassUID), get_string(dataset, DCM_SOPInstanceUID)};
    if (uids.study_instance_uid.empty() || uids.series_instance_uid.empty() || uids.sop_class_uid.empty() ||
        uids.sop_instance_uid.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, uids.sop_instance_uid.empty() ? "" : " (" + uids.sop_instance_uid + ")",
                       ": lacks StudyInstanceUID, SeriesInstanceUID, SOPClassUID or SOPInstanceUID, which the "
                       "SR's evidence must list"));
    }
    if (!used.empty() && uids.study_instance_uid != used.front().uids.study_instance_uid) {
      return absl::InvalidArgumentError(absl::StrCat("DICOM SR: the sources belong to several studies (",
                                                     used.front().uids.study_instance_uid, " and ",
                                                     uids.study_instance_uid, ")"));
    }
    if (!seen.insert(uids.sop_instance_uid).second) continue;
    used.push_back({std::move(uids), std::move(*file)});
  }
  DcmDataset* first = used.front().file->getDataset();
  const std::string study_uid = used.front().uids.study_instance_uid;

  std::string device_uid = options.device_uid;
  if (device_uid.empty()) {
    device_uid = absl::StrCat("2.25.", decimal_u128(sha256_u128(absl::StrCat(options.manufacturer, "\n",
                                                                            options.model_name, "\n",
                                                                            options.model_version))));
  }
  auto series_uid = make_uid(options.uid_root);
  if (!series_uid.ok()) return series_uid.status();
  auto instance_uid = make_uid(options.uid_root);
  if (!instance_uid.ok()) return instance_uid.status();

  // 2. Document header: patient and study copied from the source, a new SR series in the same study.
  DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
  auto check = [](const OFCondition& cond, const char* what) -> absl::Status {
    if (cond.good()) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("DICOM SR: ", what, ": ", condition_text(cond)));
  };
  const std::string charset = get_string(first, DCM_SpecificCharacterSet);
  if (!charset.empty()) {
    if (absl::Status s = check(doc.setSpecificCharacterSet(charset.c_str(), OFFalse), "SpecificCharacterSet"); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = check(doc.readStudyData(*first), "copying the patient and study modules"); !s.ok()) return s;
  if (absl::Status s = check(doc.createNewSeriesInStudy(study_uid.c_str()), "new series"); !s.ok()) return s;
  const std::string version_text = options.model_version.empty() ? "" : " " + options.model_version;
  doc.setSeriesDescription(options.series_description.c_str(), OFFalse);
  doc.setSeriesNumber(std::to_string(options.series_number).c_str(), OFFalse);
  doc.setInstanceNumber("1", OFFalse);
  doc.setManufacturer(options.manufacturer.c_str(), OFFalse);
  doc.setManufacturerModelName((options.model_name + version_text).c_str(), OFFalse);
  doc.setSoftwareVersions(absl::StrCat(options.manufacturer, version_text).c_str(), OFFalse);
  OFString date, time;
  DcmDate::getCurrentDate(date);
  DcmTime::getCurrentTime(time, OFTrue /*seconds*/, OFFalse /*fraction*/);
  doc.setContentDate(date, OFFalse);
  doc.setContentTime(time, OFFalse);
  for (const auto& source : used) {
    const SrEvidence& e = source.uids;
    if (absl::Status s = check(doc.getCurrentRequestedProcedureEvidence().addItem(
                                   e.study_instance_uid.c_str(), e.series_instance_uid.c_str(),
                                   e.sop_class_uid.c_str(), e.sop_instance_uid.c_str(), OFFalse),
                               "evidence");
        !s.ok()) {
      return s;
    }
  }

  // 3. Content tree (TID 2000; layout in dicom_sr.h).
  DSRDocumentTree& tree = doc.getTree();
  if (tree.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container) == 0) {
    return absl::InternalError("DICOM SR: cannot add the root container");
  }
  tree.getCurrentContentItem().setConceptName(DSRCodedEntryValue("18748-4", "LN", "Diagnostic Imaging Report"));
  if (absl::Status s = check(tree.setTemplateIdentification("2000", "DCMR"), "template identification"); !s.ok()) {
    return s;
  }
  auto add = [&](DSRTypes::E_RelationshipType rel, DSRTypes::E_ValueType type, const DSRCodedEntryValue& concept,
                 bool child) -> absl::Status {
    const OFCondition cond = child ? tree.addChildContentItem(rel, type, concept, OFFalse)
                                   : tree.addContentItem(rel, type, concept, OFFalse);
    return check(cond, "adding a content item");
  };
  auto set_text = [&](const std::string& text) {
    return check(tree.getCurrentContentItem().setStringValue(text.c_str(), OFFalse), "text value");
  };
  absl::Status s;
  // Language of content (TID 1204).
  s = add(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Code, CODE_DCM_LanguageOfContentItemAndDescendants, true);
  if (s.ok()) s = check(tree.getCurrentContentItem().setCodeValue(DSRCodedEntryValue("en", "RFC5646", "English"), OFFalse),
                        "language");
  // Observation context: the device observer (TID 1001 / 1004).
  if (s.ok()) s = add(DSRTypes::RT_hasObsContext, DSRTypes::VT_Code, CODE_DCM_ObserverType, false);
  if (s.ok()) s = check(tree.getCurrentContentItem().setCodeValue(CODE_DCM_Device, OFFalse), "observer type");
  if (s.ok()) s = add(DSRTypes::RT_hasObsContext, DSRTypes::VT_UIDRef, CODE_DCM_DeviceObserverUID, false);
  if (s.ok()) s = set_text(device_uid);
  if (s.ok()) s = add(DSRTypes::RT_hasObsContext, DSRTypes::VT_Text, CODE_DCM_DeviceObserverName, false);
  if (s.ok()) s = set_text(options.model_name);
  if (s.ok()) s = add(DSRTypes::RT_hasObsContext, DSRTypes::VT_Text, CODE_DCM_DeviceObserverManufacturer, false);
  if (s.ok()) s = set_text(options.manufacturer);
  if (s.ok()) s = add(DSRTypes::RT_hasObsContext, DSRTypes::VT_Text, CODE_DCM_DeviceObserverModelName, false);
  if (s.ok()) s = set_text(absl::StrCat(options.manufacturer, " ", options.model_name, version_text));
  // Findings: the draft statement first, then one Finding per sentence.
  if (s.ok()) s = add(DSRTypes::RT_contains, DSRTypes::VT_Container, CODE_DCM_Finding, false);
  if (s.ok()) s = add(DSRTypes::RT_contains, DSRTypes::VT_Text, CODE_DCM_Comment, true);
  if (s.ok()) s = set_text(options.draft_statement.empty() ? default_statement(options) : options.draft_statement);
  for (size_t i = 0; s.ok() && i < sentences.size(); ++i) {
    s = add(DSRTypes::RT_contains, DSRTypes::VT_Text, CODE_DCM_Finding, false);
    if (s.ok()) s = set_text(sentences[i]);
  }
  if (!s.ok()) return s;
  // COMPLETE: the draft is all the model will say; UNVERIFIED is DSRDocument's default and stays so.
  if (absl::Status c = check(doc.completeDocument(), "completion flag"); !c.ok()) return c;

  // 4. Dataset, then the UIDs from the configured root (DSRDocument would use DCMTK's own root).
  DcmFileFormat out;
  if (absl::Status w = check(doc.write(*out.getDataset()), "writing the document"); !w.ok()) return w;
  DcmDataset* dataset = out.getDataset();
  dataset->putAndInsertString(DCM_SeriesInstanceUID, series_uid->c_str());
  dataset->putAndInsertString(DCM_SOPInstanceUID, instance_uid->c_str());
  return serialize(out);
}

absl::StatusOr<ReportSr> read_report_sr(const std::string& bytes) {
  auto file = parse_bytes(bytes, "DICOM SR");
  if (!file.ok()) return file.status();
  DSRDocument doc;
  const OFCondition cond = doc.read(*(*file)->getDataset());
  if (cond.bad()) return absl::InvalidArgumentError(absl::StrCat("not a DICOM SR DCMTK can read: ", condition_text(cond)));
  ReportSr sr;
  OFString value;
  sr.sop_class_uid = doc.getSOPClassUID(value).good() ? value.c_str() : "";
  sr.sop_instance_uid = doc.getSOPInstanceUID(value).good() ? value.c_str() : "";
  sr.series_instance_uid = doc.getSeriesInstanceUID(value).good() ? value.c_str() : "";
  sr.study_instance_uid = doc.getStudyInstanceUID(value).good() ? value.c_str() : "";
  sr.series_description = doc.getSeriesDescription(value).good() ? value.c_str() : "";
  sr.completion_flag = DSRTypes::completionFlagToEnumeratedValue(doc.getCompletionFlag());
  sr.verification_flag = DSRTypes::verificationFlagToEnumeratedValue(doc.getVerificationFlag());

  DSRDocumentTree& tree = doc.getTree();
  if (tree.gotoRoot() > 0) {
    OFString tid, resource;
    if (tree.getCurrentContentItem().getTemplateIdentification(tid, resource).good()) sr.template_id = tid.c_str();
    do {
      DSRContentItem& item = tree.getCurrentContentItem();
      const std::string code = item.getConceptName().getCodeValue().c_str();
      const std::string text = item.getStringValue().c_str();
      if (item.getValueType() == DSRTypes::VT_Text && code == "121071") sr.findings.push_back(text);
      if (item.getValueType() == DSRTypes::VT_Text && code == "121106") sr.draft_statement = text;
      if (item.getValueType() == DSRTypes::VT_Text && code == "121013") sr.device_observer_name = text;
      if (item.getValueType() == DSRTypes::VT_UIDRef && code == "121012") sr.device_observer_uid = text;
    } while (tree.iterate() > 0);
  }
  DSRSOPInstanceReferenceList& evidence = doc.getCurrentRequestedProcedureEvidence();
  if (evidence.gotoFirstItem().good()) {
    do {
      SrEvidence e;
      OFString v;
      e.study_instance_uid = evidence.getStudyInstanceUID(v).c_str();
      e.series_instance_uid = evidence.getSeriesInstanceUID(v).c_str();
      e.sop_class_uid = evidence.getSOPClassUID(v).c_str();
      e.sop_instance_uid = evidence.getSOPInstanceUID(v).c_str();
      sr.evidence.push_back(std::move(e));
    } while (evidence.gotoNextItem().good());
  }
  return sr;
}

}  // namespace cmn::pipeline
