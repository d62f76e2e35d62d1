// Bounded resources (issue 13, item 4): an image whose header declares a huge size is refused before anything
// is allocated for it, in every codec: JPEG and JPEG-LS frame headers, JPEG 2000 SIZ (J2K and JP2), RLE
// segments, and PNG / JPEG files. Each input is a few hundred bytes made here. Each refusal runs in a child
// process (a death test) whose address space is capped 512 MB above what it uses: had the decoder tried to
// allocate the declared size (gigabytes), the allocation would fail there and the status would not be this
// one, or the child would crash. The child exits 0 only for InvalidArgument naming the declared size and the
// limit.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcuid.h>

#include "cmn/preprocessing/dicom.h"
#include "cmn/preprocessing/image_pipeline.h"
#include "common/test_files.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CMN_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define CMN_TEST_ASAN 1
#endif

namespace cmn::preprocessing {
namespace {

constexpr const char* kUid = "1.2.826.0.1.3680043.10.1137.5151";

std::string be16(unsigned v) { return {static_cast<char>(v >> 8), static_cast<char>(v & 0xFF)}; }
std::string be32(uint32_t v) { return be16(v >> 16) + be16(v & 0xFFFF); }
std::string le32(uint32_t v) {
  return {static_cast<char>(v), static_cast<char>(v >> 8), static_cast<char>(v >> 16), static_cast<char>(v >> 24)};
}

// A JPEG / JPEG-LS stream: SOI, a frame header (`marker`: 0xC0 SOF0, 0xF7 SOF55) declaring rows x columns x
// components of 8 bits, EOI.
std::string jpeg_header(unsigned marker, unsigned rows, unsigned columns, unsigned components) {
  std::string sof = std::string(1, '\x08') + be16(rows) + be16(columns) + static_cast<char>(components);
  for (unsigned c = 0; c < components; ++c) sof += std::string{static_cast<char>(c + 1), '\x11', '\0'};
  return "\xFF\xD8\xFF" + std::string(1, static_cast<char>(marker)) + be16(2 + sof.size()) + sof + "\xFF\xD9";
}

// A J2K codestream: SOC, SIZ (image and tiles from 0,0), EOC.
std::string j2k_header(uint32_t width, uint32_t height, uint32_t tile_w, uint32_t tile_h, unsigned components) {
  std::string siz = be16(0) + be32(width) + be32(height) + be32(0) + be32(0) + be32(tile_w) + be32(tile_h) +
                    be32(0) + be32(0) + be16(components);
  for (unsigned c = 0; c < components; ++c) siz += "\x07\x01\x01";
  return "\xFF\x4F\xFF\x51" + be16(2 + siz.size()) + siz + "\xFF\xD9";
}

// The same codestream in a JP2 file: signature box, file type box, codestream box.
std::string jp2_file(const std::string& codestream) {
  const std::string ftyp = std::string("jp2 ") + be32(0) + "jp2 ";
  return be32(12) + "jP  " + "\x0D\x0A\x87\x0A" + be32(8 + ftyp.size()) + "ftyp" + ftyp +
         be32(8 + codestream.size()) + "jp2c" + codestream;
}

// An instance of rows x columns (8 or 16 bits, 1 or 3 samples) whose Pixel Data is `fragments` in `xfer`.
std::string instance(E_TransferSyntax xfer, int rows, int columns, std::vector<std::string> fragments,
                     int bits = 8, int samples = 1) {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, UID_DigitalXRayImageStorageForPresentation);
  ds->putAndInsertString(DCM_SOPInstanceUID, kUid);
  ds->putAndInsertString(DCM_StudyInstanceUID, "1.2.826.0.1.3680043.10.1137.51");
  ds->putAndInsertString(DCM_Modality, "DX");
  ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(rows));
  ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(columns));
  ds->putAndInsertUint16(DCM_BitsAllocated, static_cast<Uint16>(bits));
  ds->putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(bits));
  ds->putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(bits - 1));
  ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  ds->putAndInsertUint16(DCM_SamplesPerPixel, static_cast<Uint16>(samples));
  if (samples == 3) ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
  ds->putAndInsertString(DCM_PhotometricInterpretation, samples == 3 ? "RGB" : "MONOCHROME2");
  auto* sequence = new DcmPixelSequence(DCM_PixelSequenceTag);
  sequence->insert(new DcmPixelItem(DCM_PixelItemTag));  // empty Basic Offset Table
  for (std::string& f : fragments) {
    if (f.size() % 2) f.push_back('\0');
    auto* item = new DcmPixelItem(DCM_PixelItemTag);
    item->putUint8Array(reinterpret_cast<const Uint8*>(f.data()), f.size());
    sequence->insert(item);
  }
  auto* pixel_data = new DcmPixelData(DCM_PixelData);
  pixel_data->putOriginalRepresentation(xfer, nullptr, sequence);
  ds->insert(pixel_data, /*replaceOld=*/true);
  const std::string path = ::testing::TempDir() + "/cmn_declared_size_" + std::to_string(::getpid()) + ".dcm";
  const OFCondition cond = file.saveFile(path.c_str(), xfer);
  EXPECT_TRUE(cond.good()) << cond.text();
  std::string bytes = testing::read_bytes(path);
  std::remove(path.c_str());
  return bytes;
}

