// Tests for study assembly (cmn/preprocessing/dicom.h: assemble_study, select_views, group_studies): which
// instance fills which of the model's N view slots, and why the others were not used. Instances are
// synthesised here with DCMTK (small 32x32 images with chosen UIDs, Modality, ViewPosition, SOP class), and the
// real chest radiographs of shared/data/dicom/chest are used where their attributes suit the case.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"

#include "cmn/preprocessing/dicom.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::preprocessing {
namespace {

namespace fs = std::filesystem;

const std::string kChestDir = std::string(CMN_SHARED_DIR) + "/data/dicom/chest";
constexpr char kStudy[] = "1.2.826.0.1.3680043.8.498.100";
constexpr char kOtherStudy[] = "1.2.826.0.1.3680043.8.498.200";
// Patient attributes every synthetic instance carries: no message may repeat them.
constexpr char kPatientName[] = "Doe^Jane";
constexpr char kPatientId[] = "PID-31337";

// What a synthetic instance says about itself.
struct Spec {
  std::string sop;                                          // SOP Instance UID (required)
  std::string study = kStudy;
  std::string series = "1.2.826.0.1.3680043.8.498.1";
  std::string sop_class = UID_ComputedRadiographyImageStorage;
  std::string modality = "CR";
  std::string view_position;                                // empty: attribute absent
  std::optional<int> series_number;
  std::optional<int> instance_number;
  bool pixels = true;                                       // false: no image attributes, no Pixel Data
  int pattern = 1;                                          // makes the pixel data differ between instances
};

Spec frontal(const std::string& sop, const std::string& view = "PA") {
  Spec s;
  s.sop = sop;
  s.view_position = view;
  return s;
}

Spec lateral(const std::string& sop) {
  Spec s;
  s.sop = sop;
  s.sop_class = UID_DigitalXRayImageStorageForPresentation;
  s.modality = "DX";
  s.view_position = "LL";
  s.pattern = 5;
  return s;
}

Spec basic_text_sr(const std::string& sop) {
  Spec s;
  s.sop = sop;
  s.sop_class = UID_BasicTextSRStorage;
  s.modality = "SR";
  s.pixels = false;
  return s;
}

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A Part 10 file (explicit VR little endian) for `spec`, as bytes.
std::string make_instance(const Spec& spec) {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  const auto put = [&](const DcmTagKey& tag, const std::string& value) {
    EXPECT_TRUE(ds->putAndInsertString(tag, value.c_str()).good()) << DcmTag(tag).getTagName();
  };
  put(DCM_SOPClassUID, spec.sop_class);
  put(DCM_SOPInstanceUID, spec.sop);
  put(DCM_StudyInstanceUID, spec.study);
  put(DCM_SeriesInstanceUID, spec.series);
  put(DCM_Modality, spec.modality);
  put(DCM_PatientName, kPatientName);
  put(DCM_PatientID, kPatientId);
  if (!spec.view_position.empty()) put(DCM_ViewPosition, spec.view_position);
  if (spec.series_number) put(DCM_SeriesNumber, std::to_string(*spec.series_number));
  if (spec.instance_number) put(DCM_InstanceNumber, std::to_string(*spec.instance_number));
  if (spec.pixels) {
    constexpr int kSize = 32;
    EXPECT_TRUE(ds->putAndInsertUint16(DCM_Rows, kSize).good());
    EXPECT_TRUE(ds->putAndInsertUint16(DCM_Columns, kSize).good());
    EXPECT_TRUE(ds->putAndInsertUint16(DCM_SamplesPerPixel, 1).good());
    EXPECT_TRUE(ds->putAndInsertUint16(DCM_BitsAllocated, 8).good());
    EXPECT_TRUE(ds->putAndInsertUint16(DCM_BitsStored, 8).good());
    EXPECT_TRUE(ds->putAndInsertUint16(DCM_HighBit, 7).good());
    EXPECT_TRUE(ds->putAndInsertUint16(DCM_PixelRepresentation, 0).good());
    put(DCM_PhotometricInterpretation, "MONOCHROME2");
    std::vector<Uint8> pixels(kSize * kSize);
    for (int y = 0; y < kSize; ++y) {
      for (int x = 0; x < kSize; ++x) {
        pixels[static_cast<size_t>(y * kSize + x)] = static_cast<Uint8>((x * 7 + y * spec.pattern * 3 + spec.pattern * 11) % 256);
      }
    }
    EXPECT_TRUE(ds->putAndInsertUint8Array(DCM_PixelData, pixels.data(), pixels.size()).good());
  } else if (spec.modality == "SR") {
    put(DCM_ValueType, "CONTAINER");
    put(DCM_CompletionFlag, "PARTIAL");
    put(DCM_VerificationFlag, "UNVERIFIED");
  }
  // The pid in the name: ctest runs this binary's tests as parallel processes, and several tests make instances
  // with the same SOP Instance UIDs (one process's remove() raced another's read: "not a DICOM file").
  const fs::path path =
      fs::path(::testing::TempDir()) / ("cmn_study_test_" + std::to_string(::getpid()) + "_" + spec.sop + ".dcm");
  const OFCondition cond = file.saveFile(path.c_str(), EXS_LittleEndianExplicit);
  EXPECT_TRUE(cond.good()) << cond.text();
  std::string bytes = read_file_bytes(path.string());
  fs::remove(path);
  return bytes;
}

InstanceInput input(const Spec& spec) { return {"synthetic/" + spec.sop + ".dcm", make_instance(spec)}; }

InstanceInput real(const std::string& name) {
  const std::string path = kChestDir + "/" + name;
  return {path, read_file_bytes(path)};
}

StudyOptions views(int64_t n) {
  StudyOptions options;
  options.views = n;
  return options;
}

std::vector<std::string> slot_uids(const AssembledStudy& study) {
  std::vector<std::string> uids;
  for (const auto& s : study.slots) uids.push_back(s.instance.sop_instance_uid);
  return uids;
}

const SkippedInstance* find_skipped(const AssembledStudy& study, const std::string& sop) {
  for (const auto& s : study.skipped) {
    if (s.instance.sop_instance_uid == sop) return &s;
  }
  return nullptr;
}

// The model input of one instance decoded on its own (what its slot must hold).
FloatImage decode_alone(const InstanceInput& in, const ImageOptions& options = {}) {
  auto image = read_dicom_image(in.bytes, in.source);
  EXPECT_TRUE(image.ok()) << image.status();
  if (!image.ok()) return {};
  return to_model_input(image->grey8, options);
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void expect_no_patient_identifiers(const std::string& message) {
  EXPECT_FALSE(contains(message, "Doe")) << message;
  EXPECT_FALSE(contains(message, kPatientId)) << message;
}

// ---------------------------------------------------------------------------------------------------
// assemble_study on synthetic instances

TEST(StudyAssembly, FrontalAndLateralFillTwoSlotsInThatOrder) {
  const auto pa = input(frontal("1.2.3.10"));
  const auto lat = input(lateral("1.2.3.20"));
  auto study = assemble_study({lat, pa}, views(2));
  ASSERT_TRUE(study.ok()) << study.status();
  EXPECT_EQ(study->study_instance_uid, kStudy);
  ASSERT_EQ(study->slots.size(), 2u);
  EXPECT_EQ(study->slots[0].slot, 0);
  EXPECT_EQ(study->slots[1].slot, 1);
  EXPECT_EQ(slot_uids(*study), (std::vector<std::string>{"1.2.3.10", "1.2.3.20"}));
  EXPECT_EQ(study->slots[0].instance.view, ViewPosition::kPA);
  EXPECT_EQ(study->slots[1].instance.view, ViewPosition::kLateral);
  EXPECT_TRUE(contains(study->slots[0].reason, "frontal PA")) << study->slots[0].reason;
  EXPECT_TRUE(contains(study->slots[0].reason, "best frontal")) << study->slots[0].reason;
  EXPECT_TRUE(contains(study->slots[1].reason, "best lateral")) << study->slots[1].reason;
  EXPECT_TRUE(study->skipped.empty());
  // Each slot holds the model input of its own instance.
  ASSERT_EQ(study->images.size(), 2u);
  for (const auto& image : study->images) {
    EXPECT_EQ(image.channels, 3);
    EXPECT_EQ(image.height, 224);
    EXPECT_EQ(image.width, 224);
  }
  EXPECT_EQ(study->images[0].data, decode_alone(pa).data);
  EXPECT_EQ(study->images[1].data, decode_alone(lat).data);
  EXPECT_NE(study->images[0].data, study->images[1].data);
}

TEST(StudyAssembly, OneFrontalFillsFourSlotsByRepeatingIt) {
  const auto pa = input(frontal("1.2.3.10"));
  auto study = assemble_study({pa}, views(4));
  ASSERT_TRUE(study.ok()) << study.status();
  ASSERT_EQ(study->slots.size(), 4u);
  ASSERT_EQ(study->images.size(), 4u);
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(study->slots[k].slot, k);
    EXPECT_EQ(study->slots[k].instance.sop_instance_uid, "1.2.3.10");
    EXPECT_EQ(study->images[k].data, study->images[0].data) << "slot " << k;
  }
  for (int k = 1; k < 4; ++k) {
    EXPECT_TRUE(contains(study->slots[k].reason, "repeat of slot 0")) << study->slots[k].reason;
    EXPECT_TRUE(contains(study->slots[k].reason, "1 usable image for 4 slots")) << study->slots[k].reason;
  }
  EXPECT_EQ(study->images[0].data, decode_alone(pa).data);
}

TEST(StudyAssembly, FrontalAndLateralCycleThroughFourSlots) {
  auto study = assemble_study({input(lateral("1.2.3.20")), input(frontal("1.2.3.10"))}, views(4));
  ASSERT_TRUE(study.ok()) << study.status();
  EXPECT_EQ(slot_uids(*study), (std::vector<std::string>{"1.2.3.10", "1.2.3.20", "1.2.3.10", "1.2.3.20"}));
  EXPECT_TRUE(contains(study->slots[2].reason, "repeat of slot 0")) << study->slots[2].reason;
  EXPECT_TRUE(contains(study->slots[3].reason, "repeat of slot 1")) << study->slots[3].reason;
  EXPECT_EQ(study->images[2].data, study->images[0].data);
  EXPECT_EQ(study->images[3].data, study->images[1].data);
}

TEST(StudyAssembly, PaWinsOverApWhateverTheirNumbersAndOrder) {
  Spec ap = frontal("1.2.3.5", "AP");  // smaller UID, lower series and instance numbers, listed first
  ap.series_number = 1;
  ap.instance_number = 1;
  ap.pattern = 9;
  Spec pa = frontal("1.2.3.50", "PA");
  pa.series_number = 7;
  pa.instance_number = 3;
  {
    auto study = assemble_study({input(ap), input(pa)}, views(1));
    ASSERT_TRUE(study.ok()) << study.status();
    EXPECT_EQ(slot_uids(*study), std::vector<std::string>{"1.2.3.50"});
    const auto* skipped = find_skipped(*study, "1.2.3.5");
    ASSERT_NE(skipped, nullptr);
    EXPECT_TRUE(contains(skipped->reason, "surplus frontal AP")) << skipped->reason;
  }
  {  // Without a lateral, the AP is the next view, not a repeat.
    auto study = assemble_study({input(ap), input(pa)}, views(2));
    ASSERT_TRUE(study.ok()) << study.status();
    EXPECT_EQ(slot_uids(*study), (std::vector<std::string>{"1.2.3.50", "1.2.3.5"}));
  }
  {  // With a lateral, frontal + lateral; the AP is surplus.
    auto study = assemble_study({input(ap), input(lateral("1.2.3.60")), input(pa)}, views(2));
    ASSERT_TRUE(study.ok()) << study.status();
    EXPECT_EQ(slot_uids(*study), (std::vector<std::string>{"1.2.3.50", "1.2.3.60"}));
    ASSERT_EQ(study->skipped.size(), 1u);
    EXPECT_EQ(study->skipped[0].instance.sop_instance_uid, "1.2.3.5");
  }
}

TEST(StudyAssembly, CtImageIsSkippedWithTheReasonUnlessAllowed) {
  Spec ct;
  ct.sop = "1.2.3.30";
  ct.sop_class = UID_CTImageStorage;
  ct.modality = "CT";
  ct.pattern = 3;
  const auto pa = input(frontal("1.2.3.10"));
  {
    auto study = assemble_study({input(ct), pa}, views(2));
    ASSERT_TRUE(study.ok()) << study.status();
    EXPECT_EQ(slot_uids(*study), (std::vector<std::string>{"1.2.3.10", "1.2.3.10"}));
    ASSERT_EQ(study->skipped.size(), 1u);
    EXPECT_EQ(study->skipped[0].instance.sop_instance_uid, "1.2.3.30");
    EXPECT_TRUE(contains(study->skipped[0].reason, "modality CT not allowed")) << study->skipped[0].reason;
  }
  {
    StudyOptions options = views(2);
    options.allowed_modalities.push_back("CT");
    auto study = assemble_study({input(ct), pa}, options);
    ASSERT_TRUE(study.ok()) << study.status();
    EXPECT_EQ(slot_uids(*study), (std::vector<std::string>{"1.2.3.10", "1.2.3.30"}));
    EXPECT_TRUE(study->skipped.empty());
  }
}

TEST(StudyAssembly, StructuredReportIsSkippedAsNotAnImage) {
  auto study = assemble_study({input(basic_text_sr("1.2.3.90")), input(frontal("1.2.3.10"))}, views(2));
  ASSERT_TRUE(study.ok()) << study.status();
  EXPECT_EQ(slot_uids(*study), (std::vector<std::string>{"1.2.3.10", "1.2.3.10"}));
  ASSERT_EQ(study->skipped.size(), 1u);
  EXPECT_EQ(study->skipped[0].instance.sop_instance_uid, "1.2.3.90");
  EXPECT_FALSE(study->skipped[0].instance.is_image);
  EXPECT_TRUE(contains(study->skipped[0].reason, "not an image (Basic Text SR)")) << study->skipped[0].reason;
}

TEST(StudyAssembly, OnlyNonImagesIsAnErrorSayingWhy) {
  auto study = assemble_study({input(basic_text_sr("1.2.3.90"))}, views(2));
  ASSERT_FALSE(study.ok());
  EXPECT_EQ(study.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(study.status().message());
  EXPECT_TRUE(contains(message, "no usable image")) << message;
  EXPECT_TRUE(contains(message, "1.2.3.90")) << message;
  EXPECT_TRUE(contains(message, "Basic Text SR")) << message;
  expect_no_patient_identifiers(message);
}

TEST(StudyAssembly, TwoStudiesIsAnErrorNamingBothUids) {
  Spec other = lateral("1.2.3.20");
  other.study = kOtherStudy;
  auto study = assemble_study({input(frontal("1.2.3.10")), input(other)}, views(2));
  ASSERT_FALSE(study.ok());
  EXPECT_EQ(study.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(study.status().message());
  EXPECT_TRUE(contains(message, kStudy)) << message;
  EXPECT_TRUE(contains(message, kOtherStudy)) << message;
  expect_no_patient_identifiers(message);
}

TEST(StudyAssembly, EmptyInputIsAClearError) {
  auto study = assemble_study({}, views(2));
  ASSERT_FALSE(study.ok());
  EXPECT_EQ(study.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(std::string(study.status().message()), "no instances")) << study.status();
}

TEST(StudyAssembly, UnreadableInstanceFailsTheStudyNamingIt) {
  auto study = assemble_study({input(frontal("1.2.3.10")), {"upload/garbage.bin", "definitely not DICOM"}}, views(2));
  ASSERT_FALSE(study.ok());
  EXPECT_TRUE(contains(std::string(study.status().message()), "upload/garbage.bin")) << study.status();
}

TEST(StudyAssembly, EqualViewsAreOrderedBySeriesThenInstanceNumberNotUid) {
  // UID order and number order disagree: the numbers decide (read_dicom_info must fill them).
  Spec pa_late = frontal("1.2.3.11");
  pa_late.series_number = 2;
  pa_late.instance_number = 1;
  Spec pa_second = frontal("1.2.3.12");
  pa_second.series_number = 1;
  pa_second.instance_number = 8;
  pa_second.pattern = 2;
  Spec pa_first = frontal("1.2.3.13");
  pa_first.series_number = 1;
  pa_first.instance_number = 3;
  pa_first.pattern = 3;
  auto study = assemble_study({input(pa_late), input(pa_second), input(pa_first)}, views(3));
  ASSERT_TRUE(study.ok()) << study.status();
  ASSERT_EQ(study->slots.size(), 3u);
  EXPECT_EQ(study->slots[0].instance.series_number, std::optional<int64_t>(1));
  EXPECT_EQ(study->slots[0].instance.instance_number, std::optional<int64_t>(3));
  EXPECT_EQ(slot_uids(*study), (std::vector<std::string>{"1.2.3.13", "1.2.3.12", "1.2.3.11"}));
}

TEST(StudyAssembly, ShuffledInputGivesTheSameSlotsAndSkips) {
  Spec pa1 = frontal("1.2.3.11");
  pa1.instance_number = 1;
  Spec pa2 = frontal("1.2.3.12");
  pa2.instance_number = 2;
  pa2.pattern = 2;
  Spec ap = frontal("1.2.3.13", "AP");
  ap.pattern = 4;
  Spec lat_a = lateral("1.2.3.21");
  lat_a.instance_number = 4;
  lat_a.pattern = 6;
  Spec lat_b = lateral("1.2.3.22");
  lat_b.instance_number = 9;
  Spec other;
  other.sop = "1.2.3.40";
  other.pattern = 7;
  Spec ct;
  ct.sop = "1.2.3.30";
  ct.sop_class = UID_CTImageStorage;
  ct.modality = "CT";
  std::vector<InstanceInput> inputs = {input(pa2), input(pa1), input(ap), input(lat_b),
                                       input(lat_a), input(other), input(ct), input(basic_text_sr("1.2.3.90"))};
  auto baseline = assemble_study(inputs, views(4));
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  // Best frontal (PA), best lateral, then rank order: the other PA, the AP; the second lateral is surplus.
  EXPECT_EQ(slot_uids(*baseline), (std::vector<std::string>{"1.2.3.11", "1.2.3.21", "1.2.3.12", "1.2.3.13"}));
  std::vector<std::string> skipped;
  for (const auto& s : baseline->skipped) skipped.push_back(s.instance.sop_instance_uid);
  EXPECT_EQ(skipped, (std::vector<std::string>{"1.2.3.22", "1.2.3.30", "1.2.3.40", "1.2.3.90"}));

  std::mt19937 rng(42);
  for (int trial = 0; trial < 6; ++trial) {
    std::shuffle(inputs.begin(), inputs.end(), rng);
    auto study = assemble_study(inputs, views(4));
    ASSERT_TRUE(study.ok()) << study.status();
    EXPECT_EQ(slot_uids(*study), slot_uids(*baseline)) << "trial " << trial;
    ASSERT_EQ(study->skipped.size(), baseline->skipped.size());
    for (size_t i = 0; i < study->skipped.size(); ++i) {
      EXPECT_EQ(study->skipped[i].instance.sop_instance_uid, baseline->skipped[i].instance.sop_instance_uid);
      EXPECT_EQ(study->skipped[i].reason, baseline->skipped[i].reason);
    }
    for (size_t k = 0; k < study->slots.size(); ++k) {
      EXPECT_EQ(study->slots[k].reason, baseline->slots[k].reason);
      EXPECT_EQ(study->images[k].data, baseline->images[k].data) << "trial " << trial << " slot " << k;
    }
    // Each slot and each skip says where its instance was in this (shuffled) input: callers map back to
    // their own names and bytes by position, never by parsing `source`.
    ASSERT_EQ(study->slot_inputs.size(), study->slots.size());
    for (size_t k = 0; k < study->slots.size(); ++k) {
      ASSERT_LT(study->slot_inputs[k], inputs.size());
      EXPECT_EQ(inputs[study->slot_inputs[k]].source, "synthetic/" + study->slots[k].instance.sop_instance_uid + ".dcm");
    }
    for (const auto& skip : study->skipped) {
      ASSERT_LT(skip.input, inputs.size());
      EXPECT_EQ(inputs[skip.input].source, "synthetic/" + skip.instance.sop_instance_uid + ".dcm");
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// assemble_study on the real chest radiographs (shared/data/dicom/chest)

TEST(StudyAssemblyRealFiles, TwoStudiesNameBothUids) {
  auto study = assemble_study({real("gdcm-CR-MONO1-10-chest_explicitLE.dcm"),
                               real("CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm")},
                              views(2));
  ASSERT_FALSE(study.ok());
  const std::string message(study.status().message());
  EXPECT_TRUE(contains(message, "1.2.392.200036.9125.0.199302241758.16")) << message;
  EXPECT_TRUE(contains(message, "2.25.273454094687680642907970901263333641771")) << message;
}

TEST(StudyAssemblyRealFiles, SameInstanceTwiceIsUsedOnceAndTheCopySkipped) {
  // Both files hold SOP Instance 1.2.392.200036.9125.0.19950720112207 (one without File Meta, one Part 10).
  const auto nometa = real("CR-MONO1-10-chest_implicitLE_nometa.dcm");
  const auto part10 = real("gdcm-CR-MONO1-10-chest_explicitLE.dcm");
  auto study = assemble_study({part10, nometa}, views(2));
  ASSERT_TRUE(study.ok()) << study.status();
  EXPECT_EQ(study->study_instance_uid, "1.2.392.200036.9125.0.199302241758.16");
  EXPECT_EQ(slot_uids(*study), (std::vector<std::string>{"1.2.392.200036.9125.0.19950720112207",
                                                         "1.2.392.200036.9125.0.19950720112207"}));
  EXPECT_EQ(study->slots[0].instance.view, ViewPosition::kPA);
  EXPECT_EQ(study->slots[0].instance.source, nometa.source);  // the copy kept: the smaller source name
  EXPECT_TRUE(contains(study->slots[1].reason, "repeat of slot 0")) << study->slots[1].reason;
  ASSERT_EQ(study->skipped.size(), 1u);
  EXPECT_EQ(study->skipped[0].instance.source, part10.source);
  EXPECT_TRUE(contains(study->skipped[0].reason, "duplicate")) << study->skipped[0].reason;
}

TEST(StudyAssemblyRealFiles, RealPaWithASyntheticLateralAndReportOfTheSameStudy) {
  const auto pa = real("gdcm-CR-MONO1-10-chest_explicitLE.dcm");
  Spec lat = lateral("1.2.3.20");
  lat.study = "1.2.392.200036.9125.0.199302241758.16";
  Spec sr = basic_text_sr("1.2.3.90");
  sr.study = lat.study;
  auto study = assemble_study({input(sr), input(lat), pa}, views(2));
  ASSERT_TRUE(study.ok()) << study.status();
  EXPECT_EQ(slot_uids(*study), (std::vector<std::string>{"1.2.392.200036.9125.0.19950720112207", "1.2.3.20"}));
  EXPECT_TRUE(contains(study->slots[0].reason, "ViewPosition")) << study->slots[0].reason;
  ASSERT_EQ(study->skipped.size(), 1u);
  EXPECT_EQ(study->skipped[0].instance.sop_instance_uid, "1.2.3.90");
  EXPECT_EQ(study->images[0].data, decode_alone(pa).data);
}

// ---------------------------------------------------------------------------------------------------
// select_views and group_studies: pure functions on InstanceInfo

InstanceInfo info(const std::string& sop, ViewPosition view, std::optional<int64_t> series = std::nullopt,
                  std::optional<int64_t> instance = std::nullopt) {
  InstanceInfo i;
  i.source = "mem/" + sop;
  i.sop_instance_uid = sop;
  i.sop_class_uid = UID_DigitalXRayImageStorageForPresentation;
  i.study_instance_uid = kStudy;
  i.modality = "DX";
  i.is_image = true;
  i.view = view;
  i.series_number = series;
  i.instance_number = instance;
  return i;
}

std::vector<std::string> slot_uids(const ViewSelection& selection) {
  std::vector<std::string> uids;
  for (const auto& s : selection.slots) uids.push_back(s.instance.sop_instance_uid);
  return uids;
}

TEST(StudyViewSelection, TiesAreBrokenBySeriesThenInstanceNumberThenUid) {
  const std::vector<InstanceInfo> infos = {
      info("9.1", ViewPosition::kPA, 2, 1),             // series 2
      info("9.2", ViewPosition::kPA, 1, 5),             // series 1, instance 5: best
      info("9.3", ViewPosition::kPA, 1, std::nullopt),  // series 1, no instance number: after 9.2
      info("9.0", ViewPosition::kPA),                   // no numbers at all: last
  };
  auto selection = select_views(infos, views(4));
  ASSERT_TRUE(selection.ok()) << selection.status();
  EXPECT_EQ(slot_uids(*selection), (std::vector<std::string>{"9.2", "9.3", "9.1", "9.0"}));
  EXPECT_EQ(selection->slot_inputs, (std::vector<size_t>{1, 2, 0, 3}));
}

TEST(StudyViewSelection, ThreeImagesForFourSlotsRepeatTheFirst) {
  const std::vector<InstanceInfo> infos = {info("9.3", ViewPosition::kOther), info("9.2", ViewPosition::kLateral),
                                           info("9.1", ViewPosition::kAP)};
  auto selection = select_views(infos, views(4));
  ASSERT_TRUE(selection.ok()) << selection.status();
  EXPECT_EQ(slot_uids(*selection), (std::vector<std::string>{"9.1", "9.2", "9.3", "9.1"}));
  EXPECT_TRUE(contains(selection->slots[3].reason, "repeat of slot 0 (study has 3 usable images for 4 slots)"))
      << selection->slots[3].reason;
}

TEST(StudyViewSelection, WithoutAFrontalTheLateralLeads) {
  const std::vector<InstanceInfo> infos = {info("9.3", ViewPosition::kOther), info("9.2", ViewPosition::kLateral)};
  auto selection = select_views(infos, views(2));
  ASSERT_TRUE(selection.ok()) << selection.status();
  EXPECT_EQ(slot_uids(*selection), (std::vector<std::string>{"9.2", "9.3"}));
  EXPECT_TRUE(contains(selection->slots[0].reason, "no frontal")) << selection->slots[0].reason;
}

TEST(StudyViewSelection, NonPositiveViewCountIsRejected) {
  auto selection = select_views({info("9.1", ViewPosition::kPA)}, views(0));
  ASSERT_FALSE(selection.ok());
  EXPECT_EQ(selection.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StudyGrouping, SplitsByStudyUidInUidOrder) {
  std::vector<InstanceInfo> infos = {info("9.1", ViewPosition::kPA), info("9.2", ViewPosition::kPA),
                                     info("9.3", ViewPosition::kPA), info("9.4", ViewPosition::kPA)};
  infos[0].study_instance_uid = "2.2";
  infos[1].study_instance_uid = "1.1";
  infos[2].study_instance_uid = "";  // e.g. a DICOMDIR
  infos[3].study_instance_uid = "2.2";
  const StudyGrouping grouping = group_studies(infos);
  ASSERT_EQ(grouping.studies.size(), 2u);
  EXPECT_EQ(grouping.studies[0].study_instance_uid, "1.1");
  EXPECT_EQ(grouping.studies[0].members, std::vector<size_t>{1});
  EXPECT_EQ(grouping.studies[1].study_instance_uid, "2.2");
  EXPECT_EQ(grouping.studies[1].members, (std::vector<size_t>{0, 3}));
  EXPECT_EQ(grouping.unassigned, std::vector<size_t>{2});
}

TEST(StudyGrouping, SopClassNamesForSkipReasons) {
  EXPECT_EQ(sop_class_name(UID_BasicTextSRStorage), "Basic Text SR");
  EXPECT_EQ(sop_class_name(UID_GrayscaleSoftcopyPresentationStateStorage), "Grayscale Softcopy Presentation State");
  EXPECT_EQ(sop_class_name(UID_KeyObjectSelectionDocumentStorage), "Key Object Selection Document");
  EXPECT_EQ(sop_class_name("1.2.3.4.5"), "1.2.3.4.5");
}

}  // namespace
}  // namespace cmn::preprocessing
