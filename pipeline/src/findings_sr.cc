#include "cmn/pipeline/findings_sr.h"

#include <dcmtk/dcmsr/cmr/cid29e.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/codes/umls.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include "absl/strings/str_cat.h"
#include "sr_common.h"

namespace cmn::pipeline {

using namespace sr_internal;  // NOLINT: the shared SR helpers of this library

namespace {

const DSRCodedEntryValue kReportTitle("126000", "DCM", "Imaging Measurement Report");
const DSRCodedEntryValue kImageLibraryGroup("126200", "DCM", "Image Library Group");

DSRCodedEntryValue to_dcmtk(const SrCode& code) {
  return DSRCodedEntryValue(code.value.c_str(), code.scheme.c_str(), code.meaning.c_str());
}

SrCode from_dcmtk(const DSRCodedEntryValue& code) {
  return {code.getCodeValue().c_str(), code.getCodingSchemeDesignator().c_str(), code.getCodeMeaning().c_str()};
}

// The CID 29 code of a Modality defined term; OT ("Other") for one CID 29 does not list.
DSRCodedEntryValue modality_code(const std::string& modality) {
  DSRCodedEntryValue code = CID29e_AcquisitionModality().mapModality(modality.c_str());
  if (code.isValid()) return code;
  return CID29e_AcquisitionModality().mapModality("OT");
}

}  // namespace

SrCode state_code(metrics::StatedObservation::State state) {
  switch (state) {
    case metrics::StatedObservation::State::kPresent: return {"52101004", "SCT", "Present"};
    case metrics::StatedObservation::State::kAbsent: return {"2667000", "SCT", "Absent"};
    case metrics::StatedObservation::State::kUncertain: return {"373068000", "SCT", "Undetermined"};
  }
  return {};
}

absl::StatusOr<std::string> write_findings_sr(const std::vector<std::string>& sources,
                                              const std::vector<metrics::StatedObservation>& observations,
                                              const SrOptions& options) {
  std::vector<std::pair<DSRCodedEntryValue, DSRCodedEntryValue>> evaluations;
  std::vector<std::pair<std::string, std::string>> private_schemes;
  for (const auto& o : observations) {
    const metrics::ObservationCode code = metrics::observation_code(o.name);
    if (code.code.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("findings SR: '", o.name, "' is not one of the CheXpert observations (no code for it)"));
    }
    if (code.scheme.rfind("99", 0) == 0 && private_schemes.empty()) {
      private_schemes.emplace_back(code.scheme, "cmn codes for CheXpert observations without a standard concept");
    }
    evaluations.emplace_back(DSRCodedEntryValue(code.code.c_str(), code.scheme.c_str(), code.meaning.c_str()),
                             to_dcmtk(state_code(o.state)));
  }
  auto used = read_sources(sources);
  if (!used.ok()) return used.status();
  DSRDocument doc(DSRTypes::DT_Comprehensive3DSR);
  SrOptions header = options;
  header.series_number = options.series_number + 1;
  if (absl::Status s = start_document(doc, *used, header, options.findings_series_description); !s.ok()) return s;

  DSRDocumentTree& tree = doc.getTree();
  if (tree.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container) == 0) {
    return absl::InternalError("DICOM SR: cannot add the root container");
  }
  tree.getCurrentContentItem().setConceptName(kReportTitle);
  if (absl::Status s = check(tree.setTemplateIdentification("1500", "DCMR"), "template identification"); !s.ok()) {
    return s;
  }
  absl::Status s = add_language(tree);
  if (s.ok()) s = add_device_observer(tree, options);
  // TID 1600: the images the evaluations were made from.
  if (s.ok()) s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Container, CODE_DCM_ImageLibrary, false);
  if (s.ok()) s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Container, kImageLibraryGroup, true);
  for (size_t i = 0; s.ok() && i < used->size(); ++i) {
    const SourceInfo& source = (*used)[i];
    s = check(tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Image,
                                  i == 0 ? DSRTypes::AM_belowCurrent : DSRTypes::AM_afterCurrent) > 0
                  ? EC_Normal
                  : SR_EC_CannotAddContentItem,
              "adding an image");
    if (s.ok()) {
      DSRImageReferenceValue image(source.uids.sop_class_uid.c_str(), source.uids.sop_instance_uid.c_str());
      s = check(tree.getCurrentContentItem().setImageReference(image, OFFalse), "image reference");
    }
    if (s.ok()) s = add_item(tree, DSRTypes::RT_hasAcqContext, DSRTypes::VT_Code, CODE_DCM_Modality, true);
    if (s.ok()) s = set_code(tree, modality_code(get_string(source.file->getDataset(), DCM_Modality)));
    if (s.ok() && tree.goUp() == 0) s = absl::InternalError("DICOM SR: tree navigation failed");
  }
  if (s.ok() && tree.goUp() == 0) s = absl::InternalError("DICOM SR: tree navigation failed");
  if (s.ok() && tree.goUp() == 0) s = absl::InternalError("DICOM SR: tree navigation failed");
  // TID 1500 row 12: the qualitative evaluations, with the algorithm that made them (TID 4019).
  if (s.ok()) {
    s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Container, CODE_UMLS_QualitativeEvaluations, false);
  }
  // TID 4019's items by CONTAINS: PixelMed's TID 1500 check reads every TEXT child of this container as row 14
  // (TEXT, CONTAINS) and fails them as HAS CONCEPT MOD.
  if (s.ok()) s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Text, CODE_DCM_AlgorithmName, true);
  if (s.ok()) s = set_string(tree, options.model_name);
  if (s.ok()) s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Text, CODE_DCM_AlgorithmVersion, false);
  if (s.ok()) {
    s = set_string(tree, !options.model_version.empty() ? options.model_version
                         : !options.model_digest.empty() ? options.model_digest
                                                         : "unversioned");
  }
  for (size_t i = 0; s.ok() && i < options.algorithm_parameters.size(); ++i) {
    s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Text, CODE_DCM_AlgorithmParameters, false);
    if (s.ok()) s = set_string(tree, options.algorithm_parameters[i]);
  }
  for (size_t i = 0; s.ok() && i < evaluations.size(); ++i) {
    s = add_item(tree, DSRTypes::RT_contains, DSRTypes::VT_Code, evaluations[i].first, false);
    if (s.ok()) s = set_code(tree, evaluations[i].second);
  }
  if (!s.ok()) return s;
  return finish_document(doc, header, private_schemes);
}

