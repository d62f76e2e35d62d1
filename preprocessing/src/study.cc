// Study assembly: instances -> the model's N view slots (policy documented in dicom.h). No DCMTK here: the
// instances are read through read_dicom_info / read_dicom_image.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cmn/common/status_macros.h"
#include "cmn/preprocessing/dicom.h"

namespace cmn::preprocessing {
namespace {

// Lower ranks fill earlier slots (dicom.h, step 3).
int view_rank(ViewPosition v) {
  switch (v) {
    case ViewPosition::kPA: return 0;
    case ViewPosition::kAP: return 1;
    case ViewPosition::kLateral: return 2;
    case ViewPosition::kOther: return 3;
  }
  return 3;
}

bool is_frontal(ViewPosition v) { return v == ViewPosition::kPA || v == ViewPosition::kAP; }

const char* view_label(ViewPosition v) {
  switch (v) {
    case ViewPosition::kPA: return "frontal PA";
    case ViewPosition::kAP: return "frontal AP";
    case ViewPosition::kLateral: return "lateral";
    case ViewPosition::kOther: return "other view";
  }
  return "other view";
}

// "frontal PA (ViewPosition=PA)", or "other view (no view attribute)".
std::string describe_view(const InstanceInfo& info) {
  return absl::StrCat(view_label(info.view), " (",
                      info.view_evidence.empty() ? "no view attribute" : info.view_evidence, ")");
}

// How instances are named in messages: SOP Instance UID and where it came from, never patient attributes.
std::string instance_name(const InstanceInfo& info) {
  if (info.sop_instance_uid.empty()) return absl::StrCat("'", info.source, "'");
  return absl::StrCat(info.sop_instance_uid, " ('", info.source, "')");
}

// Absent numbers sort after present ones.
int64_t number_or_last(const std::optional<int64_t>& n) {
  return n.value_or(std::numeric_limits<int64_t>::max());
}

// The total order of dicom.h step 3: rank, Series Number, Instance Number, SOP Instance UID, source.
bool ranks_before(const InstanceInfo& a, const InstanceInfo& b) {
  return std::make_tuple(view_rank(a.view), number_or_last(a.series_number), number_or_last(a.instance_number),
                         std::cref(a.sop_instance_uid), std::cref(a.source)) <
         std::make_tuple(view_rank(b.view), number_or_last(b.series_number), number_or_last(b.instance_number),
                         std::cref(b.sop_instance_uid), std::cref(b.source));
}

bool uid_order(const InstanceInfo& a, const InstanceInfo& b) {
  return std::tie(a.sop_instance_uid, a.source) < std::tie(b.sop_instance_uid, b.source);
}

}  // namespace

std::string sop_class_name(const std::string& uid) {
  static const std::map<std::string, std::string> kNames = {
      {"1.2.840.10008.5.1.4.1.1.1", "CR Image"},
      {"1.2.840.10008.5.1.4.1.1.1.1", "DX Image For Presentation"},
      {"1.2.840.10008.5.1.4.1.1.1.1.1", "DX Image For Processing"},
      {"1.2.840.10008.5.1.4.1.1.2", "CT Image"},
      {"1.2.840.10008.5.1.4.1.1.4", "MR Image"},
      {"1.2.840.10008.5.1.4.1.1.7", "Secondary Capture Image"},
      {"1.2.840.10008.5.1.4.1.1.11.1", "Grayscale Softcopy Presentation State"},
      {"1.2.840.10008.5.1.4.1.1.11.2", "Color Softcopy Presentation State"},
      {"1.2.840.10008.5.1.4.1.1.88.11", "Basic Text SR"},
      {"1.2.840.10008.5.1.4.1.1.88.22", "Enhanced SR"},
      {"1.2.840.10008.5.1.4.1.1.88.33", "Comprehensive SR"},
      {"1.2.840.10008.5.1.4.1.1.88.59", "Key Object Selection Document"},
      {"1.2.840.10008.5.1.4.1.1.104.1", "Encapsulated PDF"},
      {"1.2.840.10008.1.3.10", "Media Storage Directory (DICOMDIR)"},
  };
  const auto it = kNames.find(uid);
  if (it != kNames.end()) return it->second;
  return uid.empty() ? std::string("no SOP Class UID") : uid;
}

StudyGrouping group_studies(const std::vector<InstanceInfo>& instances) {
  std::map<std::string, std::vector<size_t>> by_uid;  // ordered: stable output order
  StudyGrouping grouping;
  for (size_t i = 0; i < instances.size(); ++i) {
    if (instances[i].study_instance_uid.empty()) {
      grouping.unassigned.push_back(i);
    } else {
      by_uid[instances[i].study_instance_uid].push_back(i);
    }
  }
  for (auto& [uid, members] : by_uid) grouping.studies.push_back({uid, std::move(members)});
  return grouping;
}

absl::StatusOr<ViewSelection> select_views(const std::vector<InstanceInfo>& instances, const StudyOptions& options) {
  if (options.views < 1) {
    return absl::InvalidArgumentError(absl::StrCat("study options: views must be >= 1, got ", options.views));
  }
  if (instances.empty()) return absl::InvalidArgumentError("study has no instances");

  // 1. One study, every instance named by a SOP Instance UID.
  std::set<std::string> study_uids;
  for (const auto& info : instances) {
    if (info.study_instance_uid.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("instance ", instance_name(info), " has no StudyInstanceUID"));
    }
    if (info.sop_instance_uid.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("instance '", info.source, "' has no SOPInstanceUID"));
    }
    study_uids.insert(info.study_instance_uid);
  }
  if (study_uids.size() > 1) {
    const auto first = study_uids.begin();
    return absl::InvalidArgumentError(absl::StrCat(
        "instances belong to ", study_uids.size(), " studies (StudyInstanceUID ", *first, " and ",
        *std::next(first), "); send one study per request"));
  }

  ViewSelection selection;
  selection.study_instance_uid = *study_uids.begin();

  // Visit instances in a fixed order so duplicates and skip reasons do not depend on input order.
  std::vector<size_t> order(instances.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return uid_order(instances[a], instances[b]); });

  // 2. Duplicates, non-images, modalities not allowed.
  std::vector<size_t> usable;
  std::map<std::string, size_t> first_copy;  // SOP Instance UID -> index of the copy kept
  for (size_t i : order) {
    const InstanceInfo& info = instances[i];
    auto [it, inserted] = first_copy.emplace(info.sop_instance_uid, i);
    if (!inserted) {
      selection.skipped.push_back(
          {info, absl::StrCat("duplicate SOP Instance UID (same instance as '", instances[it->second].source, "')"), i});
      continue;
    }
    if (!info.is_image) {
      selection.skipped.push_back({info, absl::StrCat("not an image (", sop_class_name(info.sop_class_uid), ")"), i});
      continue;
    }
    const auto& allowed = options.allowed_modalities;
    if (std::find(allowed.begin(), allowed.end(), info.modality) == allowed.end()) {
      selection.skipped.push_back(
          {info, absl::StrCat("modality ", info.modality.empty() ? "(none)" : info.modality,
                              " not allowed (allowed: ", absl::StrJoin(allowed, ", "), ")"),
           i});
      continue;
    }
    usable.push_back(i);
  }
  if (usable.empty()) {
    std::vector<std::string> why;
    for (const auto& s : selection.skipped) why.push_back(absl::StrCat(instance_name(s.instance), ": ", s.reason));
    return absl::InvalidArgumentError(absl::StrCat("study ", selection.study_instance_uid,
                                                   " has no usable image: ", absl::StrJoin(why, "; ")));
  }

  // 3. Slot order: rank order, with the best lateral moved up to slot 1 behind a frontal.
  std::sort(usable.begin(), usable.end(),
            [&](size_t a, size_t b) { return ranks_before(instances[a], instances[b]); });
  if (is_frontal(instances[usable[0]].view)) {
    const auto lateral = std::find_if(usable.begin() + 1, usable.end(), [&](size_t i) {
      return instances[i].view == ViewPosition::kLateral;
    });
    if (lateral != usable.end()) std::rotate(usable.begin() + 1, lateral, lateral + 1);
  }

  const auto n = static_cast<size_t>(options.views);
  const size_t distinct = std::min(n, usable.size());
  for (size_t k = 0; k < distinct; ++k) {
    const InstanceInfo& info = instances[usable[k]];
    std::string why;
    if (k == 0) {
      why = is_frontal(info.view) ? "best frontal" : "best available image: the study has no frontal view";
    } else if (k == 1 && info.view == ViewPosition::kLateral && is_frontal(instances[usable[0]].view)) {
      why = "best lateral (paired with the frontal in slot 0)";
    } else {
      why = absl::StrCat("next by view priority (", k + 1, " of ", usable.size(), " usable images)");
    }
    selection.slots.push_back({static_cast<int64_t>(k), info, absl::StrCat(describe_view(info), ": ", why)});
    selection.slot_inputs.push_back(usable[k]);
  }
  for (size_t k = distinct; k < usable.size(); ++k) {
    const InstanceInfo& info = instances[usable[k]];
    selection.skipped.push_back({info, absl::StrCat("surplus ", describe_view(info), ": all ", n,
                                                    " slots hold images of higher view priority"),
                                 usable[k]});
  }
  // 4. Fill rule: cycle through the chosen images.
  for (size_t k = distinct; k < n; ++k) {
    const size_t source_slot = k % distinct;
    const InstanceInfo& info = instances[usable[source_slot]];
    selection.slots.push_back(
        {static_cast<int64_t>(k), info,
         absl::StrCat(describe_view(info), ": repeat of slot ", source_slot, " (study has ", distinct,
                      " usable image", distinct == 1 ? "" : "s", " for ", n, " slots)")});
    selection.slot_inputs.push_back(usable[source_slot]);
  }
  std::sort(selection.skipped.begin(), selection.skipped.end(),
            [](const SkippedInstance& a, const SkippedInstance& b) { return uid_order(a.instance, b.instance); });
  return selection;
}

