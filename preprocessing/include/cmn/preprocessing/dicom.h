#pragma once
// DICOM instances -> the 8-bit grey images cmn feeds the model, and studies -> the model's N view slots.
// DCMTK is used only inside preprocessing/src (the DICOM layer; ../../../README.md lists its files); no DCMTK
// type appears in this header.
//
// Grey-level policy (one code path for every instance; see read_dicom_image):
//   stored values (bits allocated/stored/high bit, signed or not) -> Modality LUT (Rescale Slope/Intercept or
//   Modality LUT Sequence) -> VOI LUT (Window Center/Width with VOI LUT Function LINEAR / LINEAR_EXACT /
//   SIGMOID, or a VOI LUT Sequence; without any, the documented percentile window of DicomReadOptions) ->
//   8 bits -> MONOCHROME1 inverted (and Presentation LUT Shape INVERSE honoured) so that bone is bright ->
//   then the same resize/normalise as PNG input (image_pipeline.h). Pixel Padding Value(s) are excluded from
//   windowing statistics. Multi-frame: frame 1. RGB/YBR: converted to grey.
//
// The policy in detail (src/grey_levels.cc implements it; every rule has a test in dicom_test.cc):
//  1. Stored value s of a sample: (word >> (HighBit + 1 - BitsStored)) & (2^BitsStored - 1), sign-extended
//     from BitsStored bits when Pixel Representation is 1. Bits Allocated 8 or 16, Bits Stored <= 16.
//  2. Modality value m: a Modality LUT Sequence (0028,3000) item wins: m = LUTData[clamp(s - first, 0, n-1)].
//     Otherwise m = RescaleSlope * s + RescaleIntercept (1 and 0 when absent).
//  3. VOI, output y in [0, 255] (ymin = 0, ymax = 255 in PS3.3 C.11.2.1.2), first that applies:
//     a. Window Center/Width (first pair), VOI LUT Function (0028,1056):
//        LINEAR (default; needs width >= 1):
//          m <= c - 0.5 - (w-1)/2 -> 0;  m > c - 0.5 + (w-1)/2 -> 255;
//          else ((m - (c - 0.5)) / (w-1) + 0.5) * 255
//        LINEAR_EXACT (width > 0): m <= c - w/2 -> 0;  m > c + w/2 -> 255;  else ((m - c) / w + 0.5) * 255
//        SIGMOID (width > 0): 255 / (1 + exp(-4 (m - c) / w))
//        An unusable window (width out of range, unknown function) is skipped, and so is a window that maps
//        every non-padding pixel to one 8-bit level (a window outside the data: the image would be blank).
//     b. VOI LUT Sequence (0028,3010), first item: y = LUTData[clamp(m - first, 0, n-1)] * 255 / (2^bits - 1)
//        with bits from the LUT Descriptor. A malformed or flattening VOI LUT is skipped likewise.
//     c. Percentile window: lo / hi = the percentile_low / percentile_high percentiles (nearest rank) of m over
//        the pixels that are not padding (all pixels if every pixel is padding);
//        y = clamp((m - lo) / (hi - lo), 0, 1) * 255 (hi == lo: 0 for m <= lo, 255 above).
//     Padding: stored values equal to Pixel Padding Value (0028,0120), or between it and Pixel Padding Range
//     Limit (0028,0121) inclusive, count as padding; they only leave the statistics of c, their grey level
//     follows the same mapping as every other pixel.
//  4. 8 bits: round(y) (halves up).
//  5. Inversion to "bright = dense": 255 - v when Photometric Interpretation is MONOCHROME1 or Presentation
//     LUT Shape (2050,0020) is INVERSE. INVERSE on a MONOCHROME1 image restates the same inversion (DX IOD:
//     INVERSE "shall be used if MONOCHROME1"); it is not applied twice.
//  6. Colour (Samples per Pixel 3): RGB (also JPEG/J2K data decoded to RGB, YBR_RCT/YBR_ICT) -> luma as PIL's
//     convert('L'): (19595 R + 38470 G + 7471 B + 2^15) >> 16; YBR_FULL and YBR_FULL_422 -> the Y sample.
//     Samples above 8 bits are scaled to 0..255 first. No Modality/VOI LUT, no inversion for colour.
//  7. Frame 1 of a multi-frame instance; the other frames are not decoded.
//
// Decoding: implicit/explicit little endian, explicit big endian, deflated, RLE, JPEG baseline/extended/
// lossless (DCMTK dcmjpeg), JPEG-LS lossless/near-lossless (dcmjpls), JPEG 2000 lossless/lossy (OpenJPEG, in
// the bridge). Part 10 files and bare datasets (no preamble / File Meta Information) alike. Only frame 1 is
// decompressed (DcmPixelData::getUncompressedFrame, not chooseRepresentation, which would decompress every
// frame). Hostile input is bounded before DCMTK allocates: element lengths by the bytes actually present,
// sequence nesting by max_sequence_depth, a deflated dataset by max_inflated_bytes, pixels by max_pixels /
// max_dimension: Rows x Columns, and the size each codec's own header declares (JPEG and JPEG-LS frame header,
// at most 4 components; JPEG 2000 SIZ, at most 4096 tiles, and it must equal the dataset's). An RLE frame must
// declare Samples per Pixel x bytes per sample segments, inside its data, each long enough to decode to
// Rows x Columns bytes (PackBits: at most 128 bytes per 2).
//
// View classification (InstanceInfo::view, view_evidence), first rule that decides:
//  1. ViewPosition (0018,5101): PA -> PA; AP -> AP; LL, RL, LAT, LATERAL, LLAT, RLAT -> LATERAL.
//     (Decubitus RLD/LLD and anything else do not decide.)
//  2. View Code Sequence (0054,0220), Code Value: R-10214 / SCT 399066004 -> PA; R-10206 / 399348003 -> AP;
//     R-102CD / 399067008, R-10232 / 399198007, R-10236 / 399173006 -> LATERAL; else its Code Meaning:
//     "postero-anterior" -> PA, "antero-posterior" -> AP, "lateral" -> LATERAL (never when it also says
//     oblique or decubitus).
//  3. PatientOrientation (0020,0020): a row direction of A or P (the image plane is sagittal) -> LATERAL. A row
//     direction of L or R says frontal but not AP or PA: rule 4 may still say AP or PA, else PA is assumed.
//  4. Text, SeriesDescription then ProtocolName, as words: PA / POSTEROANTERIOR -> PA; AP / ANTEROPOSTERIOR ->
//     AP; LAT / LATERAL / LL / RL / LLAT / RLAT -> LATERAL; a text naming two different views decides nothing.
//  5. Otherwise OTHER. ImageLaterality (0020,0062) names the body side, not the projection: it is only added to
//     the evidence.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include <opencv2/core.hpp>

