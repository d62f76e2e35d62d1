#include "cmn/pipeline/dicom_sr.h"

#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cmn/pipeline/consistency.h"
#include "sr_common.h"

namespace cmn::pipeline {

using namespace sr_internal;  // NOLINT: the shared SR helpers of this library

namespace {

// CID 7001 "Findings". DCMTK lists it as retired (the current DCMR prefers LOINC section codes); PixelMed's
// TID 2000 validation, the reference here, takes its headings from the CID 7001 that has it.
const DSRCodedEntryValue kFindings("121070", "DCM", "Findings");
const DSRCodedEntryValue kSummary("121111", "DCM", "Summary");

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

}  // namespace

std::string ReportSr::text() const { return absl::StrJoin(findings, " "); }

absl::StatusOr<std::string> write_report_sr(const std::vector<std::string>& sources,
                                            const std::vector<std::string>& sentences, const SrOptions& options) {
  // 1. The source instances; the header (dicom_sr.h).
  auto used = read_sources(sources);
  if (!used.ok()) return used.status();
  DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
  if (absl::Status s = start_document(doc, *used, options, options.series_description); !s.ok()) return s;

  // 2. Content tree (TID 2000; layout in dicom_sr.h).
  DSRDocumentTree& tree = doc.getTree();
  if (tree.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container) == 0) {
    return absl::InternalError("DICOM SR: cannot add the root container");
  }
  tree.getCurrentContentItem().setConceptName(DSRCodedEntryValue("18748-4", "LN", "Diagnostic Imaging Report"));
  if (absl::Status s = check(tree.setTemplateIdentification("2000", "DCMR"), "template identification"); !s.ok()) {
    return s;
  }
  absl::Status s = add_language(tree);
  if (s.ok()) s = add_device_observer(tree, options);
  // The machine-draft statement, first, as a "Summary" section (CID 7001 heading, CID 7002 TEXT): TID 2002 allows
  // no "Comment" in a section, and TID 1210 (an equivalent meaning of the title, the standard's other candidate)
  // fails PixelMed's TID 2000 check. The header says the same in coded form (Preliminary / Verification flags).
  if (s.ok()) s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Container, kSummary, false);
  if (s.ok()) s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Text, kSummary, true);
  if (s.ok()) s = set_string(tree, options.draft_statement.empty() ? default_statement(options) : options.draft_statement);
  // The consistency score (issue 14) beside the statement: a reader of the draft meets both before the findings.
  if (s.ok() && options.consistency) s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Text, kSummary, false);
  if (s.ok() && options.consistency) {
    s = set_string(tree, consistency_statement(*options.consistency, options.consistency_warn_below));
  }
  if (s.ok() && tree.goUp() == 0) s = absl::InternalError("DICOM SR: tree navigation failed");
  // The Findings section (CID 7001 heading), one Finding (CID 7002) per sentence.
  if (s.ok()) s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Container, kFindings, false);
  for (size_t i = 0; s.ok() && i < sentences.size(); ++i) {
    s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Text, CODE_DCM_Finding, i == 0);
    if (s.ok()) s = set_string(tree, sentences[i]);
  }
  if (!s.ok()) return s;
  return finish_document(doc, options);
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
  sr.preliminary_flag = DSRTypes::preliminaryFlagToEnumeratedValue(doc.getPreliminaryFlag());
  sr.manufacturer_model_name = doc.getManufacturerModelName(value).good() ? value.c_str() : "";
  sr.contributing_equipment = read_contributing_equipment(*(*file)->getDataset());

  DSRDocumentTree& tree = doc.getTree();
  if (tree.gotoRoot() > 0) {
    OFString tid, resource;
    if (tree.getCurrentContentItem().getTemplateIdentification(tid, resource).good()) sr.template_id = tid.c_str();
    do {
      DSRContentItem& item = tree.getCurrentContentItem();
      const std::string code = item.getConceptName().getCodeValue().c_str();
      const std::string text = item.getStringValue().c_str();
      if (item.getValueType() == DSRTypes::VT_Text && code == "121071") sr.findings.push_back(text);
      if (item.getValueType() == DSRTypes::VT_Text && code == "121111") {
        (sr.draft_statement.empty() ? sr.draft_statement : sr.consistency_statement) = text;  // statement first
      }
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
