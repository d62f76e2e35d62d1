// Tests for cmn::preprocessing's DICOM reader: decoding of every transfer syntax in ../shared/data/dicom
// against the uncompressed references, each grey-level rule of dicom.h on a small instance synthesised here
// with DCMTK (expected values computed by hand in the comments), view classification, and hostile input.
#include "cmn/preprocessing/dicom.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include <opencv2/core.hpp>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcrlerp.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::preprocessing {
namespace {

namespace fs = std::filesystem;

#define ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  ASSERT_TRUE(tmp.ok()) << tmp.status();           \
  lhs = std::move(tmp).value()
#define ASSERT_OK_AND_ASSIGN_CAT_(a, b) a##b
#define ASSERT_OK_AND_ASSIGN_NAME_(line) ASSERT_OK_AND_ASSIGN_CAT_(status_or_, line)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) ASSERT_OK_AND_ASSIGN_IMPL_(ASSERT_OK_AND_ASSIGN_NAME_(__LINE__), lhs, expr)

constexpr const char* kSopInstanceUid = "1.2.826.0.1.3680043.10.1137.4242";
constexpr const char* kPatientName = "Doe^Jane";
constexpr const char* kPatientId = "PAT-31337";

std::string data_path(const std::string& relative) {
  return std::string(CMN_SHARED_DIR) + "/data/dicom/" + relative;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// ---------------------------------------------------------------------------------------------------------
// Synthetic instances

struct Synth {
  int rows = 1;
  int columns = 4;
  int bits_allocated = 16;
  int bits_stored = 12;
  int high_bit = 11;
  int pixel_representation = 0;
  int samples_per_pixel = 1;
  int planar_configuration = 0;
  std::string photometric = "MONOCHROME2";
  int frames = 1;                              // Number of Frames is written when > 1
  std::vector<uint16_t> words;                 // Pixel Data for Bits Allocated 16
  std::vector<uint8_t> bytes;                  // Pixel Data for Bits Allocated 8
  bool with_pixel_data = true;
  std::function<void(DcmDataset*)> edit;       // more attributes
};

std::unique_ptr<DcmFileFormat> build(const Synth& s) {
  auto file = std::make_unique<DcmFileFormat>();
  DcmDataset* ds = file->getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, UID_ComputedRadiographyImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, kSopInstanceUid);
  ds->putAndInsertString(DCM_StudyInstanceUID, "1.2.826.0.1.3680043.10.1137.1");
  ds->putAndInsertString(DCM_SeriesInstanceUID, "1.2.826.0.1.3680043.10.1137.2");
  ds->putAndInsertString(DCM_Modality, "CR");
  ds->putAndInsertString(DCM_PatientName, kPatientName);
  ds->putAndInsertString(DCM_PatientID, kPatientId);
  ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(s.rows));
  ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(s.columns));
  ds->putAndInsertUint16(DCM_BitsAllocated, static_cast<Uint16>(s.bits_allocated));
  ds->putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(s.bits_stored));
  ds->putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(s.high_bit));
  ds->putAndInsertUint16(DCM_PixelRepresentation, static_cast<Uint16>(s.pixel_representation));
  ds->putAndInsertUint16(DCM_SamplesPerPixel, static_cast<Uint16>(s.samples_per_pixel));
  if (s.samples_per_pixel > 1) {
    ds->putAndInsertUint16(DCM_PlanarConfiguration, static_cast<Uint16>(s.planar_configuration));
  }
  ds->putAndInsertString(DCM_PhotometricInterpretation, s.photometric.c_str());
  if (s.frames > 1) ds->putAndInsertString(DCM_NumberOfFrames, std::to_string(s.frames).c_str());
  if (s.with_pixel_data) {
    if (s.bits_allocated == 8) {
      ds->putAndInsertUint8Array(DCM_PixelData, s.bytes.data(), s.bytes.size());
    } else {
      ds->putAndInsertUint16Array(DCM_PixelData, s.words.data(), s.words.size());
    }
  }
  if (s.edit) s.edit(ds);
  return file;
}