#include "cmn/preprocessing/image_pipeline.h"

namespace cmn::preprocessing {

struct DicomReadOptions {
  // The pixel limits (image_pipeline.h, PixelLimits), held against Rows x Columns and against the size every
  // codec's header declares (JPEG / JPEG-LS frame header, JPEG 2000 SIZ), before anything is decoded.
  int64_t max_pixels = kDefaultMaxPixels;       // rows * columns above this is refused (decompression bomb guard)
  int64_t max_dimension = kDefaultMaxDimension; // rows or columns above this is refused
  double percentile_low = 0.5;          // without VOI: window from this percentile of the non-padding pixels...
  double percentile_high = 99.5;        // ...to this one
  int64_t max_inflated_bytes = 1 << 30; // Deflated transfer syntax: a dataset inflating beyond this is refused
  int max_sequence_depth = 64;          // sequences nested deeper are refused (DCMTK parses them recursively)
  // Draft decoding (0 = off: the exact path, the default). > 0: JPEG 2000 is decoded at its coarsest resolution
  // level, and 8-bit greyscale JPEG (baseline, extended) at the smallest DCT scale (1/2, 1/4, 1/8), whose short
  // side is still >= draft_min_side: the model input's size when a study asks for it (StudyOptions::image.size).
  // The grey-level rules above then run on that smaller frame (the percentile window over its pixels), so the
  // result is close to, not equal to, the exact one. Other codecs, and streams the draft decoder cannot decode
  // cleanly, take the exact path. DicomImage::grey_levels ends with "; draft decode 1/S (C x R)" when it applied.
  int draft_min_side = 0;

