#pragma once
// What the two SR writers (dicom_sr.cc: TID 2000 report, findings_sr.cc: TID 1500 coded findings) share: reading
// the source instances, the SR header (patient/study copied, new series, flags, IHE AIR algorithm
// identification in the Contributing Equipment Sequence), the device observer items and Part 10 bytes.
// Private to cmn_dicom_sr.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cmn/pipeline/dicom_sr.h"

namespace cmn::pipeline::sr_internal {

void quiet_dcmtk_once();
std::string condition_text(const OFCondition& cond);
std::string get_string(DcmItem* item, const DcmTagKey& key);
absl::Status check(const OFCondition& cond, const char* what);

// A Part 10 file or a bare dataset (any transfer syntax DCMTK detects) from memory.
absl::StatusOr<std::unique_ptr<DcmFileFormat>> parse_bytes(const std::string& bytes, const std::string& label);
// Explicit VR little endian Part 10 bytes of `file` (meta information regenerated from the dataset).
absl::StatusOr<std::string> serialize(DcmFileFormat& file);

struct SourceInfo {
  SrEvidence uids;
  std::unique_ptr<DcmFileFormat> file;
};
// The distinct source instances (by SOP Instance UID, first occurrence kept), all of one study. Errors as
// write_report_sr documents them.
absl::StatusOr<std::vector<SourceInfo>> read_sources(const std::vector<std::string>& sources);

// The Device UID of the model: options.device_uid, else 2.25.<UUID from the SHA-256 of the model digest>, else
// (no digest) of manufacturer + model name + version.
std::string device_uid(const SrOptions& options);
// "cmn <version of this build>": the first Software Versions value.
std::string cmn_software_version();

// A new SR document of `type` in the sources' study: patient/study modules copied from the first source, new
// series, Manufacturer / Model Name ("<model name> <version>", cmn-pacs recognises its SRs by it) / Software
// Versions, Content Date/Time = now, Preliminary Flag PRELIMINARY, Completion COMPLETE (set by finish_document),
// Verification UNVERIFIED, the evidence.
absl::Status start_document(DSRDocument& doc, const std::vector<SourceInfo>& sources, const SrOptions& options,
                            const std::string& series_description);

// TID 1204 language (English) as the first child of the current (root) content item.
absl::Status add_language(DSRDocumentTree& tree);
// TID 1001/1002/1004 device observer items, after the current content item.
absl::Status add_device_observer(DSRDocumentTree& tree, const SrOptions& options);

// TEXT / UIDREF / CODE item helpers on the current content item (child = below it, else after it).
absl::Status add_item(DSRDocumentTree& tree, DSRTypes::E_RelationshipType rel, DSRTypes::E_ValueType type,
                      const DSRCodedEntryValue& concept, bool child);
absl::Status set_string(DSRDocumentTree& tree, const std::string& value);
absl::Status set_code(DSRDocumentTree& tree, const DSRCodedEntryValue& value);

// Completes the document, writes it and puts the configured UIDs, the Contributing Equipment Sequence (IHE AI
// Results algorithm identification) and the Coding Scheme Identification Sequence (99IHE and `private_schemes`:
// designator, name) into the dataset; returns the Part 10 bytes.
absl::StatusOr<std::string> finish_document(
    DSRDocument& doc, const SrOptions& options,
    const std::vector<std::pair<std::string, std::string>>& private_schemes = {});

// The Contributing Equipment Sequence of a dataset (empty when absent).
std::vector<SrEquipment> read_contributing_equipment(DcmItem& dataset);

}  // namespace cmn::pipeline::sr_internal