// Writes through a temporary file: Part 10 with meta, or the bare dataset (`dataset_only`).
std::string serialise(DcmFileFormat* file, E_TransferSyntax xfer, bool dataset_only = false) {
  static std::atomic<int> counter{0};
  const fs::path path = fs::path(::testing::TempDir()) /
                        ("cmn_dicom_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + ".dcm");
  const OFCondition cond = file->saveFile(path.c_str(), xfer, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0, 0,
                                          dataset_only ? EWM_dataset : EWM_createNewMeta);
  EXPECT_TRUE(cond.good()) << cond.text();
  std::string bytes = slurp(path.string());
  fs::remove(path);
  return bytes;
}

std::string synth(const Synth& s, E_TransferSyntax xfer = EXS_LittleEndianExplicit) {
  return serialise(build(s).get(), xfer);
}

std::vector<int> grey_values(const cv::Mat& grey8) {
  std::vector<int> out;
  for (int y = 0; y < grey8.rows; ++y) {
    for (int x = 0; x < grey8.cols; ++x) out.push_back(grey8.at<uint8_t>(y, x));
  }
  return out;
}

// Decodes `s` and returns its grey levels (row-major); fails the test on an error.
std::vector<int> grey_of(const Synth& s, const DicomReadOptions& options = {}) {
  auto image = read_dicom_image(synth(s), "synthetic.dcm", options);
  EXPECT_TRUE(image.ok()) << image.status();
  if (!image.ok()) return {};
  EXPECT_EQ(image->grey8.type(), CV_8UC1);
  return grey_values(image->grey8);
}

// EXPECT_EQ on multi-megabyte strings prints them whole; this reports the number of differing bytes.
::testing::AssertionResult same_bytes(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  size_t differing = 0;
  for (size_t i = 0; i < a.size(); ++i) differing += a[i] != b[i];
  if (differing == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << differing << " of " << a.size() << " bytes differ";
}

std::string bytes_of(const cv::Mat& m) {
  const cv::Mat c = m.isContinuous() ? m : m.clone();
  return std::string(reinterpret_cast<const char*>(c.data), c.total() * c.elemSize());
}

void set_window(DcmDataset* ds, const char* center, const char* width, const char* function = nullptr) {
  ds->putAndInsertString(DCM_WindowCenter, center);
  ds->putAndInsertString(DCM_WindowWidth, width);
  if (function != nullptr) ds->putAndInsertString(DCM_VOILUTFunction, function);
}

// ---------------------------------------------------------------------------------------------------------
// Real files: lossless transfer syntaxes give the uncompressed reference's stored values, byte for byte.

struct ReferencePair {
  const char* file;
  const char* reference;
};

class LosslessDecode : public ::testing::TestWithParam<ReferencePair> {};

TEST_P(LosslessDecode, StoredValuesAreByteIdenticalToTheReference) {
  const ReferencePair& pair = GetParam();
  ASSERT_OK_AND_ASSIGN(const DicomStoredPixels reference,
                       read_dicom_stored_pixels(slurp(data_path(pair.reference)), pair.reference));
  ASSERT_OK_AND_ASSIGN(const DicomStoredPixels decoded, read_dicom_stored_pixels(slurp(data_path(pair.file)), pair.file));
  ASSERT_EQ(decoded.frame.size(), reference.frame.size());
  ASSERT_EQ(decoded.frame.type(), reference.frame.type());
  EXPECT_EQ(decoded.bits_stored, reference.bits_stored);
  EXPECT_EQ(decoded.photometric, reference.photometric);
  EXPECT_TRUE(same_bytes(bytes_of(decoded.frame), bytes_of(reference.frame)));
}

INSTANTIATE_TEST_SUITE_P(
    SharedData, LosslessDecode,
    ::testing::Values(ReferencePair{"other_radiographs/RG2_JPLL.dcm", "other_radiographs/RG2_UNC.dcm"},
                      ReferencePair{"other_radiographs/RG2_JLSL.dcm", "other_radiographs/RG2_UNC.dcm"},
                      ReferencePair{"other_radiographs/RG2_RLE.dcm", "other_radiographs/RG2_UNC.dcm"},
                      ReferencePair{"other_radiographs/RG2_J2KR.dcm", "other_radiographs/RG2_UNC.dcm"},
                      ReferencePair{"other_radiographs/RG3_JPLL.dcm", "other_radiographs/RG3_UNC.dcm"},
                      ReferencePair{"other_radiographs/RG3_JLSL.dcm", "other_radiographs/RG3_UNC.dcm"},
                      ReferencePair{"other_radiographs/RG3_RLE.dcm", "other_radiographs/RG3_UNC.dcm"},
                      ReferencePair{"other_radiographs/RG3_J2KR.dcm", "other_radiographs/RG3_UNC.dcm"},
                      // The same chest as a bare implicit-VR dataset (no preamble, no meta) and as Part 10.
                      ReferencePair{"chest/CR-MONO1-10-chest_implicitLE_nometa.dcm",
                                    "chest/gdcm-CR-MONO1-10-chest_explicitLE.dcm"}),
    [](const ::testing::TestParamInfo<ReferencePair>& info) {
      std::string name = fs::path(info.param.file).stem().string();
      for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      return name;
    });

// The references themselves: read_dicom_stored_pixels returns exactly their Pixel Data (read here with DCMTK
// directly), whose MD5 the data README gives (RG2 06900ee4323a..., RG3 e7c857ef7e6a... for the whole value).
TEST(DicomStoredPixels, UncompressedReferenceIsItsPixelDataValue) {
  for (const char* name : {"other_radiographs/RG2_UNC.dcm", "other_radiographs/RG3_UNC.dcm"}) {
    DcmFileFormat file;
    ASSERT_TRUE(file.loadFile(data_path(name).c_str()).good());
    DcmElement* element = nullptr;
    ASSERT_TRUE(file.getDataset()->findAndGetElement(DCM_PixelData, element).good());
    Uint8* raw = nullptr;
    ASSERT_TRUE(element->getUint8Array(raw).good());
    ASSERT_OK_AND_ASSIGN(const DicomStoredPixels pixels, read_dicom_stored_pixels(slurp(data_path(name)), name));
    const std::string frame = bytes_of(pixels.frame);
    ASSERT_LE(frame.size(), element->getLength());
    EXPECT_TRUE(same_bytes(frame, std::string(reinterpret_cast<const char*>(raw), frame.size()))) << name;
    EXPECT_EQ(pixels.frame.type(), CV_16UC1);
    EXPECT_EQ(pixels.bits_stored, 10);
  }
}

// JPEG 2000 stored values at a few positions, as GDCM decodes them (pydicom's pixel handler tests list these).
TEST(DicomStoredPixels, Jpeg2000ValuesMatchGdcm) {
  ASSERT_OK_AND_ASSIGN(const DicomStoredPixels rg1,
                       read_dicom_stored_pixels(slurp(data_path("chest/RG1_J2KI.dcm")), "RG1_J2KI"));
  std::vector<int> column;
  for (int y = 175; y < 184; ++y) column.push_back(rg1.frame.at<uint16_t>(y, 28));
  EXPECT_EQ(column, (std::vector<int>{24291, 24345, 24401, 24455, 24508, 24559, 24604, 24647, 24687}));
  ASSERT_OK_AND_ASSIGN(const DicomStoredPixels dx, read_dicom_stored_pixels(
                                                       slurp(data_path("chest/DX_JPEG2KLossless_1s_1f_u_16_16.dcm")), "DX"));
  column.clear();
  for (int y = 1402; y < 1411; ++y) column.push_back(dx.frame.at<uint16_t>(y, 1388));
  EXPECT_EQ(column, (std::vector<int>{55680, 57220, 58518, 61083, 64624, 65535, 65535, 65535, 65535}));
}

// Lossy transfer syntaxes stay close to the reference: mean absolute error and worst error, in stored units of
// these 10-bit images. JPEG-LS near-lossless bounds every error by its NEAR parameter (4 in these files).
struct LossyCase {
  const char* file;
  const char* reference;
  double max_mean_abs_error;
  double max_abs_error;
};

class LossyDecode : public ::testing::TestWithParam<LossyCase> {};

TEST_P(LossyDecode, StoredValuesAreCloseToTheReference) {
  const LossyCase& c = GetParam();
  ASSERT_OK_AND_ASSIGN(const DicomStoredPixels reference,
                       read_dicom_stored_pixels(slurp(data_path(c.reference)), c.reference));
  ASSERT_OK_AND_ASSIGN(const DicomStoredPixels decoded, read_dicom_stored_pixels(slurp(data_path(c.file)), c.file));
  ASSERT_EQ(decoded.frame.size(), reference.frame.size());
  ASSERT_EQ(decoded.frame.type(), CV_16UC1);
  cv::Mat a, b, diff;
  decoded.frame.convertTo(a, CV_64F);
  reference.frame.convertTo(b, CV_64F);
  cv::absdiff(a, b, diff);
  double worst = 0;
  cv::minMaxLoc(diff, nullptr, &worst);
  const double mean = cv::mean(diff)[0];
  EXPECT_LE(mean, c.max_mean_abs_error) << c.file;
  EXPECT_LE(worst, c.max_abs_error) << c.file;
  EXPECT_GT(cv::norm(b, cv::NORM_L1) / static_cast<double>(b.total()), 50 * mean) << "error too large vs signal";
}

INSTANTIATE_TEST_SUITE_P(
    SharedData, LossyDecode,
    ::testing::Values(LossyCase{"other_radiographs/RG2_J2KI.dcm", "other_radiographs/RG2_UNC.dcm", 4, 120},
                      LossyCase{"other_radiographs/RG2_JLSN.dcm", "other_radiographs/RG2_UNC.dcm", 3, 4},
                      LossyCase{"other_radiographs/RG2_JPLY.dcm", "other_radiographs/RG2_UNC.dcm", 4, 120},
                      LossyCase{"other_radiographs/RG3_J2KI.dcm", "other_radiographs/RG3_UNC.dcm", 4, 120},
                      LossyCase{"other_radiographs/RG3_JLSN.dcm", "other_radiographs/RG3_UNC.dcm", 3, 4},
                      LossyCase{"other_radiographs/RG3_JPLY.dcm", "other_radiographs/RG3_UNC.dcm", 4, 120}),
    [](const ::testing::TestParamInfo<LossyCase>& info) { return fs::path(info.param.file).stem().string(); });

// Every chest file gives a plausible 8-bit image: its size, a wide range of grey levels, and "bright = dense":
// the mediastinum (central vertical band) is brighter than the lung fields beside it. This catches a missed
// MONOCHROME1 inversion on real data.
struct ChestCase {
  const char* file;
  int columns;
  int rows;
  // Upright frontal view: the anatomical check applies. Not for the DX JPEG 2000 file, stored rotated
  // (PatientOrientation H\L) with pixel values that all lie above its own window (pylibjpeg's test data
  // notes it as "blank?"; GDCM decodes the same values, see Jpeg2000ValuesMatchGdcm).
  bool upright_frontal = true;
};

class ChestFiles : public ::testing::TestWithParam<ChestCase> {};

TEST_P(ChestFiles, DecodeToAPlausibleGreyImage) {
  const ChestCase& c = GetParam();
  ASSERT_OK_AND_ASSIGN(const DicomImage image, read_dicom_file(data_path(c.file)));
  ASSERT_EQ(image.grey8.type(), CV_8UC1);
  EXPECT_EQ(image.grey8.cols, c.columns);
  EXPECT_EQ(image.grey8.rows, c.rows);
  cv::Scalar mean, stddev;
  cv::meanStdDev(image.grey8, mean, stddev);
  EXPECT_GT(stddev[0], 30) << image.grey_levels;
  double lo = 0, hi = 0;
  cv::minMaxLoc(image.grey8, &lo, &hi);
  EXPECT_LT(lo, 40);
  EXPECT_GT(hi, 200);
  const FloatImage input = to_model_input(image.grey8);  // the same 8-bit image through the PNG path
  EXPECT_EQ(input.height, 224);
  EXPECT_EQ(input.channels, 3);
  if (!c.upright_frontal) return;
  const int w = image.grey8.cols;
  const int h = image.grey8.rows;
  const cv::Range band(h * 35 / 100, h * 60 / 100);
  const double centre = cv::mean(image.grey8(band, cv::Range(w * 46 / 100, w * 54 / 100)))[0];
  const double right_lung = cv::mean(image.grey8(band, cv::Range(w * 22 / 100, w * 32 / 100)))[0];
  const double left_lung = cv::mean(image.grey8(band, cv::Range(w * 68 / 100, w * 78 / 100)))[0];
  EXPECT_GT(centre, right_lung + 20) << image.grey_levels;
  EXPECT_GT(centre, left_lung + 20) << image.grey_levels;
}

INSTANTIATE_TEST_SUITE_P(
    SharedData, ChestFiles,
    ::testing::Values(ChestCase{"chest/CR-MONO1-10-chest_implicitLE_nometa.dcm", 440, 440},
                      ChestCase{"chest/gdcm-CR-MONO1-10-chest_explicitLE.dcm", 440, 440},
                      ChestCase{"chest/CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm", 2010, 2446},
                      ChestCase{"chest/DX_JPEG2KLossless_1s_1f_u_16_16.dcm", 1420, 1416, false},
                      ChestCase{"chest/NIH-ChestXray14_DX_implicitLE.dcm", 1024, 1024},
                      ChestCase{"chest/RG1_J2KI.dcm", 1841, 1955},
                      ChestCase{"chest/RG1_JLSN.dcm", 1841, 1955}),
    [](const ::testing::TestParamInfo<ChestCase>& info) {
      std::string name = fs::path(info.param.file).stem().string();
      for (char& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return name;
    });

TEST(DicomInfo, ReadsIdentifiersAndViewOfARealFile) {
  ASSERT_OK_AND_ASSIGN(const InstanceInfo info, read_dicom_info(slurp(data_path("chest/RG1_JLSN.dcm")), "RG1"));
  EXPECT_EQ(info.source, "RG1");
  EXPECT_FALSE(info.sop_instance_uid.empty());
  EXPECT_FALSE(info.study_instance_uid.empty());
  EXPECT_EQ(info.modality, "CR");
  EXPECT_EQ(info.transfer_syntax_uid, "1.2.840.10008.1.2.4.81");
  EXPECT_TRUE(info.is_image);
  EXPECT_EQ(info.view, ViewPosition::kPA);
  EXPECT_EQ(info.view_evidence, "ViewPosition=PA");
  EXPECT_EQ(info.columns, 1841);
  EXPECT_EQ(info.rows, 1955);
}

TEST(DicomInfo, BareDatasetWithoutMetaReportsItsTransferSyntax) {
  ASSERT_OK_AND_ASSIGN(const InstanceInfo info,
                       read_dicom_info(slurp(data_path("chest/CR-MONO1-10-chest_implicitLE_nometa.dcm")), "x"));
  EXPECT_EQ(info.transfer_syntax_uid, "1.2.840.10008.1.2");
  EXPECT_TRUE(info.is_image);
}

// ---------------------------------------------------------------------------------------------------------
// Encodings of the same synthetic image: every native transfer syntax, a bare dataset, RLE.

Synth ramp_image() {
  Synth s;
  s.rows = 3;
  s.columns = 5;
  for (int i = 0; i < 15; ++i) s.words.push_back(static_cast<uint16_t>(i * 273));  // 0 .. 3822, 12 bits
  return s;
}

TEST(DicomInfo, SeriesAndInstanceNumbers) {
  Synth s = ramp_image();
  s.edit = [](DcmDataset* ds) {
    ds->putAndInsertString(DCM_SeriesNumber, "12");
    ds->putAndInsertString(DCM_InstanceNumber, "-3");
  };
  ASSERT_OK_AND_ASSIGN(const InstanceInfo info, read_dicom_info(synth(s), "n.dcm"));
  EXPECT_EQ(info.series_number, std::optional<int64_t>(12));
  EXPECT_EQ(info.instance_number, std::optional<int64_t>(-3));
  s.edit = [](DcmDataset* ds) { ds->putAndInsertString(DCM_SeriesNumber, "x1"); };
  ASSERT_OK_AND_ASSIGN(const InstanceInfo bad, read_dicom_info(synth(s), "n.dcm"));
  EXPECT_EQ(bad.series_number, std::nullopt);
  EXPECT_EQ(bad.instance_number, std::nullopt);
}

TEST(DicomDecode, EveryNativeEncodingGivesTheSameStoredValues) {
  const Synth s = ramp_image();
  const cv::Mat expected(3, 5, CV_16UC1, const_cast<uint16_t*>(s.words.data()));
  struct Encoding {
    const char* name;
    E_TransferSyntax xfer;
    bool dataset_only;
  };
  for (const Encoding& e : {Encoding{"explicit LE", EXS_LittleEndianExplicit, false},
                            Encoding{"implicit LE", EXS_LittleEndianImplicit, false},
                            Encoding{"explicit BE", EXS_BigEndianExplicit, false},
                            Encoding{"deflated", EXS_DeflatedLittleEndianExplicit, false},
                            Encoding{"bare implicit dataset", EXS_LittleEndianImplicit, true},
                            Encoding{"bare explicit BE dataset", EXS_BigEndianExplicit, true}}) {
    SCOPED_TRACE(e.name);
    auto file = build(s);
    auto pixels = read_dicom_stored_pixels(serialise(file.get(), e.xfer, e.dataset_only), e.name);
    ASSERT_TRUE(pixels.ok()) << pixels.status();
    EXPECT_TRUE(same_bytes(bytes_of(pixels->frame), bytes_of(expected)));
  }
}

TEST(DicomDecode, RleMultiFrameDecodesFrameOne) {
  Synth s = ramp_image();
  s.frames = 2;
  for (int i = 0; i < 15; ++i) s.words.push_back(4000);  // frame 2: constant
  auto file = build(s);
  DcmRLEEncoderRegistration::registerCodecs();
  DcmRLERepresentationParameter rle;
  ASSERT_TRUE(file->getDataset()->chooseRepresentation(EXS_RLELossless, &rle).good());
  ASSERT_OK_AND_ASSIGN(const DicomStoredPixels pixels,
                       read_dicom_stored_pixels(serialise(file.get(), EXS_RLELossless), "rle"));
  EXPECT_EQ(pixels.frames, 2);
  EXPECT_EQ(pixels.info.transfer_syntax_uid, UID_RLELosslessTransferSyntax);
  const cv::Mat expected(3, 5, CV_16UC1, s.words.data());
  EXPECT_TRUE(same_bytes(bytes_of(pixels.frame), bytes_of(expected)));
}

// Colour through a DCMTK codec: RLE of an RGB image, stored colour-by-pixel and colour-by-plane, decodes to
// the same interleaved samples as the native image.
TEST(DicomDecode, RleColourGivesInterleavedSamples) {
  Synth s;
  s.rows = 2;
  s.columns = 3;
  s.bits_allocated = 8;
  s.bits_stored = 8;
  s.high_bit = 7;
  s.samples_per_pixel = 3;
  s.photometric = "RGB";
  std::vector<uint8_t> interleaved(18);
  for (int i = 0; i < 6; ++i) {
    interleaved[3 * i] = static_cast<uint8_t>(10 * i);
    interleaved[3 * i + 1] = static_cast<uint8_t>(100 + i);
    interleaved[3 * i + 2] = static_cast<uint8_t>(250 - 7 * i);
  }
  const cv::Mat expected(2, 3, CV_8UC3, interleaved.data());
  DcmRLEEncoderRegistration::registerCodecs();
  DcmRLERepresentationParameter rle;
  for (const int planar : {0, 1}) {
    SCOPED_TRACE(planar == 0 ? "colour-by-pixel" : "colour-by-plane");
    s.planar_configuration = planar;
    s.bytes.clear();
    if (planar == 0) {
      s.bytes = interleaved;
    } else {
      for (int c = 0; c < 3; ++c) {
        for (int i = 0; i < 6; ++i) s.bytes.push_back(interleaved[3 * i + c]);
      }
    }
    ASSERT_OK_AND_ASSIGN(const DicomStoredPixels native, read_dicom_stored_pixels(synth(s), "native"));
    EXPECT_TRUE(same_bytes(bytes_of(native.frame), bytes_of(expected)));
    auto file = build(s);
    ASSERT_TRUE(file->getDataset()->chooseRepresentation(EXS_RLELossless, &rle).good());
    ASSERT_OK_AND_ASSIGN(const DicomStoredPixels decoded,
                         read_dicom_stored_pixels(serialise(file.get(), EXS_RLELossless), "rle"));
    EXPECT_EQ(decoded.photometric, "RGB");
    EXPECT_TRUE(same_bytes(bytes_of(decoded.frame), bytes_of(expected)));
  }
}

// The concatenated fragments of an encapsulated Pixel Data element.
std::string encapsulated_bytes(DcmFileFormat* file) {
  DcmElement* element = nullptr;
  EXPECT_TRUE(file->getDataset()->findAndGetElement(DCM_PixelData, element).good());
  auto* pixel_data = dynamic_cast<DcmPixelData*>(element);
  if (pixel_data == nullptr) return "";
  E_TransferSyntax rep = EXS_Unknown;
  const DcmRepresentationParameter* param = nullptr;
  pixel_data->getOriginalRepresentationKey(rep, param);
  DcmPixelSequence* sequence = nullptr;
  EXPECT_TRUE(pixel_data->getEncapsulatedRepresentation(rep, param, sequence).good());
  std::string out;
  for (unsigned long i = 1; sequence != nullptr && i < sequence->card(); ++i) {
    DcmPixelItem* item = nullptr;
    EXPECT_TRUE(sequence->getItem(item, i).good());
    Uint8* data = nullptr;
    EXPECT_TRUE(item->getUint8Array(data).good());
    out.append(reinterpret_cast<const char*>(data), item->getLength());
  }
  return out;
}

// Replaces the Pixel Data with an encapsulated one: the given fragments (odd ones padded), and a Basic Offset
// Table listing each fragment as a frame when asked.
void set_fragments(DcmFileFormat* file, E_TransferSyntax xfer, std::vector<std::string> fragments,
                   bool with_offset_table) {
  auto* sequence = new DcmPixelSequence(DCM_PixelSequenceTag);
  auto* table = new DcmPixelItem(DCM_PixelItemTag);
  std::vector<Uint32> offsets;
  Uint32 offset = 0;
  for (std::string& f : fragments) {
    if (f.size() % 2) f.push_back('\0');
    offsets.push_back(offset);
    offset += static_cast<Uint32>(8 + f.size());
  }
  if (with_offset_table) {
    table->putUint8Array(reinterpret_cast<const Uint8*>(offsets.data()), offsets.size() * sizeof(Uint32));
  }
  sequence->insert(table);
  for (const std::string& f : fragments) {
    auto* item = new DcmPixelItem(DCM_PixelItemTag);
    item->putUint8Array(reinterpret_cast<const Uint8*>(f.data()), f.size());
    sequence->insert(item);
  }
  auto* pixel_data = new DcmPixelData(DCM_PixelData);
  pixel_data->putOriginalRepresentation(xfer, nullptr, sequence);
  file->getDataset()->insert(pixel_data, /*replaceOld=*/true);
}

// A two-frame JPEG 2000 instance built from RG2_J2KR's codestream (frame 1) and a broken frame 2: frame 1 is
// found with and without a Basic Offset Table, and equals the uncompressed reference.
TEST(DicomDecode, Jpeg2000MultiFrameDecodesFrameOne) {
  DcmFileFormat source;
  ASSERT_TRUE(source.loadFile(data_path("other_radiographs/RG2_J2KR.dcm").c_str()).good());
  const std::string codestream = encapsulated_bytes(&source);
  ASSERT_GT(codestream.size(), 1000u);
  ASSERT_OK_AND_ASSIGN(const DicomStoredPixels reference,
                       read_dicom_stored_pixels(slurp(data_path("other_radiographs/RG2_UNC.dcm")), "RG2_UNC"));
  const std::string junk("\xFF\x4F\xFF\x51\x00\x00", 6);
  for (const bool with_offset_table : {false, true}) {
    SCOPED_TRACE(with_offset_table ? "with Basic Offset Table" : "empty Basic Offset Table");
    DcmFileFormat copy(source);
    copy.getDataset()->putAndInsertString(DCM_NumberOfFrames, "2");
    set_fragments(&copy, EXS_JPEG2000LosslessOnly, {codestream, junk}, with_offset_table);
    ASSERT_OK_AND_ASSIGN(const DicomStoredPixels pixels,
                         read_dicom_stored_pixels(serialise(&copy, EXS_JPEG2000LosslessOnly), "j2k2"));
    EXPECT_EQ(pixels.frames, 2);
    EXPECT_TRUE(same_bytes(bytes_of(pixels.frame), bytes_of(reference.frame)));
  }
  // Frame 1 split over two fragments, no offset table: fragments are gathered up to the end-of-codestream.
  DcmFileFormat split(source);
  split.getDataset()->putAndInsertString(DCM_NumberOfFrames, "2");
  const size_t half = (codestream.size() / 2) & ~size_t{1};
  set_fragments(&split, EXS_JPEG2000LosslessOnly, {codestream.substr(0, half), codestream.substr(half), junk}, false);
  ASSERT_OK_AND_ASSIGN(const DicomStoredPixels pixels,
                       read_dicom_stored_pixels(serialise(&split, EXS_JPEG2000LosslessOnly), "j2k-split"));
  EXPECT_TRUE(same_bytes(bytes_of(pixels.frame), bytes_of(reference.frame)));
}

// ---------------------------------------------------------------------------------------------------------
// Grey-level rules, one synthetic instance each. Expected values computed by hand from dicom.h's formulas.

TEST(GreyLevels, RescaleSlopeInterceptFeedsTheWindow) {
  Synth s;
  s.words = {0, 100, 200, 300};
  // m = 2s - 100 = -100, 100, 300, 500. LINEAR c=200 w=401: m <= -0.5 -> 0, m > 399.5 -> 255,
  // else ((m - 199.5) / 400 + 0.5) * 255: 100 -> 64.07 -> 64, 300 -> 191.57 -> 192.
  s.edit = [](DcmDataset* ds) {
    ds->putAndInsertString(DCM_RescaleSlope, "2");
    ds->putAndInsertString(DCM_RescaleIntercept, "-100");
    set_window(ds, "200", "401");
  };
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 64, 192, 255}));
}