// One input that must be refused: how to decode it, and what the message must contain.
struct Refusal {
  std::function<absl::Status()> decode;
  std::vector<std::string> expected;
};

// Runs every case with the address space capped 512 MB above current use and a 60 s alarm (against a hang);
// exits 0 when each fails with InvalidArgument and a message containing all of its `expected`, else with the
// number of the first case that does not.
[[noreturn]] void refused_under_cap(const std::vector<Refusal>& cases) {
#ifndef CMN_TEST_ASAN  // AddressSanitizer reserves terabytes of address space: no cap under it
  std::ifstream statm("/proc/self/statm");
  long pages = 0;
  statm >> pages;
  const rlim_t limit = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) + (512UL << 20);
  rlimit cap{limit, limit};
  setrlimit(RLIMIT_AS, &cap);
#endif
  alarm(60);
  for (size_t i = 0; i < cases.size(); ++i) {
    const absl::Status status = cases[i].decode();
    std::fprintf(stderr, "case %zu: %s\n", i + 1, status.ToString().c_str());
    bool ok = status.code() == absl::StatusCode::kInvalidArgument;
    for (const std::string& e : cases[i].expected) ok = ok && status.message().find(e) != absl::string_view::npos;
    if (!ok) std::exit(static_cast<int>(i + 1));
  }
  std::exit(0);
}

#define EXPECT_ALL_REFUSED(cases)                         \
  GTEST_FLAG_SET(death_test_style, "threadsafe");         \
  EXPECT_EXIT(refused_under_cap(cases), ::testing::ExitedWithCode(0), "")

absl::Status dicom_status(const std::string& bytes, const DicomReadOptions& options = {}) {
  auto image = read_dicom_image(bytes, "huge.dcm", options);
  return image.ok() ? absl::OkStatus() : image.status();
}

Refusal dicom(const std::string& bytes, std::vector<std::string> expected, const DicomReadOptions& options = {}) {
  expected.push_back(kUid);  // the instance is named, as in every DICOM error
  return {[bytes, options] { return dicom_status(bytes, options); }, std::move(expected)};
}

constexpr const char* kDefaultLimits = "exceeds the limits (100000000 pixels, 65535 per side)";

TEST(DeclaredSizeDeathTest, JpegFrameHeader) {
  const std::string bytes = instance(EXS_JPEGProcess1, 8, 8, {jpeg_header(0xC0, 65535, 65535, 1)});
  EXPECT_LT(bytes.size(), 1000u);
  // The frame header split over two fragments is still found (frame 1 is read across its fragments).
  const std::string header = jpeg_header(0xC0, 30000, 20000, 1);
  // The one limit is the configured one.
  DicomReadOptions options;
  options.max_pixels = 1000;
  EXPECT_ALL_REFUSED(std::vector<Refusal>({
      dicom(bytes, {"JPEG frame header (SOF0): image of 65535 x 65535 = 4294836225 pixels", kDefaultLimits}),
      dicom(instance(EXS_JPEGProcess1, 8, 8, {header.substr(0, 6), header.substr(6)}),
            {"JPEG frame header (SOF0): image of 20000 x 30000 = 600000000 pixels", kDefaultLimits}),
      dicom(instance(EXS_JPEGProcess1, 8, 8, {jpeg_header(0xC0, 40, 30, 1)}),
            {"JPEG frame header (SOF0): image of 30 x 40 = 1200 pixels exceeds the limits (1000 pixels"}, options),
  }));
}

