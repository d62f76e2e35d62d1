#include "sr_common.h"

#include <algorithm>
#include <array>
#include <mutex>
#include <random>
#include <set>

#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/oflog/oflog.h>
#include <openssl/sha.h>

#include "absl/strings/str_cat.h"

#ifndef CMN_SOFTWARE_VERSION
#define CMN_SOFTWARE_VERSION "unknown"
#endif

namespace cmn::pipeline {
namespace sr_internal {

namespace {

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

// Sets the UUID version nibble and the RFC 4122 variant bits of a 128-bit value.
unsigned __int128 as_uuid(unsigned __int128 value, unsigned version) {
  value &= ~(static_cast<unsigned __int128>(0xF) << 76);
  value |= static_cast<unsigned __int128>(version & 0xF) << 76;
  value &= ~(static_cast<unsigned __int128>(0x3) << 62);
  value |= static_cast<unsigned __int128>(1) << 63;
  return value;
}

// A name-based UUID (version 8, RFC 9562: the first 128 bits of the SHA-256 of `text`) as a 2.25 UID: the same
// text always gives the same UID, a different one a different UID.
std::string hashed_uid(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  unsigned __int128 value = 0;
  for (int i = 0; i < 16; ++i) value = (value << 8) | digest[i];
  return absl::StrCat("2.25.", decimal_u128(as_uuid(value, 8)));
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

// IHE AI Results (AIR) names the Contributing Equipment item of an AI result "Processing Algorithm" and gives it
// the code (Newcode1, 99IHE); DICOM's CID 7005 has no such concept (109103 is "Modifying Equipment", 109102
// "Processing Equipment", which is a device, not an algorithm).
const DSRCodedEntryValue& processing_algorithm() {
  static const DSRCodedEntryValue code("Newcode1", "99IHE", "Processing Algorithm");
  return code;
}

}  // namespace

void quiet_dcmtk_once() {
  // DCMTK logs through its own logger (to stderr); every problem here is reported through the returned status.
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

absl::Status check(const OFCondition& cond, const char* what) {
  if (cond.good()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("DICOM SR: ", what, ": ", condition_text(cond)));
}

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

absl::StatusOr<std::vector<SourceInfo>> read_sources(const std::vector<std::string>& sources) {
  quiet_dcmtk_once();
  if (sources.empty()) return absl::InvalidArgumentError("DICOM SR: no source instance to report on");
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
  return used;
}

std::string device_uid(const SrOptions& options) {
  if (!options.device_uid.empty()) return options.device_uid;
  if (!options.model_digest.empty()) return hashed_uid(absl::StrCat("cmn model digest\n", options.model_digest));
  return hashed_uid(absl::StrCat(options.manufacturer, "\n", options.model_name, "\n", options.model_version));
}

std::string cmn_software_version() { return absl::StrCat("cmn ", CMN_SOFTWARE_VERSION); }

namespace {
std::string model_name_and_version(const SrOptions& options) {
  return options.model_version.empty() ? options.model_name : absl::StrCat(options.model_name, " ", options.model_version);
}
}  // namespace

absl::Status start_document(DSRDocument& doc, const std::vector<SourceInfo>& sources, const SrOptions& options,
                            const std::string& series_description) {
  DcmDataset* first = sources.front().file->getDataset();
  const std::string charset = get_string(first, DCM_SpecificCharacterSet);
  if (!charset.empty()) {
    if (absl::Status s = check(doc.setSpecificCharacterSet(charset.c_str(), OFFalse), "SpecificCharacterSet"); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = check(doc.readStudyData(*first), "copying the patient and study modules"); !s.ok()) return s;
  const std::string study_uid = sources.front().uids.study_instance_uid;
  if (absl::Status s = check(doc.createNewSeriesInStudy(study_uid.c_str()), "new series"); !s.ok()) return s;
  doc.setSeriesDescription(series_description.c_str(), OFFalse);
  doc.setSeriesNumber(std::to_string(options.series_number).c_str(), OFFalse);
  doc.setInstanceNumber("1", OFFalse);
  doc.setManufacturer(options.manufacturer.c_str(), OFFalse);
  doc.setManufacturerModelName(model_name_and_version(options).c_str(), OFFalse);
  doc.setSoftwareVersions(absl::StrCat(cmn_software_version(), "\\", model_name_and_version(options)).c_str(), OFFalse);
  OFString date, time;
  DcmDate::getCurrentDate(date);
  DcmTime::getCurrentTime(time, OFTrue /*seconds*/, OFFalse /*fraction*/);
  doc.setContentDate(date, OFFalse);
  doc.setContentTime(time, OFFalse);
  // A machine draft: preliminary (PS3.3 C.17.2: "the content may be incomplete or subject to change") and not
  // verified by anyone (UNVERIFIED is DSRDocument's default and stays so).
  if (absl::Status s = check(doc.setPreliminaryFlag(DSRTypes::PF_Preliminary), "preliminary flag"); !s.ok()) return s;
  for (const auto& source : sources) {
    const SrEvidence& e = source.uids;
    if (absl::Status s = check(doc.getCurrentRequestedProcedureEvidence().addItem(
                                   e.study_instance_uid.c_str(), e.series_instance_uid.c_str(),
                                   e.sop_class_uid.c_str(), e.sop_instance_uid.c_str(), OFFalse),
                               "evidence");
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status add_item(DSRDocumentTree& tree, DSRTypes::E_RelationshipType rel, DSRTypes::E_ValueType type,
                      const DSRCodedEntryValue& concept, bool child) {
  const OFCondition cond = child ? tree.addChildContentItem(rel, type, concept, OFFalse)
                                 : tree.addContentItem(rel, type, concept, OFFalse);
  return check(cond, "adding a content item");
}

absl::Status set_string(DSRDocumentTree& tree, const std::string& value) {
  return check(tree.getCurrentContentItem().setStringValue(value.c_str(), OFFalse), "string value");
}

absl::Status set_code(DSRDocumentTree& tree, const DSRCodedEntryValue& value) {
  return check(tree.getCurrentContentItem().setCodeValue(value, OFFalse), "code value");
}

absl::Status add_language(DSRDocumentTree& tree) {
  // TID 1204: the content is English.
  absl::Status s = add_item(tree, DSRTypes::RT_hasConceptMod, DSRTypes::VT_Code,
                            CODE_DCM_LanguageOfContentItemAndDescendants, true);
  if (s.ok()) s = set_code(tree, DSRCodedEntryValue("en", "RFC5646", "English"));
  return s;
}

absl::Status add_device_observer(DSRDocumentTree& tree, const SrOptions& options) {
  // TID 1001 / 1002 / 1004: the observer is a device, the model.
  absl::Status s = add_item(tree, DSRTypes::RT_hasObsContext, DSRTypes::VT_Code, CODE_DCM_ObserverType, false);
  if (s.ok()) s = set_code(tree, CODE_DCM_Device);
  if (s.ok()) s = add_item(tree, DSRTypes::RT_hasObsContext, DSRTypes::VT_UIDRef, CODE_DCM_DeviceObserverUID, false);
  if (s.ok()) s = set_string(tree, device_uid(options));
  if (s.ok()) s = add_item(tree, DSRTypes::RT_hasObsContext, DSRTypes::VT_Text, CODE_DCM_DeviceObserverName, false);
  if (s.ok()) s = set_string(tree, options.model_name);
  if (s.ok()) {
    s = add_item(tree, DSRTypes::RT_hasObsContext, DSRTypes::VT_Text, CODE_DCM_DeviceObserverManufacturer, false);
  }
  if (s.ok()) s = set_string(tree, options.manufacturer);
  if (s.ok()) s = add_item(tree, DSRTypes::RT_hasObsContext, DSRTypes::VT_Text, CODE_DCM_DeviceObserverModelName, false);
  if (s.ok()) s = set_string(tree, model_name_and_version(options));
  return s;
}

absl::StatusOr<std::string> finish_document(
    DSRDocument& doc, const SrOptions& options,
    const std::vector<std::pair<std::string, std::string>>& private_schemes) {
  auto series_uid = make_uid(options.uid_root);
  if (!series_uid.ok()) return series_uid.status();
  auto instance_uid = make_uid(options.uid_root);
  if (!instance_uid.ok()) return instance_uid.status();
  // COMPLETE: the draft is all the model will say.
  if (absl::Status c = check(doc.completeDocument(), "completion flag"); !c.ok()) return c;
  DcmFileFormat out;
  if (absl::Status w = check(doc.write(*out.getDataset()), "writing the document"); !w.ok()) return w;
  DcmDataset* dataset = out.getDataset();
  // The UIDs from the configured root (DSRDocument would use DCMTK's own root).
  dataset->putAndInsertString(DCM_SeriesInstanceUID, series_uid->c_str());
  dataset->putAndInsertString(DCM_SOPInstanceUID, instance_uid->c_str());

  // IHE AIR algorithm identification (SOP Common Module): which algorithm, which version, one Device UID per
  // model identity.
  DcmItem* equipment = nullptr;
  OFCondition cond = dataset->findOrCreateSequenceItem(DCM_ContributingEquipmentSequence, equipment, 0);
  DcmItem* purpose = nullptr;
  if (cond.good()) cond = equipment->findOrCreateSequenceItem(DCM_PurposeOfReferenceCodeSequence, purpose, 0);
  if (cond.good()) cond = processing_algorithm().writeSequenceItem(*purpose, DCM_PurposeOfReferenceCodeSequence);
  if (cond.good()) cond = equipment->putAndInsertString(DCM_Manufacturer, options.manufacturer.c_str());
  if (cond.good()) cond = equipment->putAndInsertString(DCM_ManufacturerModelName, options.model_name.c_str());
  const std::string versions =
      options.model_version.empty() ? cmn_software_version() : absl::StrCat(cmn_software_version(), "\\", options.model_version);
  if (cond.good()) cond = equipment->putAndInsertString(DCM_SoftwareVersions, versions.c_str());
  if (cond.good()) cond = equipment->putAndInsertString(DCM_DeviceUID, device_uid(options).c_str());
  OFString now;
  DcmDateTime::getCurrentDateTime(now, OFTrue /*seconds*/, OFFalse /*fraction*/, OFTrue /*time zone*/);
  if (cond.good()) cond = equipment->putAndInsertString(DCM_ContributionDateTime, now.c_str());
  if (cond.good()) {
    cond = equipment->putAndInsertString(DCM_ContributionDescription, "machine-generated draft report (AI)");
  }
  if (absl::Status s = check(cond, "Contributing Equipment Sequence"); !s.ok()) return s;

  // The private coding schemes the document uses, named (SOP Common Module, Coding Scheme Identification).
  std::vector<std::pair<std::string, std::string>> schemes = {{"99IHE", "IHE temporary codes (AI Results profile)"}};
  for (const auto& [designator, name] : private_schemes) schemes.emplace_back(designator, name);
  for (size_t i = 0; cond.good() && i < schemes.size(); ++i) {
    DcmItem* scheme = nullptr;
    cond = dataset->findOrCreateSequenceItem(DCM_CodingSchemeIdentificationSequence, scheme, static_cast<long>(i));
    if (cond.good()) cond = scheme->putAndInsertString(DCM_CodingSchemeDesignator, schemes[i].first.c_str());
    if (cond.good()) cond = scheme->putAndInsertString(DCM_CodingSchemeName, schemes[i].second.c_str());
  }
  if (absl::Status s = check(cond, "Coding Scheme Identification Sequence"); !s.ok()) return s;
  return serialize(out);
}

std::vector<SrEquipment> read_contributing_equipment(DcmItem& dataset) {
  std::vector<SrEquipment> out;
  for (int32_t i = 0;; ++i) {
    DcmItem* item = nullptr;
    if (dataset.findAndGetSequenceItem(DCM_ContributingEquipmentSequence, item, i).bad() || item == nullptr) break;
    SrEquipment e;
    DcmItem* purpose = nullptr;
    if (item->findAndGetSequenceItem(DCM_PurposeOfReferenceCodeSequence, purpose, 0).good() && purpose != nullptr) {
      e.purpose_code = get_string(purpose, DCM_CodeValue);
      e.purpose_scheme = get_string(purpose, DCM_CodingSchemeDesignator);
    }
    e.manufacturer = get_string(item, DCM_Manufacturer);
    e.model_name = get_string(item, DCM_ManufacturerModelName);
    e.device_uid = get_string(item, DCM_DeviceUID);
    DcmElement* versions = nullptr;
    const unsigned long count =
        item->findAndGetElement(DCM_SoftwareVersions, versions).good() && versions != nullptr ? versions->getVM() : 0;
    for (unsigned long k = 0; k < count; ++k) {
      OFString v;
      if (item->findAndGetOFString(DCM_SoftwareVersions, v, k).good()) e.software_versions.emplace_back(v.c_str());
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace sr_internal

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
    return absl::StrCat("2.25.", sr_internal::decimal_u128(sr_internal::as_uuid(value, 4)));
  }
  if (!sr_internal::valid_uid_prefix(root)) {
    return absl::InvalidArgumentError(absl::StrCat("uid_root '", root, "' is not a valid UID prefix (digits and dots, "
                                                   "no empty or zero-led components)"));
  }
  // root + "." + as many random digits as fit in 64 characters. Not DCMTK's dcmGenerateUniqueIdentifier: it
  // silently truncates to 64 characters under a long root, which can make two UIDs equal.
  constexpr size_t kMinRandomDigits = 20;  // >= 64 bits of randomness
  const std::string digits = sr_internal::decimal_u128(value | (static_cast<unsigned __int128>(1) << 127));  // 39 digits
  if (root.size() + 1 + kMinRandomDigits > 64) {
    return absl::InvalidArgumentError(absl::StrCat("uid_root '", root, "' is too long (", root.size(),
                                                   " characters): UIDs under it need ", kMinRandomDigits,
                                                   " random digits and DICOM allows 64 characters in all"));
  }
  return absl::StrCat(root, ".", digits.substr(0, std::min(digits.size(), 64 - root.size() - 1)));
}

}  // namespace cmn::pipeline