TEST(GreyLevels, ModalityLutSequenceReplacesRescale) {
  Synth s;
  s.words = {9, 10, 11, 13};
  // LUT: 3 entries from 10, 16 bits: 10 -> 0, 11 -> 500, 12 -> 1000; inputs clamp to the table.
  // Window LINEAR_EXACT c=500 w=1000: ((m - 500) / 1000 + 0.5) * 255: 0 -> 0, 500 -> 127.5 -> 128, 1000 -> 255.
  s.edit = [](DcmDataset* ds) {
    ds->putAndInsertString(DCM_RescaleSlope, "7");  // ignored: the LUT wins
    DcmItem* item = nullptr;
    ds->findOrCreateSequenceItem(DCM_ModalityLUTSequence, item, 0);
    const Uint16 descriptor[3] = {3, 10, 16};
    item->putAndInsertUint16Array(DCM_LUTDescriptor, descriptor, 3);
    const Uint16 data[3] = {0, 500, 1000};
    item->putAndInsertUint16Array(DCM_LUTData, data, 3);
    set_window(ds, "500", "1000", "LINEAR_EXACT");
  };
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 0, 128, 255}));
}

TEST(GreyLevels, WindowLinear) {
  Synth s;
  s.columns = 5;
  s.words = {94, 95, 100, 104, 105};
  // c=100 w=11: m <= 94.5 -> 0; m > 104.5 -> 255; else ((m - 99.5) / 10 + 0.5) * 255:
  // 95 -> 12.75 -> 13, 100 -> 140.25 -> 140, 104 -> 242.25 -> 242.
  s.edit = [](DcmDataset* ds) { set_window(ds, "100", "11", "LINEAR"); };
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 13, 140, 242, 255}));
}