TEST(DeclaredSizeDeathTest, JpegLsFrameHeader) {
  EXPECT_ALL_REFUSED(std::vector<Refusal>({
      dicom(instance(EXS_JPEGLSLossless, 8, 8, {jpeg_header(0xF7, 65535, 65535, 1)}),
            {"JPEG frame header (SOF55): image of 65535 x 65535 = 4294836225 pixels", kDefaultLimits}),
      dicom(instance(EXS_JPEGLSLossless, 8, 8, {jpeg_header(0xF7, 8, 8, 200)}),
            {"JPEG frame header (SOF55): 200 components (at most 4 are decoded)"}),
  }));
}

TEST(DeclaredSizeDeathTest, Jpeg2000Siz) {
  const std::string codestream = j2k_header(100000, 100000, 100000, 100000, 1);
  const std::string expected = "JPEG 2000 codestream (SIZ): image of 100000 x 100000 = 10000000000 pixels";
  EXPECT_ALL_REFUSED(std::vector<Refusal>({
      dicom(instance(EXS_JPEG2000LosslessOnly, 8, 8, {codestream}), {expected, kDefaultLimits}),
      dicom(instance(EXS_JPEG2000, 8, 8, {jp2_file(codestream)}), {expected, kDefaultLimits}),
      // A size within the limits but 65025 tiles of one pixel: OpenJPEG allocates per tile and component
      // while reading the header (hundreds of MB here).
      dicom(instance(EXS_JPEG2000LosslessOnly, 255, 255, {j2k_header(255, 255, 1, 1, 1)}),
            {"JPEG 2000 codestream (SIZ): 65025 tiles exceed the limit of 4096"}),
      // Components beyond the dataset's: refused before OpenJPEG allocates a structure per component and tile.
      dicom(instance(EXS_JPEG2000LosslessOnly, 8, 8, {j2k_header(8, 8, 8, 8, 16384)}),
            {"JPEG 2000 codestream is 8 x 8 x 16384, the dataset says 8 x 8 x 1"}),
  }));
}

TEST(DeclaredSizeDeathTest, RleSegments) {
  const std::string one_segment = le32(1) + le32(64) + std::string(56, '\0') + "\x81\x00";  // 128 zeros
  DicomReadOptions raised;
  raised.max_pixels = int64_t{1} << 33;
  const std::string beyond = le32(1) + le32(0x40000000) + std::string(56, '\0') + "\x81\x00";
  EXPECT_ALL_REFUSED(std::vector<Refusal>({
      // Rows x Columns over the limit: refused from the dataset, before the RLE header is looked at.
      dicom(instance(EXS_RLELossless, 65535, 65535, {one_segment}),
            {"image of 65535 x 65535 = 4294836225 pixels", kDefaultLimits}),
      // Within raised limits, 2 bytes of RLE data cannot decode to 4294836225 bytes: refused before the frame
      // buffer (4 GB) is allocated.
      dicom(instance(EXS_RLELossless, 65535, 65535, {one_segment}),
            {"corrupt compressed stream: RLE segment 1 has 2 bytes, too few to decode to the 4294836225 bytes the "
             "image declares (at least 67106818)"},
            raised),
      // Segment count, offsets, header.
      dicom(instance(EXS_RLELossless, 8, 8, {one_segment}, 16),
            {"corrupt compressed stream: the RLE header declares 1 segments, the image has 2"}),
      dicom(instance(EXS_RLELossless, 8, 8, {beyond}),
            {"corrupt compressed stream: RLE segment 1 spans bytes 1073741824 to 66 of 66"}),
      dicom(instance(EXS_RLELossless, 8, 8, {std::string(20, '\0')}),
            {"corrupt compressed stream: the RLE fragment has 20 bytes, less than its 64-byte header"}),
  }));
}