  PixelLimits pixel_limits() const { return {max_pixels, max_dimension}; }
};

enum class ViewPosition { kPA, kAP, kLateral, kOther };
const char* view_name(ViewPosition v);  // "PA", "AP", "LATERAL", "OTHER"

// What an instance says about itself (no patient identifiers are kept here: logs may print this).
struct InstanceInfo {
  std::string source;               // file name or caller-given name (for messages)
  std::string sop_instance_uid;
  std::string sop_class_uid;
  std::string study_instance_uid;
  std::string series_instance_uid;
  std::string modality;             // CR, DX, ...
  std::string transfer_syntax_uid;
  bool is_image = false;            // has Pixel Data and its SOP class is not a non-image one (SR, KO,
                                    // presentation state, encapsulated document, waveform, raw data, RT)
  ViewPosition view = ViewPosition::kOther;
  std::string view_evidence;        // which attribute decided the view, e.g. "ViewPosition=PA"
  int64_t rows = 0, columns = 0;
  int64_t samples_per_pixel = 1;    // (0028,0002), 1 when absent
  int64_t bits_allocated = 16;      // (0028,0100), 16 when absent (the larger container)
  // Series Number (0020,0011) / Instance Number (0020,0013), filled by read_dicom_info; absent or unparsable
  // -> nullopt. Used only to order equally ranked views (select_views: the lower number fills the earlier slot).
  std::optional<int64_t> series_number;
  std::optional<int64_t> instance_number;
};

struct DicomImage {
  InstanceInfo info;
  cv::Mat grey8;                    // CV_8UC1, rows x columns, bright = dense (bone), after the policy above
  std::string grey_levels;          // which rules applied, e.g. "rescale 1*s+-1024; window C=40 W=400 LINEAR"
};

// Frame 1's stored pixel values, before any grey-level rule: what the (decompressed) Pixel Data holds.
struct DicomStoredPixels {
  InstanceInfo info;
  std::string photometric;          // of `frame`: the codec's output colour model (YBR_FULL_422 comes expanded)
  int samples_per_pixel = 1;
  int bits_allocated = 0;           // 8 or 16
  int bits_stored = 0;
  int high_bit = 0;
  bool is_signed = false;           // Pixel Representation 1
  int64_t frames = 1;               // Number of Frames of the instance (only frame 1 is decoded)
  // rows x columns, CV_8UC(samples) for Bits Allocated 8, CV_16UC(samples) for 16: the container words in host
  // byte order, samples interleaved. For lossless transfer syntaxes these are byte-identical to the Pixel Data
  // of the same image stored uncompressed (little endian).
  cv::Mat frame;
};

// Reads the instance's attributes only (no pixel decoding). `bytes` is a Part 10 file or a bare dataset.
absl::StatusOr<InstanceInfo> read_dicom_info(const std::string& bytes, const std::string& source,
                                             const DicomReadOptions& options = {});
// Decodes pixels and applies the grey-level policy. Errors name the instance (SOP Instance UID when known,
// and `source`) and the reason: not DICOM, truncated, no/short Pixel Data, bad dimensions, unsupported
// transfer syntax, corrupt compressed stream, inconsistent bits/photometric. No message carries patient
// identifiers. Codes: InvalidArgument (bad input, limits exceeded), Unimplemented (valid DICOM cmn does not
// decode: transfer syntax, PALETTE COLOR, Bits Allocated other than 8/16), Internal (DCMTK dictionary missing).
// DCMTK's own log output of the modules used here (dcmdata, dcmjpeg, dcmjpls, dcmimgle) is limited to FATAL
// on first use: every problem is reported through the returned status instead.
absl::StatusOr<DicomImage> read_dicom_image(const std::string& bytes, const std::string& source,
                                            const DicomReadOptions& options = {});
// The same, from a file path (source = the path). A missing or unreadable file is NotFound / InvalidArgument.
absl::StatusOr<DicomImage> read_dicom_file(const std::string& path, const DicomReadOptions& options = {});
// Decodes frame 1 without the grey-level policy (for lossless-decoding checks and tools). Same errors as
// read_dicom_image, less those of the grey-level rules.
absl::StatusOr<DicomStoredPixels> read_dicom_stored_pixels(const std::string& bytes, const std::string& source,
                                                           const DicomReadOptions& options = {});

// --- Study assembly and view selection ---
//
// A study's instances -> exactly N model inputs (N = the model's view count), and an account of every instance.
//
// 1. Every instance is read with read_dicom_info; one that cannot be read fails the study (the error names it).
//    All instances must carry the same StudyInstanceUID: several -> InvalidArgument naming two of them (the two
//    smallest UIDs, so the message does not depend on input order); a missing one -> InvalidArgument.
// 2. Not used, each listed in `skipped` with the reason: a second copy of a SOP Instance UID ("duplicate");
//    non-images (SR, presentation states, key object selections, ...: is_image false); images whose Modality
//    is not in StudyOptions::allowed_modalities.
// 3. View priority (select_views). Each usable image has a view (InstanceInfo::view, classified by the DICOM
//    reader) and is ranked PA (0) < AP (1) < LATERAL (2) < OTHER (3); equal ranks are ordered by Series
//    Number, then Instance Number (absent numbers after present ones), then SOP Instance UID, then source,
//    so the result never depends on input order. The slot order is:
//      slot 0      the best frontal (PA over AP); without a frontal, the best-ranked image;
//      slot 1      the best lateral, when slot 0 is a frontal and the study has a lateral
//                  (the IU X-ray pairing R2Gen was trained on: frontal, lateral);
//      slots 2..   the remaining usable images in rank order (further frontals, laterals, then others).
//    Images beyond N are skipped as "surplus" naming the slots that outrank them.
// 4. Fill rule, when the study has M < N usable images: slot k (k >= M) repeats slot k mod M, i.e. the chosen
//    images cycle in slot order (PA only, N=4: PA PA PA PA; PA + LAT, N=4: PA LAT PA LAT). No usable image at
//    all -> InvalidArgument listing why each instance was skipped.
// 5. The M distinct chosen images are decoded (read_dicom_image) and transformed (to_model_input) once each;
//    a decode error fails the study, naming the instance.
// Messages name instances by SOP Instance UID and source only: never by patient attributes.

struct InstanceInput {
  std::string source;  // file name (or "request[3]") for messages
  std::string bytes;   // the DICOM instance
};

struct StudyOptions {
  int64_t views = 4;                                  // the model's N
  std::vector<std::string> allowed_modalities = {"CR", "DX", "DR"};
  DicomReadOptions read;
  ImageOptions image;                                 // resize / normalisation
  // Memory ceiling for decoding the chosen instances (decode_peak_bytes of the largest; 0 = none): above it
  // assemble_study refuses with RESOURCE_EXHAUSTED, naming the instance and the estimate, before decoding.
  int64_t max_decode_bytes = 0;
};

// An upper estimate of the memory that decoding frame 1 of `info` takes at its peak: the codec's working planes
// (OpenJPEG keeps 32-bit samples per component), the stored frame (8 or 16-bit words), the grey-level
// pass's float copy and the 8-bit grey image, i.e. rows x columns x (samples x (container bytes + 4) + 5).
// Instances are decoded one at a time and only their 224x224 model input is kept, so a study's decoding peak
// is that of its largest chosen instance.
int64_t decode_peak_bytes(const InstanceInfo& info);

struct ViewSlot {
  int64_t slot = 0;                 // 0..N-1
  InstanceInfo instance;            // the instance that fills it
  std::string reason;               // why this instance in this slot, e.g. "frontal PA (ViewPosition=PA)", "repeat of slot 0: study has 1 image"
};

struct SkippedInstance {
  InstanceInfo instance;            // as far as it could be read
  std::string reason;               // "not an image (Basic Text SR)", "modality CT not allowed", "surplus lateral", ...
  size_t input = 0;                 // its index in the caller's list of instances
};

struct AssembledStudy {
  std::string study_instance_uid;
  std::vector<ViewSlot> slots;          // exactly N
  std::vector<SkippedInstance> skipped; // everything not used, with the reason
  std::vector<FloatImage> images;       // N model inputs, slot order
  std::vector<size_t> slot_inputs;      // slot_inputs[k] = index in the caller's list of the instance in slot k
};

// Groups by StudyInstanceUID (several studies -> InvalidArgument naming both UIDs), skips non-images and
// disallowed modalities (saying so), classifies views and fills the N slots by the documented priority.
// Steps 1-5 above. Empty input -> InvalidArgument.
absl::StatusOr<AssembledStudy> assemble_study(const std::vector<InstanceInput>& instances, const StudyOptions& options);

// Steps 1-4 above on instances already read with read_dicom_info (no pixel decoding): the slots, the skipped
// instances, and for each slot the index of its instance in `instances`. Uses options.views and
// options.allowed_modalities only.
struct ViewSelection {
  std::string study_instance_uid;
  std::vector<ViewSlot> slots;            // exactly N, slot order
  std::vector<SkippedInstance> skipped;   // ordered by SOP Instance UID, then source
  std::vector<size_t> slot_inputs;        // slot_inputs[k] = index into `instances` of slots[k].instance
};
absl::StatusOr<ViewSelection> select_views(const std::vector<InstanceInfo>& instances, const StudyOptions& options);

// Splits instances of many studies (a folder tree) into studies, for assemble_study one study at a time.
struct StudyGroup {
  std::string study_instance_uid;
  std::vector<size_t> members;            // indices into the input, ascending
};
struct StudyGrouping {
  std::vector<StudyGroup> studies;        // ordered by StudyInstanceUID (byte-wise): stable output order
  std::vector<size_t> unassigned;         // instances without a StudyInstanceUID (e.g. a DICOMDIR), ascending
};
StudyGrouping group_studies(const std::vector<InstanceInfo>& instances);

// Human-readable name of a SOP Class for messages ("Basic Text SR", "Grayscale Softcopy Presentation State",
// ...); the UID itself when it is not one cmn knows by name.
std::string sop_class_name(const std::string& sop_class_uid);

}  // namespace cmn::preprocessing