TEST(GreyLevels, WindowLinearIsTheDefaultFunctionAndTheFirstWindowWins) {
  Synth s;
  s.columns = 5;
  s.words = {94, 95, 100, 104, 105};
  s.edit = [](DcmDataset* ds) { set_window(ds, "100\\2000", "11\\4000"); };
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 13, 140, 242, 255}));
}

TEST(GreyLevels, AWindowThatBlanksTheImageIsSkipped) {
  Synth s;
  s.bits_stored = 16;
  s.high_bit = 15;
  s.words = {40000, 45000, 50000, 55000};
  // Window 2725 / 5310 covers 70 .. 5380: every pixel would be 255. Percentile window instead:
  // P0.5 -> 40000, P99.5 -> 55000: 0, 85, 170, 255. (The DX JPEG 2000 chest in shared/data is such a file.)
  s.edit = [](DcmDataset* ds) { set_window(ds, "2725", "5310"); };
  ASSERT_OK_AND_ASSIGN(const DicomImage image, read_dicom_image(synth(s), "x.dcm"));
  EXPECT_EQ(grey_values(image.grey8), (std::vector<int>{0, 85, 170, 255}));
  EXPECT_NE(image.grey_levels.find("window ignored (maps every pixel to one grey level)"), std::string::npos)
      << image.grey_levels;
}

TEST(GreyLevels, WindowLinearExact) {
  Synth s;
  s.columns = 5;
  s.words = {95, 96, 100, 104, 106};
  // c=100 w=10: m <= 95 -> 0; m > 105 -> 255; else ((m - 100) / 10 + 0.5) * 255:
  // 96 -> 25.5 -> 26, 100 -> 127.5 -> 128, 104 -> 229.5 -> 230.
  s.edit = [](DcmDataset* ds) { set_window(ds, "100", "10", "LINEAR_EXACT"); };
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 26, 128, 230, 255}));
}

TEST(GreyLevels, WindowSigmoid) {
  Synth s;
  s.columns = 5;
  s.words = {90, 95, 100, 105, 110};
  // 255 / (1 + exp(-4 (m - 100) / 10)): 255/(1+e^4) = 4.59 -> 5, 255/(1+e^2) = 30.40 -> 30, 127.5 -> 128,
  // 255/(1+e^-2) = 224.60 -> 225, 255/(1+e^-4) = 250.41 -> 250.
  s.edit = [](DcmDataset* ds) { set_window(ds, "100", "10", "SIGMOID"); };
  EXPECT_EQ(grey_of(s), (std::vector<int>{5, 30, 128, 225, 250}));
}

TEST(GreyLevels, VoiLutSequence) {
  Synth s;
  s.columns = 6;
  s.words = {9, 10, 11, 12, 13, 14};
  // 4 entries from 10, 12 bits: 0, 1365, 2730, 4095 -> * 255 / 4095 = 0, 85, 170, 255; inputs clamp.
  s.edit = [](DcmDataset* ds) {
    DcmItem* item = nullptr;
    ds->findOrCreateSequenceItem(DCM_VOILUTSequence, item, 0);
    const Uint16 descriptor[3] = {4, 10, 12};
    item->putAndInsertUint16Array(DCM_LUTDescriptor, descriptor, 3);
    const Uint16 data[4] = {0, 1365, 2730, 4095};
    item->putAndInsertUint16Array(DCM_LUTData, data, 4);
  };
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 0, 85, 170, 255, 255}));
}

TEST(GreyLevels, WithoutVoiThePercentileWindowApplies) {
  Synth s;
  s.rows = 1;
  s.columns = 200;
  for (int i = 0; i < 200; ++i) s.words.push_back(static_cast<uint16_t>(i));
  // N = 200: P0.5 = rank ceil(1) = 1 -> 0; P99.5 = rank ceil(199) = 199 -> 198.
  // y = (m - 0) / 198 * 255: 99 -> 127.5 -> 128, 198 -> 255, 199 -> clamped 255, 1 -> 1.29 -> 1.
  const std::vector<int> grey = grey_of(s);
  ASSERT_EQ(grey.size(), 200u);
  EXPECT_EQ(grey[0], 0);
  EXPECT_EQ(grey[1], 1);
  EXPECT_EQ(grey[99], 128);
  EXPECT_EQ(grey[197], 254);  // 197 / 198 * 255 = 253.71 -> 254
  EXPECT_EQ(grey[198], 255);
  EXPECT_EQ(grey[199], 255);
}

TEST(GreyLevels, PercentilesAreConfigurable) {
  Synth s;
  s.rows = 1;
  s.columns = 200;
  for (int i = 0; i < 200; ++i) s.words.push_back(static_cast<uint16_t>(i));
  DicomReadOptions options;
  options.percentile_low = 10;   // rank 20 -> 19
  options.percentile_high = 90;  // rank 180 -> 179
  const std::vector<int> grey = grey_of(s, options);
  ASSERT_EQ(grey.size(), 200u);
  EXPECT_EQ(grey[19], 0);
  EXPECT_EQ(grey[99], 128);  // (99 - 19) / 160 * 255 = 127.5 -> 128
  EXPECT_EQ(grey[179], 255);
}