// A PNG: signature, IHDR (8-bit RGB, CRC included), a few bytes of IDAT, IEND.
std::string png_header(uint32_t width, uint32_t height) {
  auto crc32 = [](const std::string& bytes) {
    uint32_t crc = 0xFFFFFFFFu;
    for (const char ch : bytes) {
      crc ^= static_cast<uint8_t>(ch);
      for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
  };
  auto chunk = [&](const std::string& type, const std::string& data) {
    return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc32(type + data));
  };
  const std::string ihdr = be32(width) + be32(height) + std::string("\x08\x02\x00\x00\x00", 5);
  return "\x89PNG\r\n\x1A\n" + chunk("IHDR", ihdr) + chunk("IDAT", std::string("\x78\x9C\x03\x00\x00\x00\x00\x01", 8)) +
         chunk("IEND", "");
}

// An image file of `bytes` read with `read(path)`; the file is written and removed by the decode itself (in
// the death-test child), and the message must name it.
Refusal image_file(const std::string& name, const std::string& bytes,
                   std::function<absl::Status(const std::string&)> read, std::vector<std::string> expected) {
  const std::string path = ::testing::TempDir() + "/cmn_declared_size_" + std::to_string(::getpid()) + "_" + name;
  expected.push_back("image '" + path + "'");
  return {[path, bytes, read] {
            testing::write_bytes(path, bytes);
            const absl::Status status = read(path);
            std::remove(path.c_str());
            return status;
          },
          std::move(expected)};
}

absl::Status rgb8_status(const std::string& path) {
  auto rgb = read_rgb8(path);
  return rgb.ok() ? absl::OkStatus() : rgb.status();
}

// OpenCV's own cap (2^30 pixels) lets a 400-megapixel PNG or JPEG through to a 1.2 GB allocation.
TEST(DeclaredSizeDeathTest, PngAndJpegFiles) {
  EXPECT_LT(png_header(20000, 20000).size(), 100u);
  // ImageOptions::limits reaches the file reader through load_model_input.
  ImageOptions options;
  options.limits.max_pixels = 99;
  auto model_input_status = [options](const std::string& path) {
    auto image = load_model_input(path, options);
    return image.ok() ? absl::OkStatus() : image.status();
  };
  EXPECT_ALL_REFUSED(std::vector<Refusal>({
      image_file("huge.png", png_header(20000, 20000), rgb8_status,
                 {"PNG header (IHDR): image of 20000 x 20000 = 400000000 pixels", kDefaultLimits}),
      image_file("huge.jpg", jpeg_header(0xC0, 20000, 20000, 3), rgb8_status,
                 {"JPEG frame header (SOF0): image of 20000 x 20000 = 400000000 pixels", kDefaultLimits}),
      image_file("small.png", png_header(10, 10), model_input_status,
                 {"PNG header (IHDR): image of 10 x 10 = 100 pixels exceeds the limits (99 pixels"}),
  }));
}

// Sizes within the limits pass the header checks: the decoder runs and says what is wrong with the data.
TEST(DeclaredSize, WithinTheLimitsReachesTheDecoder) {
  const absl::Status jpeg = dicom_status(instance(EXS_JPEGProcess1, 8, 8, {jpeg_header(0xC0, 8, 8, 1)}));
  EXPECT_EQ(jpeg.code(), absl::StatusCode::kInvalidArgument) << jpeg;
  EXPECT_NE(jpeg.message().find("cannot decode frame 1"), absl::string_view::npos) << jpeg;
  const absl::Status j2k = dicom_status(instance(EXS_JPEG2000LosslessOnly, 8, 8, {j2k_header(8, 8, 8, 8, 1)}));
  EXPECT_EQ(j2k.code(), absl::StatusCode::kInvalidArgument) << j2k;
  EXPECT_NE(j2k.message().find("corrupt JPEG 2000"), absl::string_view::npos) << j2k;
  EXPECT_EQ(j2k.message().find("exceeds the limits"), absl::string_view::npos) << j2k;
}

}  // namespace
}  // namespace cmn::preprocessing
