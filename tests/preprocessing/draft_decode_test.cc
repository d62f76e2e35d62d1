// Draft DICOM decoding (issue 15, DicomReadOptions::draft_min_side): JPEG 2000 at the coarsest resolution level
// whose short side still covers the model input, 8-bit JPEG with libjpeg-turbo's DCT scaling, everything else
// decoded exactly. Real files from ../shared/data/dicom; the exact decode of the same file is the reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <unistd.h>

#include <opencv2/core.hpp>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>

#include "cmn/preprocessing/dicom.h"
#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::preprocessing {
namespace {

namespace fs = std::filesystem;

std::string data_path(const std::string& relative) { return std::string(CMN_SHARED_DIR) + "/data/dicom/" + relative; }

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

DicomReadOptions draft(int min_side) {
  DicomReadOptions options;
  options.draft_min_side = min_side;
  return options;
}

// Mean absolute difference, in 8-bit grey levels, of two grey images after PIL's bilinear resize to the model
// input (224 x 224): what the model would see differently.
double model_input_mae(const cv::Mat& a, const cv::Mat& b) {
  const cv::Mat ra = resize_bilinear_pil(a, 224, 224), rb = resize_bilinear_pil(b, 224, 224);
  return cv::norm(ra, rb, cv::NORM_L1) / static_cast<double>(ra.total());
}

struct DraftCase {
  const char* file;
  int scale;    // the expected denominator per side
  int columns;  // ceil(Columns / scale)
  int rows;     // ceil(Rows / scale)
};

class DraftDecode : public ::testing::TestWithParam<DraftCase> {};

TEST_P(DraftDecode, DecodesTheCoarsestLevelCoveringTheModelInputCloseToTheExactImage) {
  const DraftCase& c = GetParam();
  const std::string bytes = slurp(data_path(c.file));
  absl::StatusOr<DicomImage> exact = read_dicom_image(bytes, c.file);
  ASSERT_TRUE(exact.ok()) << exact.status();
  absl::StatusOr<DicomImage> reduced = read_dicom_image(bytes, c.file, draft(224));
  ASSERT_TRUE(reduced.ok()) << reduced.status();
  EXPECT_EQ(reduced->grey8.cols, c.columns);
  EXPECT_EQ(reduced->grey8.rows, c.rows);
  EXPECT_GE(std::min(reduced->grey8.cols, reduced->grey8.rows), 224);
  EXPECT_NE(reduced->grey_levels.find("draft decode 1/" + std::to_string(c.scale) + " (" + std::to_string(c.columns) +
                                      " x " + std::to_string(c.rows) + ")"),
            std::string::npos)
      << reduced->grey_levels;
  // The same grey-level rules chose the same kind of window (the percentile window is taken over fewer pixels).
  EXPECT_EQ(exact->grey_levels.substr(0, exact->grey_levels.find(';')),
            reduced->grey_levels.substr(0, reduced->grey_levels.find(';')));
  const double mae = model_input_mae(exact->grey8, reduced->grey8);
  std::cout << "[ draft ] " << c.file << ": 1/" << c.scale << ", model-input MAE " << mae << " grey levels\n";
  EXPECT_LT(mae, 2.5) << "the draft image is not the exact image at a lower resolution";
}

INSTANTIATE_TEST_SUITE_P(
    SharedData, DraftDecode,
    ::testing::Values(DraftCase{"chest/RG1_J2KI.dcm", 8, 231, 245},                      // 1841 x 1955, lossy
                      DraftCase{"chest/DX_JPEG2KLossless_1s_1f_u_16_16.dcm", 4, 355, 354},  // 1420 x 1416
                      DraftCase{"other_radiographs/RG2_J2KR.dcm", 4, 440, 535},           // 1760 x 2140: 1/8 is 220
                      DraftCase{"other_radiographs/RG3_J2KI.dcm", 4, 440, 440},           // 1760 x 1760
                      DraftCase{"chest/CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm", 8, 252, 306}),  // 2010 x 2446
    [](const ::testing::TestParamInfo<DraftCase>& info) {
      std::string name = fs::path(info.param.file).stem().string();
      for (char& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
      return name;
    });

// The level is the coarsest whose short side is >= draft_min_side, with the sides rounded up as the codecs do:
// 1841 / 2 -> 921 for JPEG 2000, 2010 / 8 -> 252 for JPEG. One more pixel asked for -> one level finer.
TEST(DraftDecode, TheChosenLevelIsTheCoarsestStillAtLeastTheAskedSide) {
  const std::string j2k = slurp(data_path("chest/RG1_J2KI.dcm"));
  absl::StatusOr<DicomImage> at921 = read_dicom_image(j2k, "RG1_J2KI", draft(921));
  absl::StatusOr<DicomImage> at922 = read_dicom_image(j2k, "RG1_J2KI", draft(922));
  ASSERT_TRUE(at921.ok() && at922.ok());
  EXPECT_EQ(at921->grey8.cols, 921);
  EXPECT_EQ(at921->grey8.rows, 978);
  EXPECT_EQ(at922->grey8.cols, 1841) << "no level between 1/1 and 1/2";
  EXPECT_EQ(at922->grey_levels.find("draft"), std::string::npos) << at922->grey_levels;

  const std::string jpeg = slurp(data_path("chest/CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm"));
  absl::StatusOr<DicomImage> at252 = read_dicom_image(jpeg, "JpegBaseline", draft(252));
  absl::StatusOr<DicomImage> at253 = read_dicom_image(jpeg, "JpegBaseline", draft(253));
  ASSERT_TRUE(at252.ok() && at253.ok());
  EXPECT_EQ(at252->grey8.cols, 252);
  EXPECT_EQ(at253->grey8.cols, 503);  // 1/4
}

// JPEG-LS, 12-bit JPEG (libjpeg-turbo decodes 8-bit here), lossless JPEG, RLE and native pixels have no reduced
// decoding: with draft decoding on they give the exact image, byte for byte.
TEST(DraftDecode, CodecsWithoutReducedDecodingGiveTheExactImage) {
  for (const char* file : {"chest/RG1_JLSN.dcm", "other_radiographs/RG2_JPLY.dcm", "other_radiographs/RG2_JPLL.dcm",
                           "other_radiographs/RG2_RLE.dcm", "chest/NIH-ChestXray14_DX_implicitLE.dcm"}) {
    SCOPED_TRACE(file);
    const std::string bytes = slurp(data_path(file));
    absl::StatusOr<DicomImage> exact = read_dicom_image(bytes, file);
    absl::StatusOr<DicomImage> reduced = read_dicom_image(bytes, file, draft(224));
    ASSERT_TRUE(exact.ok() && reduced.ok());
    ASSERT_EQ(exact->grey8.size(), reduced->grey8.size());
    EXPECT_EQ(cv::norm(exact->grey8, reduced->grey8, cv::NORM_INF), 0.0);
    EXPECT_EQ(exact->grey_levels, reduced->grey_levels);
  }
}

// The JPEG baseline file with its compressed fragment cut in half: libjpeg-turbo warns (premature end of data),
// so the draft path steps aside and the exact decoder's answer (an error, or its image) is the answer.
TEST(DraftDecode, ATruncatedJpegGetsTheExactDecodersAnswer) {
  DcmFileFormat file;
  ASSERT_TRUE(file.loadFile(data_path("chest/CR_Monochrome1-JpegBaseline_orthanc-issue44.dcm").c_str()).good());
  DcmDataset* ds = file.getDataset();
  DcmElement* element = nullptr;
  ASSERT_TRUE(ds->findAndGetElement(DCM_PixelData, element).good());
  auto* pixel_data = dynamic_cast<DcmPixelData*>(element);
  ASSERT_NE(pixel_data, nullptr);
  E_TransferSyntax xfer = EXS_Unknown;
  const DcmRepresentationParameter* param = nullptr;
  pixel_data->getOriginalRepresentationKey(xfer, param);
  DcmPixelSequence* sequence = nullptr;
  ASSERT_TRUE(pixel_data->getEncapsulatedRepresentation(xfer, param, sequence).good());
  DcmPixelItem* fragment = nullptr;
  ASSERT_TRUE(sequence->getItem(fragment, 1).good());
  Uint8* data = nullptr;
  ASSERT_TRUE(fragment->getUint8Array(data).good());
  const Uint32 half = (fragment->getLength() / 2) & ~Uint32{1};
  const std::string kept(reinterpret_cast<const char*>(data), half);
  ASSERT_TRUE(fragment->putUint8Array(reinterpret_cast<const Uint8*>(kept.data()), half).good());
  const std::string path = (fs::temp_directory_path() / ("cmn_draft_truncated_" + std::to_string(::getpid()) + ".dcm")).string();
  ASSERT_TRUE(file.saveFile(path.c_str(), xfer).good());
  const std::string bytes = slurp(path);
  fs::remove(path);

  absl::StatusOr<DicomImage> exact = read_dicom_image(bytes, "truncated");
  absl::StatusOr<DicomImage> reduced = read_dicom_image(bytes, "truncated", draft(224));
  ASSERT_EQ(exact.ok(), reduced.ok()) << (exact.ok() ? reduced.status() : exact.status());
  if (!exact.ok()) {
    EXPECT_EQ(exact.status(), reduced.status());
    return;
  }
  ASSERT_EQ(exact->grey8.size(), reduced->grey8.size()) << reduced->grey_levels;
  EXPECT_EQ(cv::norm(exact->grey8, reduced->grey8, cv::NORM_INF), 0.0);
}

}  // namespace
}  // namespace cmn::preprocessing