TEST(GreyLevels, PixelPaddingIsExcludedFromThePercentileWindow) {
  Synth s;
  s.rows = 10;
  s.columns = 10;
  for (int i = 0; i < 50; ++i) s.words.push_back(static_cast<uint16_t>(100 + i));  // 100 .. 149
  for (int i = 0; i < 50; ++i) s.words.push_back(4095);                              // padding
  // Without padding: N = 50, P0.5 = rank 1 -> 100, P99.5 = rank 50 -> 149: 124 -> 24/49*255 = 124.9 -> 125.
  // (Were the padding counted, P99.5 would be 4095 and 149 would map to 3.)
  s.edit = [](DcmDataset* ds) { ds->putAndInsertUint16(DCM_PixelPaddingValue, 4095); };
  const std::vector<int> grey = grey_of(s);
  ASSERT_EQ(grey.size(), 100u);
  EXPECT_EQ(grey[0], 0);
  EXPECT_EQ(grey[24], 125);
  EXPECT_EQ(grey[49], 255);
  EXPECT_EQ(grey[50], 255);  // padding itself: same mapping, clamped
}

TEST(GreyLevels, PixelPaddingRangeLimitExcludesTheWholeRange) {
  Synth s;
  s.rows = 1;
  s.columns = 8;
  s.words = {0, 1, 2, 3, 10, 20, 30, 40};
  // Padding 0..3 (value 3, limit 0): N = 4 (10..40): P0.5 -> 10, P99.5 -> 40; 20 -> 85, 30 -> 170.
  s.edit = [](DcmDataset* ds) {
    ds->putAndInsertUint16(DCM_PixelPaddingValue, 3);
    ds->putAndInsertUint16(DCM_PixelPaddingRangeLimit, 0);
  };
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 0, 0, 0, 0, 85, 170, 255}));
}

TEST(GreyLevels, Monochrome1IsInverted) {
  Synth s;
  s.columns = 5;
  s.words = {95, 96, 100, 104, 106};
  s.photometric = "MONOCHROME1";
  s.edit = [](DcmDataset* ds) { set_window(ds, "100", "10", "LINEAR_EXACT"); };
  EXPECT_EQ(grey_of(s), (std::vector<int>{255, 229, 127, 25, 0}));  // 255 - {0, 26, 128, 230, 255}
}

TEST(GreyLevels, PresentationLutShapeInverseInvertsMonochrome2) {
  Synth s;
  s.columns = 5;
  s.words = {95, 96, 100, 104, 106};
  s.edit = [](DcmDataset* ds) {
    set_window(ds, "100", "10", "LINEAR_EXACT");
    ds->putAndInsertString(DCM_PresentationLUTShape, "INVERSE");
  };
  EXPECT_EQ(grey_of(s), (std::vector<int>{255, 229, 127, 25, 0}));
}

TEST(GreyLevels, InverseOnMonochrome1IsNotAppliedTwice) {
  Synth s;
  s.columns = 5;
  s.words = {95, 96, 100, 104, 106};
  s.photometric = "MONOCHROME1";
  s.edit = [](DcmDataset* ds) {
    set_window(ds, "100", "10", "LINEAR_EXACT");
    ds->putAndInsertString(DCM_PresentationLUTShape, "INVERSE");
  };
  EXPECT_EQ(grey_of(s), (std::vector<int>{255, 229, 127, 25, 0}));
}

TEST(GreyLevels, SignedPixelsAreSignExtendedFromBitsStored) {
  Synth s;
  s.pixel_representation = 1;
  // 12-bit two's complement -2048, -1, 0, 2047, once without and once with the upper bits set.
  s.words = {0x0800, 0x0FFF, 0x0000, 0x07FF};
  // LINEAR_EXACT c=0 w=4096: m <= -2048 -> 0; ((m / 4096) + 0.5) * 255: -1 -> 127.44 -> 127, 0 -> 128,
  // 2047 -> 254.94 -> 255.
  s.edit = [](DcmDataset* ds) { set_window(ds, "0", "4096", "LINEAR_EXACT"); };
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 127, 128, 255}));
  s.words = {0xF800, 0xFFFF, 0x0000, 0x07FF};
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 127, 128, 255}));
}

TEST(GreyLevels, SignedPaddingValueIsReadInTheSignedDomain) {
  Synth s;
  s.pixel_representation = 1;
  s.columns = 6;
  s.words = {0xF830, 0xF830, 0x0000, 0x0064, 0x00C8, 0x012C};  // -2000 (padding), -2000, 0, 100, 200, 300
  // Padding -2000 (SS): N = 4 (0..300): 100 -> 85, 200 -> 170.
  s.edit = [](DcmDataset* ds) { ds->putAndInsertSint16(DCM_PixelPaddingValue, -2000); };
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 0, 0, 85, 170, 255}));
}

TEST(GreyLevels, HighBitBelowTheTopShiftsTheStoredBits) {
  Synth s;
  s.bits_stored = 8;
  s.high_bit = 11;  // stored bits 4..11; bits 0..3 and 12..15 are overlay garbage
  s.words = {0xF00F | (10 << 4), 0x000A | (20 << 4), 0x0000 | (30 << 4), 0xF000 | (40 << 4)};
  // Values 10, 20, 30, 40; LINEAR_EXACT c=25 w=40: (m - 25) / 40 + 0.5: 31.9 -> 32, 95.6 -> 96, 159.4 -> 159,
  // 223.1 -> 223.
  s.edit = [](DcmDataset* ds) { set_window(ds, "25", "40", "LINEAR_EXACT"); };
  EXPECT_EQ(grey_of(s), (std::vector<int>{32, 96, 159, 223}));
}

TEST(GreyLevels, MultiFrameTakesFrameOne) {
  Synth s;
  s.rows = 2;
  s.columns = 2;
  s.frames = 3;
  s.words = {10, 20, 30, 40, 1000, 1000, 1000, 1000, 0, 0, 0, 0};
  s.edit = [](DcmDataset* ds) { set_window(ds, "25", "40", "LINEAR_EXACT"); };
  EXPECT_EQ(grey_of(s), (std::vector<int>{32, 96, 159, 223}));
}

TEST(GreyLevels, EightBitMonochromeWithoutVoi) {
  Synth s;
  s.bits_allocated = 8;
  s.bits_stored = 8;
  s.high_bit = 7;
  s.bytes = {50, 100, 150, 200};
  // N = 4: P0.5 -> 50, P99.5 -> 200: (m - 50) / 150 * 255 = 0, 85, 170, 255.
  EXPECT_EQ(grey_of(s), (std::vector<int>{0, 85, 170, 255}));
}

TEST(GreyLevels, RgbBecomesPilLuma) {
  Synth s;
  s.bits_allocated = 8;
  s.bits_stored = 8;
  s.high_bit = 7;
  s.samples_per_pixel = 3;
  s.photometric = "RGB";
  s.bytes = {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255};
  // (19595 R + 38470 G + 7471 B + 32768) >> 16: red 76, green 150, blue 29, white 255.
  EXPECT_EQ(grey_of(s), (std::vector<int>{76, 150, 29, 255}));
  s.planar_configuration = 1;  // R R R R G G G G B B B B
  s.bytes = {255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255};
  EXPECT_EQ(grey_of(s), (std::vector<int>{76, 150, 29, 255}));
}

TEST(GreyLevels, YbrFullTakesLuma) {
  Synth s;
  s.bits_allocated = 8;
  s.bits_stored = 8;
  s.high_bit = 7;
  s.samples_per_pixel = 3;
  s.photometric = "YBR_FULL";
  s.bytes = {10, 128, 128, 20, 0, 255, 30, 255, 0, 40, 1, 2};
  EXPECT_EQ(grey_of(s), (std::vector<int>{10, 20, 30, 40}));
  s.photometric = "YBR_FULL_422";  // Y1 Y2 Cb Cr per pair of pixels
  s.bytes = {10, 20, 128, 128, 30, 40, 0, 255};
  EXPECT_EQ(grey_of(s), (std::vector<int>{10, 20, 30, 40}));
}

TEST(GreyLevels, DescriptionNamesTheRulesApplied) {
  Synth s;
  s.words = {0, 100, 200, 300};
  s.photometric = "MONOCHROME1";
  s.edit = [](DcmDataset* ds) { set_window(ds, "200", "401"); };
  ASSERT_OK_AND_ASSIGN(const DicomImage image, read_dicom_image(synth(s), "x.dcm"));
  EXPECT_EQ(image.grey_levels, "rescale 1*s+0; window C=200 W=401 LINEAR; inverted (MONOCHROME1)");
}

// ---------------------------------------------------------------------------------------------------------
// View classification (dicom.h, "View classification")

struct ViewCase {
  const char* name;
  std::function<void(DcmDataset*)> edit;
  ViewPosition view;
  const char* evidence;
};

void add_view_code(DcmDataset* ds, const char* value, const char* meaning) {
  DcmItem* item = nullptr;
  ds->findOrCreateSequenceItem(DCM_ViewCodeSequence, item, 0);
  item->putAndInsertString(DCM_CodeValue, value);
  item->putAndInsertString(DCM_CodingSchemeDesignator, "SCT");
  item->putAndInsertString(DCM_CodeMeaning, meaning);
}