int64_t decode_peak_bytes(const InstanceInfo& info) {
  const int64_t pixels = std::max<int64_t>(0, info.rows) * std::max<int64_t>(0, info.columns);
  const int64_t container = info.bits_allocated > 8 ? 2 : 1;
  return pixels * (std::max<int64_t>(1, info.samples_per_pixel) * (container + 4) + 5);
}

absl::StatusOr<AssembledStudy> assemble_study(const std::vector<InstanceInput>& instances,
                                              const StudyOptions& options) {
  if (instances.empty()) return absl::InvalidArgumentError("study has no instances");
  std::vector<InstanceInfo> infos;
  infos.reserve(instances.size());
  for (const auto& input : instances) {
    CMN_ASSIGN_OR_RETURN(InstanceInfo info, read_dicom_info(input.bytes, input.source, options.read));
    if (info.source.empty()) info.source = input.source;
    infos.push_back(std::move(info));
  }
  CMN_ASSIGN_OR_RETURN(ViewSelection selection, select_views(infos, options));
  if (options.max_decode_bytes > 0) {
    for (const size_t input : selection.slot_inputs) {
      const InstanceInfo& info = infos[input];
      const int64_t need = decode_peak_bytes(info);
      if (need > options.max_decode_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "decoding ", info.source, " (", info.rows, "x", info.columns, ", samples ", info.samples_per_pixel,
            ", bits ", info.bits_allocated, ") needs an estimated ", need >> 20,
            " MiB, more than the ", options.max_decode_bytes >> 20, " MiB left to this request"));
      }
    }
  }

  AssembledStudy study;
  study.study_instance_uid = std::move(selection.study_instance_uid);
  study.skipped = std::move(selection.skipped);
  // 5. Decode each chosen instance once; repeated slots copy its model input.
  std::map<size_t, size_t> decoded;  // input index -> index in study.images
  for (size_t k = 0; k < selection.slots.size(); ++k) {
    const size_t input = selection.slot_inputs[k];
    if (const auto it = decoded.find(input); it != decoded.end()) {
      study.images.push_back(study.images[it->second]);
      continue;
    }
    auto image = read_dicom_image(instances[input].bytes, instances[input].source, options.read);
    if (!image.ok()) {
      return absl::Status(image.status().code(),
                          absl::StrCat("study ", study.study_instance_uid, ", slot ", k, ": ",
                                       image.status().message()));
    }
    if (image->grey8.empty()) {
      return absl::InternalError(
          absl::StrCat("instance ", instance_name(infos[input]), " decoded to an empty image"));
    }
    decoded.emplace(input, study.images.size());
    study.images.push_back(to_model_input(image->grey8, options.image));
  }
  study.slots = std::move(selection.slots);
  study.slot_inputs = std::move(selection.slot_inputs);
  return study;
}

}  // namespace cmn::preprocessing