absl::StatusOr<FindingsSr> read_findings_sr(const std::string& bytes) {
  auto file = parse_bytes(bytes, "DICOM SR");
  if (!file.ok()) return file.status();
  DSRDocument doc;
  const OFCondition cond = doc.read(*(*file)->getDataset());
  if (cond.bad()) return absl::InvalidArgumentError(absl::StrCat("not a DICOM SR DCMTK can read: ", condition_text(cond)));
  FindingsSr sr;
  OFString value;
  sr.sop_class_uid = doc.getSOPClassUID(value).good() ? value.c_str() : "";
  sr.sop_instance_uid = doc.getSOPInstanceUID(value).good() ? value.c_str() : "";
  sr.series_instance_uid = doc.getSeriesInstanceUID(value).good() ? value.c_str() : "";
  sr.study_instance_uid = doc.getStudyInstanceUID(value).good() ? value.c_str() : "";
  sr.preliminary_flag = DSRTypes::preliminaryFlagToEnumeratedValue(doc.getPreliminaryFlag());
  sr.completion_flag = DSRTypes::completionFlagToEnumeratedValue(doc.getCompletionFlag());
  sr.verification_flag = DSRTypes::verificationFlagToEnumeratedValue(doc.getVerificationFlag());
  sr.contributing_equipment = read_contributing_equipment(*(*file)->getDataset());

  DSRDocumentTree& tree = doc.getTree();
  if (tree.gotoRoot() > 0) {
    OFString tid, resource;
    if (tree.getCurrentContentItem().getTemplateIdentification(tid, resource).good()) sr.template_id = tid.c_str();
    bool in_evaluations = false;
    size_t evaluations_level = 0;
    do {
      DSRContentItem& item = tree.getCurrentContentItem();
      const size_t level = tree.getLevel();
      if (in_evaluations && level <= evaluations_level) in_evaluations = false;
      const std::string code = item.getConceptName().getCodeValue().c_str();
      const std::string text = item.getStringValue().c_str();
      switch (item.getValueType()) {
        case DSRTypes::VT_Container:
          if (code == "C0034375") {
            in_evaluations = true;
            evaluations_level = level;
          }
          break;
        case DSRTypes::VT_UIDRef:
          if (code == "121012") sr.device_observer_uid = text;
          break;
        case DSRTypes::VT_Text:
          if (code == "111001") sr.algorithm_name = text;
          if (code == "111003") sr.algorithm_version = text;
          if (code == "111002") sr.algorithm_parameters.push_back(text);
          break;
        case DSRTypes::VT_Image:
          if (item.getImageReferencePtr() != nullptr) {
            sr.image_sop_instance_uids.emplace_back(item.getImageReferencePtr()->getSOPInstanceUID().c_str());
          }
          break;
        case DSRTypes::VT_Code:
          if (in_evaluations && level == evaluations_level + 1) {
            sr.evaluations.push_back({from_dcmtk(item.getConceptName()), from_dcmtk(item.getCodeValue())});
          }
          break;
        default:
          break;
      }
    } while (tree.iterate() > 0);
  }
  return sr;
}

}  // namespace cmn::pipeline