TEST(DicomView, ClassifiesByTheDocumentedRules) {
  const std::vector<ViewCase> cases = {
      {"ViewPosition PA", [](DcmDataset* ds) { ds->putAndInsertString(DCM_ViewPosition, "PA"); },
       ViewPosition::kPA, "ViewPosition=PA"},
      {"ViewPosition AP wins over text", [](DcmDataset* ds) {
         ds->putAndInsertString(DCM_ViewPosition, "AP");
         ds->putAndInsertString(DCM_SeriesDescription, "CHEST PA");
       },
       ViewPosition::kAP, "ViewPosition=AP"},
      {"ViewPosition LL", [](DcmDataset* ds) { ds->putAndInsertString(DCM_ViewPosition, "LL"); },
       ViewPosition::kLateral, "ViewPosition=LL"},
      {"ViewPosition LATERAL", [](DcmDataset* ds) { ds->putAndInsertString(DCM_ViewPosition, "LATERAL"); },
       ViewPosition::kLateral, "ViewPosition=LATERAL"},
      {"decubitus does not decide", [](DcmDataset* ds) { ds->putAndInsertString(DCM_ViewPosition, "RLD"); },
       ViewPosition::kOther, nullptr},
      {"code R-10214", [](DcmDataset* ds) { add_view_code(ds, "R-10214", "postero-anterior"); }, ViewPosition::kPA,
       "ViewCodeSequence=R-10214 (postero-anterior)"},
      {"code R-10206", [](DcmDataset* ds) { add_view_code(ds, "R-10206", "antero-posterior"); }, ViewPosition::kAP,
       "ViewCodeSequence=R-10206 (antero-posterior)"},
      {"code SCT lateral", [](DcmDataset* ds) { add_view_code(ds, "399067008", "lateral"); },
       ViewPosition::kLateral, "ViewCodeSequence=399067008 (lateral)"},
      {"code R-10236", [](DcmDataset* ds) { add_view_code(ds, "R-10236", "left lateral"); }, ViewPosition::kLateral,
       "ViewCodeSequence=R-10236 (left lateral)"},
      {"code meaning only", [](DcmDataset* ds) { add_view_code(ds, "99LOCAL", "Postero-Anterior"); },
       ViewPosition::kPA, "ViewCodeSequence=99LOCAL (Postero-Anterior)"},
      {"oblique meaning does not decide",
       [](DcmDataset* ds) { add_view_code(ds, "99LOCAL", "lateral oblique"); }, ViewPosition::kOther, nullptr},
      {"orientation A\\F", [](DcmDataset* ds) { ds->putAndInsertString(DCM_PatientOrientation, "A\\F"); },
       ViewPosition::kLateral, "PatientOrientation=A\\F"},
      {"orientation L\\F + text AP", [](DcmDataset* ds) {
         ds->putAndInsertString(DCM_PatientOrientation, "L\\F");
         ds->putAndInsertString(DCM_SeriesDescription, "Thorax AP portable");
       },
       ViewPosition::kAP, "PatientOrientation=L\\F, SeriesDescription says AP"},
      {"orientation L\\F alone", [](DcmDataset* ds) { ds->putAndInsertString(DCM_PatientOrientation, "L\\F"); },
       ViewPosition::kPA, "PatientOrientation=L\\F (frontal; AP/PA not stated, PA assumed)"},
      {"orientation frontal beats lateral text", [](DcmDataset* ds) {
         ds->putAndInsertString(DCM_PatientOrientation, "R\\F");
         ds->putAndInsertString(DCM_SeriesDescription, "LAT");
       },
       ViewPosition::kPA, "PatientOrientation=R\\F (frontal; AP/PA not stated, PA assumed)"},
      {"series description", [](DcmDataset* ds) { ds->putAndInsertString(DCM_SeriesDescription, "Chest PA"); },
       ViewPosition::kPA, "SeriesDescription says PA"},
      {"series description lateral",
       [](DcmDataset* ds) { ds->putAndInsertString(DCM_SeriesDescription, "CHEST_LAT"); }, ViewPosition::kLateral,
       "SeriesDescription says LAT"},
      {"protocol name", [](DcmDataset* ds) { ds->putAndInsertString(DCM_ProtocolName, "Thorax lateral"); },
       ViewPosition::kLateral, "ProtocolName says LATERAL"},
      {"ambiguous series, protocol decides", [](DcmDataset* ds) {
         ds->putAndInsertString(DCM_SeriesDescription, "PA and LAT");
         ds->putAndInsertString(DCM_ProtocolName, "RL");
       },
       ViewPosition::kLateral, "ProtocolName says RL"},
      {"word inside another word does not count",
       [](DcmDataset* ds) { ds->putAndInsertString(DCM_SeriesDescription, "PAPER CAPTURE"); }, ViewPosition::kOther,
       nullptr},
      {"laterality is only evidence", [](DcmDataset* ds) {
         ds->putAndInsertString(DCM_ViewPosition, "PA");
         ds->putAndInsertString(DCM_ImageLaterality, "U");
       },
       ViewPosition::kPA, "ViewPosition=PA; ImageLaterality=U"},
      {"nothing", [](DcmDataset*) {}, ViewPosition::kOther, nullptr},
  };
  for (const ViewCase& c : cases) {
    SCOPED_TRACE(c.name);
    Synth s;
    s.words = {1, 2, 3, 4};
    s.edit = c.edit;
    auto info = read_dicom_info(synth(s), "view.dcm");
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(view_name(info->view), std::string(view_name(c.view)));
    if (c.evidence != nullptr) {
      EXPECT_EQ(info->view_evidence, c.evidence);
    }
    EXPECT_FALSE(info->view_evidence.empty());
  }
}

TEST(DicomView, ViewNames) {
  EXPECT_STREQ(view_name(ViewPosition::kPA), "PA");
  EXPECT_STREQ(view_name(ViewPosition::kAP), "AP");
  EXPECT_STREQ(view_name(ViewPosition::kLateral), "LATERAL");
  EXPECT_STREQ(view_name(ViewPosition::kOther), "OTHER");
}

TEST(DicomInfo, StructuredReportIsNotAnImage) {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, UID_BasicTextSRStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, kSopInstanceUid);
  ds->putAndInsertString(DCM_Modality, "SR");
  ASSERT_OK_AND_ASSIGN(const InstanceInfo info, read_dicom_info(serialise(&file, EXS_LittleEndianExplicit), "sr"));
  EXPECT_FALSE(info.is_image);
  EXPECT_EQ(info.modality, "SR");
  auto image = read_dicom_image(serialise(&file, EXS_LittleEndianExplicit), "sr");
  EXPECT_FALSE(image.ok());
}

// ---------------------------------------------------------------------------------------------------------
// Bad input: a clear error naming the instance and the reason; never patient identifiers.

void expect_error(const absl::Status& status, absl::StatusCode code, const std::string& names,
                  const std::string& reason) {
  EXPECT_EQ(status.code(), code) << status;
  const std::string message(status.message());
  EXPECT_NE(message.find(names), std::string::npos) << message;
  EXPECT_NE(message.find(reason), std::string::npos) << message;
  EXPECT_EQ(message.find("Doe"), std::string::npos) << message;
  EXPECT_EQ(message.find("Jane"), std::string::npos) << message;
  EXPECT_EQ(message.find(kPatientId), std::string::npos) << message;
}

absl::Status image_error(const std::string& bytes, const std::string& source = "bad.dcm",
                         const DicomReadOptions& options = {}) {
  auto image = read_dicom_image(bytes, source, options);
  if (image.ok()) return absl::OkStatus();
  return image.status();
}

TEST(DicomBadInput, NotDicom) {
  expect_error(image_error("hello, this is a text file and not a DICOM instance at all", "notes.txt"),
               absl::StatusCode::kInvalidArgument, "notes.txt", "not a DICOM file");
  expect_error(image_error("", "empty.dcm"), absl::StatusCode::kInvalidArgument, "empty.dcm", "not a DICOM file");
  expect_error(read_dicom_info(std::string(200, '\0'), "zeros.dcm").status(), absl::StatusCode::kInvalidArgument,
               "zeros.dcm", "not a DICOM file");
}

TEST(DicomBadInput, MissingFileOrADirectory) {
  auto image = read_dicom_file("/nonexistent/cmn/none.dcm");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(image.status().message().find("none.dcm"), std::string::npos);
  image = read_dicom_file(::testing::TempDir());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(image.status().message().find("not a regular file"), std::string::npos);
}

TEST(DicomBadInput, TruncatedFile) {
  const std::string whole = synth(ramp_image());
  // Inside the Pixel Data value, and inside the dataset's header elements.
  expect_error(image_error(whole.substr(0, whole.size() - 7)), absl::StatusCode::kInvalidArgument, kSopInstanceUid,
               "truncated");
  expect_error(image_error(whole.substr(0, 400)), absl::StatusCode::kInvalidArgument, "bad.dcm", "truncated");
  const std::string chest = slurp(data_path("chest/gdcm-CR-MONO1-10-chest_explicitLE.dcm"));
  expect_error(image_error(chest.substr(0, chest.size() / 2), "chest.dcm"), absl::StatusCode::kInvalidArgument,
               "chest.dcm", "truncated");
}

TEST(DicomBadInput, MissingPixelData) {
  Synth s = ramp_image();
  s.with_pixel_data = false;
  expect_error(image_error(synth(s)), absl::StatusCode::kInvalidArgument, kSopInstanceUid, "no Pixel Data");
}

TEST(DicomBadInput, ShortPixelData) {
  Synth s = ramp_image();
  s.rows = 4;  // needs 4 x 5 x 2 = 40 bytes, has 30
  expect_error(image_error(synth(s)), absl::StatusCode::kInvalidArgument, kSopInstanceUid,
               "Pixel Data (7FE0,0010) is short: 30 bytes, frame 1 needs 40");
}

TEST(DicomBadInput, ZeroDimensions) {
  Synth s = ramp_image();
  s.rows = 0;
  expect_error(image_error(synth(s)), absl::StatusCode::kInvalidArgument, kSopInstanceUid, "zero image dimension");
}

TEST(DicomBadInput, TwoHundredMegapixelsExceedTheDefaultLimit) {
  Synth s = ramp_image();
  s.rows = 20000;
  s.columns = 10000;
  expect_error(image_error(synth(s)), absl::StatusCode::kInvalidArgument, kSopInstanceUid,
               "10000 x 20000 = 200000000 pixels exceeds the limits");
}

TEST(DicomBadInput, LimitsAreConfigurable) {
  DicomReadOptions options;
  options.max_pixels = 14;  // the ramp has 15
  expect_error(image_error(synth(ramp_image()), "bad.dcm", options), absl::StatusCode::kInvalidArgument,
               kSopInstanceUid, "exceeds the limits");
  options = {};
  options.max_dimension = 4;  // 5 columns
  expect_error(image_error(synth(ramp_image()), "bad.dcm", options), absl::StatusCode::kInvalidArgument,
               kSopInstanceUid, "exceeds the limits");
}

TEST(DicomBadInput, UnsupportedTransferSyntax) {
  auto file = build(ramp_image());
  auto* sequence = new DcmPixelSequence(DCM_PixelSequenceTag);
  sequence->insert(new DcmPixelItem(DCM_PixelItemTag));
  auto* fragment = new DcmPixelItem(DCM_PixelItemTag);
  const Uint8 mpeg[4] = {0x00, 0x00, 0x01, 0xB3};
  fragment->putUint8Array(mpeg, sizeof mpeg);
  sequence->insert(fragment);
  auto* pixel_data = new DcmPixelData(DCM_PixelData);
  pixel_data->putOriginalRepresentation(EXS_MPEG2MainProfileAtMainLevel, nullptr, sequence);
  file->getDataset()->insert(pixel_data, /*replaceOld=*/true);
  expect_error(image_error(serialise(file.get(), EXS_MPEG2MainProfileAtMainLevel)),
               absl::StatusCode::kUnimplemented, kSopInstanceUid,
               "unsupported transfer syntax 1.2.840.10008.1.2.4.100");
}

// Overwrites `count` bytes at the first occurrence of `marker` after the Pixel Data tag.
std::string corrupt_after_pixel_data(std::string bytes, const std::string& marker, size_t count) {
  const size_t pixel_tag = bytes.rfind(std::string("\xE0\x7F\x10\x00", 4));
  EXPECT_NE(pixel_tag, std::string::npos);
  const size_t at = bytes.find(marker, pixel_tag);
  EXPECT_NE(at, std::string::npos);
  for (size_t i = 0; i < count && at + i < bytes.size(); ++i) bytes[at + i] = '\x11';
  return bytes;
}

TEST(DicomBadInput, CorruptCompressedStreams) {
  SCOPED_TRACE("JPEG baseline");  // SOI and the first marker segments destroyed
  const std::string jpeg = corrupt_after_pixel_data(
      slurp(data_path("chest/CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm")), "\xFF\xD8\xFF", 40);
  const absl::Status jpeg_error = image_error(jpeg, "jpeg.dcm");
  expect_error(jpeg_error, absl::StatusCode::kInvalidArgument, "jpeg.dcm", "corrupt compressed stream");
  EXPECT_NE(jpeg_error.message().find("JPEG Baseline"), std::string::npos) << jpeg_error;
  SCOPED_TRACE("JPEG-LS");  // SOI + SOF55 destroyed
  expect_error(image_error(corrupt_after_pixel_data(slurp(data_path("other_radiographs/RG2_JLSL.dcm")),
                                                    "\xFF\xD8\xFF", 24),
                           "jls.dcm"),
               absl::StatusCode::kInvalidArgument, "jls.dcm", "corrupt compressed stream");
  SCOPED_TRACE("JPEG 2000");  // SIZ marker segment destroyed; then the codestream cut in half
  expect_error(image_error(corrupt_after_pixel_data(slurp(data_path("other_radiographs/RG2_J2KR.dcm")),
                                                    "\xFF\x4F\xFF\x51", 30),
                           "j2k.dcm"),
               absl::StatusCode::kInvalidArgument, "j2k.dcm", "JPEG 2000");
  DcmFileFormat j2k;
  ASSERT_TRUE(j2k.loadFile(data_path("other_radiographs/RG3_J2KR.dcm").c_str()).good());
  const std::string codestream = encapsulated_bytes(&j2k);
  set_fragments(&j2k, EXS_JPEG2000LosslessOnly, {codestream.substr(0, codestream.size() / 2)}, false);
  expect_error(image_error(serialise(&j2k, EXS_JPEG2000LosslessOnly), "j2k-cut.dcm"),
               absl::StatusCode::kInvalidArgument, "j2k-cut.dcm", "corrupt JPEG 2000 stream");
  SCOPED_TRACE("RLE");  // segment offsets header destroyed
  std::string rle = slurp(data_path("other_radiographs/RG2_RLE.dcm"));
  const size_t pixel_tag = rle.rfind(std::string("\xE0\x7F\x10\x00", 4));
  ASSERT_NE(pixel_tag, std::string::npos);
  // Pixel Data tag, VR, reserved, undefined length (12), BOT item (8 + length), first fragment item header (8).
  size_t bot_length = 0;
  std::memcpy(&bot_length, rle.data() + pixel_tag + 16, 4);
  const size_t header = pixel_tag + 12 + 8 + bot_length + 8;
  for (size_t i = header; i < header + 64; ++i) rle[i] = '\xFF';
  expect_error(image_error(rle, "rle.dcm"), absl::StatusCode::kInvalidArgument, "rle.dcm",
               "corrupt compressed stream");
}

TEST(DicomBadInput, BitsStoredAboveBitsAllocated) {
  Synth s;
  s.bits_allocated = 8;
  s.bits_stored = 12;
  s.high_bit = 11;
  s.bytes = {1, 2, 3, 4};
  expect_error(image_error(synth(s)), absl::StatusCode::kInvalidArgument, kSopInstanceUid,
               "inconsistent bits: Bits Stored 12 with Bits Allocated 8");
}

TEST(DicomBadInput, HighBitOutsideTheAllocatedBits) {
  Synth s = ramp_image();
  s.high_bit = 16;
  expect_error(image_error(synth(s)), absl::StatusCode::kInvalidArgument, kSopInstanceUid,
               "inconsistent bits: High Bit 16");
}

TEST(DicomBadInput, PhotometricInconsistentWithSamples) {
  Synth s = ramp_image();
  s.photometric = "RGB";  // one sample per pixel
  expect_error(image_error(synth(s)), absl::StatusCode::kInvalidArgument, kSopInstanceUid,
               "inconsistent photometric: RGB with 1 samples per pixel");
}

TEST(DicomBadInput, UnsupportedPixelFormats) {
  Synth s = ramp_image();
  s.photometric = "PALETTE COLOR";
  expect_error(image_error(synth(s)), absl::StatusCode::kUnimplemented, kSopInstanceUid, "PALETTE COLOR");
  Synth wide;
  wide.bits_allocated = 32;
  wide.bits_stored = 32;
  wide.high_bit = 31;
  wide.words = {1, 2, 3, 4, 5, 6, 7, 8};
  expect_error(image_error(synth(wide)), absl::StatusCode::kUnimplemented, kSopInstanceUid, "Bits Allocated 32");
}

TEST(DicomBadInput, UnusableModalityLut) {
  Synth s = ramp_image();
  s.edit = [](DcmDataset* ds) {
    DcmItem* item = nullptr;
    ds->findOrCreateSequenceItem(DCM_ModalityLUTSequence, item, 0);
    const Uint16 descriptor[3] = {100, 0, 16};  // 100 entries announced, 2 given
    item->putAndInsertUint16Array(DCM_LUTDescriptor, descriptor, 3);
    const Uint16 data[2] = {0, 1};
    item->putAndInsertUint16Array(DCM_LUTData, data, 2);
  };
  expect_error(image_error(synth(s)), absl::StatusCode::kInvalidArgument, kSopInstanceUid,
               "unusable Modality LUT Sequence: LUT Data has 2 entries, the LUT Descriptor says 100");
}

TEST(DicomBadInput, MalformedVoiLutFallsBackToThePercentileWindow) {
  Synth s;
  s.words = {50, 100, 150, 200};
  s.edit = [](DcmDataset* ds) {
    DcmItem* item = nullptr;
    ds->findOrCreateSequenceItem(DCM_VOILUTSequence, item, 0);
    const Uint16 descriptor[3] = {100, 0, 16};
    item->putAndInsertUint16Array(DCM_LUTDescriptor, descriptor, 3);
    const Uint16 data[2] = {0, 1};
    item->putAndInsertUint16Array(DCM_LUTData, data, 2);
  };
  ASSERT_OK_AND_ASSIGN(const DicomImage image, read_dicom_image(synth(s), "x.dcm"));
  EXPECT_EQ(grey_values(image.grey8), (std::vector<int>{0, 85, 170, 255}));
  EXPECT_NE(image.grey_levels.find("VOI LUT Sequence ignored"), std::string::npos) << image.grey_levels;
}

// --- Found by cmn-dicom-fuzzer (and its follow-up): resource exhaustion through DCMTK. ---

// Little-endian helpers to hand-craft datasets.
std::string le16(uint16_t v) { return std::string{static_cast<char>(v & 0xFF), static_cast<char>(v >> 8)}; }
std::string le32(uint32_t v) { return le16(static_cast<uint16_t>(v & 0xFFFF)) + le16(static_cast<uint16_t>(v >> 16)); }
std::string explicit_element(uint16_t group, uint16_t element, const char* vr, const std::string& value) {
  return le16(group) + le16(element) + vr + le16(static_cast<uint16_t>(value.size())) + value;
}
std::string part10(const std::string& dataset, const std::string& transfer_syntax = "1.2.840.10008.1.2.1") {
  std::string uid = transfer_syntax;
  if (uid.size() % 2) uid.push_back('\0');
  const std::string ts = explicit_element(0x0002, 0x0010, "UI", uid);
  return std::string(128, '\0') + "DICM" + explicit_element(0x0002, 0x0000, "UL", le32(ts.size())) + ts + dataset;
}

// A few bytes claiming a 4 GB element: DCMTK allocated the declared length before reading (out of memory
// under the fuzzer's 2 GB limit). Run with the address space capped 1 GB above what the process uses now:
// an attempt to allocate the declared length fails there, and the reason would no longer be "truncated".
// Exits 0 when decoding `bytes` fails as "truncated" with the address space capped 1 GB above current use.
[[noreturn]] void decode_with_capped_address_space(const std::string& bytes) {
  std::ifstream statm("/proc/self/statm");
  long pages = 0;
  statm >> pages;
  const rlim_t limit = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) + (1UL << 30);
  rlimit cap;
  cap.rlim_cur = limit;
  cap.rlim_max = limit;
  setrlimit(RLIMIT_AS, &cap);
  const absl::Status status = image_error(bytes);
  std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
  std::exit(status.message().find("truncated") != absl::string_view::npos ? 0 : 1);
}

TEST(DicomBadInputDeathTest, ElementLongerThanTheDataAllocatesNothing) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string bytes =
      synth(ramp_image()) + le16(0x0011) + le16(0x1010) + "OB" + std::string(2, '\0') + le32(0xFFFFFFF0u) + "abcd";
  EXPECT_EXIT(decode_with_capped_address_space(bytes), ::testing::ExitedWithCode(0), "");
}

std::string nested_sequences(int depth) {
  std::string dataset = explicit_element(0x0008, 0x0016, "UI", std::string("1.2.840.10008.5.1.4.1.1.1") + '\0') +
                        explicit_element(0x0008, 0x0018, "UI", std::string(kSopInstanceUid) + '\0');
  const std::string open = le16(0x0040) + le16(0xA730) + "SQ" + std::string(2, '\0') + le32(0xFFFFFFFFu) +
                           le16(0xFFFE) + le16(0xE000) + le32(0xFFFFFFFFu);
  const std::string close = le16(0xFFFE) + le16(0xE00D) + le32(0) + le16(0xFFFE) + le16(0xE0DD) + le32(0);
  for (int i = 0; i < depth; ++i) dataset += open;
  for (int i = 0; i < depth; ++i) dataset += close;
  return part10(dataset);
}

// DCMTK parses nested sequences recursively: 20000 levels (720 KB) overflowed the stack.
TEST(DicomBadInput, DeeplyNestedSequencesAreRefusedBeforeParsing) {
  EXPECT_TRUE(read_dicom_info(nested_sequences(30), "deep.dcm").ok());
  for (const int depth : {65, 20000}) {
    expect_error(read_dicom_info(nested_sequences(depth), "deep.dcm").status(), absl::StatusCode::kInvalidArgument,
                 "deep.dcm", "sequences nest deeper than 64 levels");
  }
  DicomReadOptions options;
  options.max_sequence_depth = 10;
  expect_error(read_dicom_info(nested_sequences(30), "deep.dcm", options).status(),
               absl::StatusCode::kInvalidArgument, "deep.dcm", "sequences nest deeper than 10 levels");
}

// A deflated dataset is inflated by cmn with a cap (DCMTK would allocate each element's declared length
// while inflating).
TEST(DicomBadInput, DeflatedDatasetInflatingBeyondTheLimitIsRefused) {
  auto file = build(ramp_image());
  const std::string deflated = serialise(file.get(), EXS_DeflatedLittleEndianExplicit);
  ASSERT_TRUE(read_dicom_image(deflated, "ok.dcm").ok());
  DicomReadOptions options;
  options.max_inflated_bytes = 200;
  expect_error(image_error(deflated, "deflated.dcm", options), absl::StatusCode::kInvalidArgument, "deflated.dcm",
               "inflates beyond the limit of 200 bytes");
  std::string corrupt = deflated;
  for (size_t i = corrupt.size() - 40; i < corrupt.size(); ++i) corrupt[i] = '\xFF';
  expect_error(image_error(corrupt, "deflated.dcm"), absl::StatusCode::kInvalidArgument, "deflated.dcm",
               "deflated dataset");
}

// cmn-dicom-fuzzer: a stray element inside the File Meta Information hid the deflated transfer syntax from a
// first, simpler meta scan of ours; DCMTK then inflated the dataset itself, without cmn's cap. The cap must
// hold whatever the meta header looks like.
TEST(DicomBadInput, DeflatedDatasetIsAlwaysInflatedUnderTheCap) {
  Synth s = ramp_image();
  s.edit = [](DcmDataset* ds) {
    const std::vector<Uint8> zeros(2 << 20, 0);  // 2 MB, deflates to a few KB
    ds->putAndInsertUint8Array(DcmTag(0x0011, 0x1010, EVR_OB), zeros.data(), zeros.size());
  };
  auto file = build(s);
  const std::string deflated = serialise(file.get(), EXS_DeflatedLittleEndianExplicit);
  uint32_t group_length = 0;
  std::memcpy(&group_length, deflated.data() + 132 + 8, 4);
  const std::string dataset = deflated.substr(132 + 12 + group_length);
  const std::string stray = explicit_element(0x0000, 0x0003, "UI", std::string("1.2.3") + '\0');
  const std::string ts = explicit_element(0x0002, 0x0010, "UI", std::string("1.2.840.10008.1.2.1.99") + '\0');
  const std::string crafted = std::string(128, '\0') + "DICM" +
                              explicit_element(0x0002, 0x0000, "UL", le32(stray.size() + ts.size())) + stray + ts +
                              dataset;
  ASSERT_TRUE(read_dicom_info(crafted, "crafted.dcm").ok());
  DicomReadOptions options;
  options.max_inflated_bytes = 1 << 20;
  expect_error(read_dicom_info(crafted, "crafted.dcm", options).status(), absl::StatusCode::kInvalidArgument,
               "crafted.dcm", "inflates beyond the limit of 1048576 bytes");
}

// cmn-dicom-fuzzer: DCMTK 3.6.7 loops forever scanning a JPEG fragment for its bit depth when it meets a TEM
// marker (FF01) before the frame header. Run in a child with a 20 s alarm: a hang fails instead of blocking.
[[noreturn]] void decode_with_alarm(const std::string& bytes, const std::string& expected_reason) {
  alarm(20);
  const absl::Status status = image_error(bytes, "tem.dcm");
  std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
  std::exit(status.message().find(expected_reason) != absl::string_view::npos ? 0 : 1);
}

TEST(DicomBadInputDeathTest, JpegTemMarkerBeforeTheFrameHeaderDoesNotHang) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::string bytes = slurp(data_path("chest/CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm"));
  const size_t pixel_tag = bytes.rfind(std::string("\xE0\x7F\x10\x00", 4));
  ASSERT_NE(pixel_tag, std::string::npos);
  const size_t soi = bytes.find("\xFF\xD8\xFF", pixel_tag);
  ASSERT_NE(soi, std::string::npos);
  bytes[soi + 3] = '\x01';  // the marker after SOI becomes TEM
  EXPECT_EXIT(decode_with_alarm(bytes, "JPEG marker FF01 (TEM) before the frame header"),
              ::testing::ExitedWithCode(0), "");
}

TEST(DicomBadInput, NoMessageCarriesPatientIdentifiers) {
  // Every synthetic failure above already checks this through expect_error; here the full set of patient
  // attributes is present and the failure comes from the deepest layer (the grey-level policy).
  Synth s = ramp_image();
  s.edit = [](DcmDataset* ds) {
    ds->putAndInsertString(DCM_PatientBirthDate, "19700101");
    ds->putAndInsertString(DCM_PatientAddress, "OTHER-ID-777");
    ds->putAndInsertString(DCM_RescaleSlope, "0");
  };
  const absl::Status status = image_error(synth(s));
  expect_error(status, absl::StatusCode::kInvalidArgument, kSopInstanceUid, "Rescale Slope");
  EXPECT_EQ(status.message().find("19700101"), std::string::npos);
  EXPECT_EQ(status.message().find("OTHER-ID-777"), std::string::npos);
}

}  // namespace
}  // namespace cmn::preprocessing
