// The only file of cmn that includes DCMTK (STYLE.md; Orthanc's FromDcmtkBridge does the same). DCMTK's
// OFCondition becomes absl::Status here and nowhere else. JPEG 2000 is decoded here too, with OpenJPEG: DCMTK
// 3.6 has no free JPEG 2000 codec.
#include "dcmtk_bridge.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cmn/common/status_macros.h"

#include <dcmtk/config/osconfig.h>  // first of the DCMTK headers

#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcistrma.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcsequen.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <openjpeg.h>
#include <zlib.h>

namespace cmn::preprocessing {
namespace internal {
namespace {

// ---------------------------------------------------------------------------------------------------------
// Process-wide DCMTK set-up: codecs registered once; DCMTK's log output of the reading modules limited to
// FATAL, since every problem reaches the caller as an absl::Status (and stderr lines would break the
// one-line-per-failure contract of cmn-dicom-png).

void init_dcmtk_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
    for (const char* logger : {"dcmtk.dcmdata", "dcmtk.dcmjpeg", "dcmtk.dcmjpls", "dcmtk.dcmimgle"}) {
      OFLog::getLogger(logger).setLogLevel(OFLogger::FATAL_LOG_LEVEL);
    }
  });
}

std::string trimmed(const OFString& s) { return std::string(absl::StripAsciiWhitespace(s.c_str())); }

// The string attributes read here are short (UI, CS, LO, DS, IS). A longer value is treated as absent: after a
// failed parse an element may still claim its bogus length, and reading it would allocate that much.
constexpr Uint32 kMaxStringValueLength = 64 * 1024;

bool has_short_value(DcmItem* item, const DcmTagKey& tag) {
  DcmElement* element = nullptr;
  return item->findAndGetElement(tag, element).good() && element != nullptr &&
         element->getLengthField() <= kMaxStringValueLength;
}

std::string get_string(DcmItem* item, const DcmTagKey& tag) {
  OFString value;
  if (!has_short_value(item, tag) || item->findAndGetOFString(tag, value).bad()) return "";
  return trimmed(value);
}

std::vector<std::string> get_strings(DcmItem* item, const DcmTagKey& tag) {
  OFString value;
  if (!has_short_value(item, tag) || item->findAndGetOFStringArray(tag, value).bad()) return {};
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(value.c_str(), '\\')) {
    out.emplace_back(absl::StripAsciiWhitespace(part));
  }
  return out;
}

// An IS value (first of them); absent or not a whole number -> nullopt.
std::optional<int64_t> get_integer(DcmItem* item, const DcmTagKey& tag) {
  int64_t value = 0;
  const std::string text = get_string(item, tag);
  if (text.empty() || !absl::SimpleAtoi(text, &value)) return std::nullopt;
  return value;
}

std::optional<int64_t> get_uint16(DcmItem* item, const DcmTagKey& tag) {
  Uint16 value = 0;
  if (item->findAndGetUint16(tag, value).bad()) return std::nullopt;
  return value;
}

// A US-or-SS ("xs") value as its 16-bit pattern, and whether its VR is SS.
std::optional<std::pair<uint16_t, bool>> get_raw16(DcmItem* item, const DcmTagKey& tag, unsigned long pos) {
  DcmElement* element = nullptr;
  if (item->findAndGetElement(tag, element).bad() || element == nullptr || pos >= element->getVM()) {
    return std::nullopt;
  }
  if (element->ident() == EVR_SS) {
    Sint16 v = 0;
    if (element->getSint16(v, pos).bad()) return std::nullopt;
    return std::make_pair(static_cast<uint16_t>(v), true);
  }
  Uint16 raw = 0;
  if (element->getUint16(raw, pos).bad()) return std::nullopt;
  return std::make_pair(static_cast<uint16_t>(raw), false);
}

// A value in the stored-pixel domain: signed when its VR is SS or the pixels are signed (Pixel Representation
// 1; implicit VR files cannot say SS), unsigned otherwise.
std::optional<int64_t> get_xs(DcmItem* item, const DcmTagKey& tag, unsigned long pos, bool is_signed) {
  const auto raw = get_raw16(item, tag, pos);
  if (!raw) return std::nullopt;
  return (raw->second || is_signed) ? int64_t{static_cast<int16_t>(raw->first)} : int64_t{raw->first};
}

// An unsigned 16-bit count whatever the VR says (LUT Descriptor values 1 and 3).
std::optional<int64_t> get_count16(DcmItem* item, const DcmTagKey& tag, unsigned long pos) {
  const auto raw = get_raw16(item, tag, pos);
  if (!raw) return std::nullopt;
  return int64_t{raw->first};
}

std::vector<double> get_decimals(DcmItem* item, const DcmTagKey& tag) {
  DcmElement* element = nullptr;
  std::vector<double> out;
  if (item->findAndGetElement(tag, element).bad() || element == nullptr) return out;
  for (unsigned long i = 0; i < element->getVM(); ++i) {
    Float64 v = 0;
    if (element->getFloat64(v, i).bad()) break;
    out.push_back(v);
  }
  return out;
}

std::string condition_text(const OFCondition& cond) { return cond.text() != nullptr ? cond.text() : "unknown"; }

// ---------------------------------------------------------------------------------------------------------
// Parsing

enum class Layout { kPart10, kMetaWithoutPreamble, kBareDataset, kNotDicom };

// Part 10 ("DICM" at 128), or a dataset starting with a group DICOM files start with (File Meta 0002, or the
// identifying group 0008 in either byte order). Anything else is not DICOM: DCMTK would otherwise try to
// parse arbitrary bytes as an implicit little endian dataset.
Layout sniff_layout(const std::string& bytes) {
  if (bytes.size() >= 132 && bytes.compare(128, 4, "DICM") == 0) return Layout::kPart10;
  if (bytes.size() < 8) return Layout::kNotDicom;
  const auto b0 = static_cast<uint8_t>(bytes[0]);
  const auto b1 = static_cast<uint8_t>(bytes[1]);
  const uint16_t group_le = static_cast<uint16_t>(b0 | (b1 << 8));
  const uint16_t group_be = static_cast<uint16_t>((b0 << 8) | b1);
  if (group_le == 0x0002) return Layout::kMetaWithoutPreamble;
  if (group_le == 0x0008 || group_be == 0x0008) return Layout::kBareDataset;
  return Layout::kNotDicom;
}

// ---------------------------------------------------------------------------------------------------------
// Reading from memory. DCMTK's own buffer stream cannot re-open itself, so DCMTK allocates every value at its
// declared length while parsing: a few bytes claiming a 3 GB element made it allocate 3 GB (found by
// cmn-dicom-fuzzer). This stream can hand out factories, so DCMTK skips values longer than the read limit and
// loads them on access: a declared length beyond the data fails the skip instead of allocating.

class MemoryProducer : public DcmProducer {
 public:
  MemoryProducer(const char* data, offile_off_t size) : data_(data), size_(size) {}
  OFBool good() const override { return OFTrue; }
  OFCondition status() const override { return EC_Normal; }
  OFBool eos() override { return position_ >= size_; }
  offile_off_t avail() override { return size_ - position_; }
  offile_off_t read(void* buffer, offile_off_t length) override {
    const offile_off_t n = std::min(length, size_ - position_);
    if (n > 0) std::memcpy(buffer, data_ + position_, static_cast<size_t>(n));
    position_ += n;
    return n;
  }
  offile_off_t skip(offile_off_t length) override {
    const offile_off_t n = std::min(length, size_ - position_);
    position_ += n;
    return n;
  }
  void putback(offile_off_t length) override { position_ -= std::min(length, position_); }

 private:
  const char* data_;
  offile_off_t size_;
  offile_off_t position_ = 0;
};

class MemoryInputStream : public DcmInputStream {
 public:
  MemoryInputStream(const char* data, offile_off_t size)
      : DcmInputStream(&producer_), data_(data), size_(size), producer_(data, size) {}
  DcmInputStreamFactory* newFactory() const override;

 private:
  const char* data_;
  offile_off_t size_;
  MemoryProducer producer_;
};

class MemoryInputStreamFactory : public DcmInputStreamFactory {
 public:
  MemoryInputStreamFactory(const char* data, offile_off_t size, offile_off_t offset)
      : data_(data), size_(size), offset_(offset) {}
  DcmInputStream* create() const override {
    auto* stream = new MemoryInputStream(data_, size_);
    stream->skip(offset_);
    return stream;
  }
  DcmInputStreamFactory* clone() const override { return new MemoryInputStreamFactory(*this); }
  DcmInputStreamFactoryType ident() const override { return DFT_DcmInputFileStreamFactory; }

 private:
  const char* data_;
  offile_off_t size_;
  offile_off_t offset_;
};

DcmInputStreamFactory* MemoryInputStream::newFactory() const {
  if (currentProducer() != &producer_) return nullptr;  // a compression filter is installed
  return new MemoryInputStreamFactory(data_, size_, tell());
}

// ---------------------------------------------------------------------------------------------------------
// Structure pre-scan, before DCMTK parses: DCMTK recurses once per nested sequence, and 20000 nested empty
// sequences (720 KB) overflowed the stack. The scan walks element and item headers without a dictionary and
// only reports nesting deeper than the limit; anything else odd ends the walk quietly (DCMTK reports it).

struct Encoding {
  bool explicit_vr = true;
  bool little_endian = true;
};

class DepthScan {
 public:
  DepthScan(const char* data, size_t size, Encoding encoding, int max_depth)
      : data_(reinterpret_cast<const uint8_t*>(data)), size_(size), encoding_(encoding), max_depth_(max_depth) {}

  // False when sequences nest deeper than max_depth.
  bool within_limit() {
    elements(0, size_, 0, false);
    return !too_deep_;
  }

 private:
  static constexpr size_t kStop = static_cast<size_t>(-1);

  uint16_t u16(size_t p) const {
    return encoding_.little_endian ? static_cast<uint16_t>(data_[p] | (data_[p + 1] << 8))
                                   : static_cast<uint16_t>((data_[p] << 8) | data_[p + 1]);
  }
  uint32_t u32(size_t p) const {
    return encoding_.little_endian ? static_cast<uint32_t>(u16(p)) | (static_cast<uint32_t>(u16(p + 2)) << 16)
                                   : (static_cast<uint32_t>(u16(p)) << 16) | static_cast<uint32_t>(u16(p + 2));
  }
  static bool is_vr(uint8_t a, uint8_t b) { return a >= 'A' && a <= 'Z' && b >= 'A' && b <= 'Z'; }
  static bool has_long_length(uint8_t a, uint8_t b) {
    static const char* const kLong[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
    for (const char* vr : kLong) {
      if (a == vr[0] && b == vr[1]) return true;
    }
    return false;
  }
  bool item_tag_at(size_t p, size_t end) const {
    return p + 8 <= end && u16(p) == 0xFFFE && u16(p + 2) == 0xE000;
  }

  // Elements in [pos, end); in an undefined-length item, up to its delimitation item. Returns the position
  // after them, or kStop.
  size_t elements(size_t pos, size_t end, int depth, bool until_delimiter) {
    while (pos + 8 <= end && !too_deep_) {
      const uint16_t group = u16(pos);
      const uint16_t element = u16(pos + 2);
      if (group == 0xFFFE) return until_delimiter && element == 0xE00D ? pos + 8 : kStop;
      uint32_t length = 0;
      size_t value = 0;
      bool sequence = false;
      if (encoding_.explicit_vr) {
        const uint8_t a = data_[pos + 4];
        const uint8_t b = data_[pos + 5];
        if (!is_vr(a, b)) return kStop;
        if (has_long_length(a, b)) {
          if (pos + 12 > end) return kStop;
          length = u32(pos + 8);
          value = pos + 12;
        } else {
          length = u16(pos + 6);
          value = pos + 8;
        }
        sequence = a == 'S' && b == 'Q';
      } else {
        length = u32(pos + 4);
        value = pos + 8;
      }
      const bool pixel_data = group == 0x7FE0 && element == 0x0010;
      if (length == 0xFFFFFFFF) {  // a sequence, or encapsulated pixel data: items follow
        pos = items(value, end, depth + 1, pixel_data, /*until_delimiter=*/true);
        if (pos == kStop) return kStop;
        continue;
      }
      if (length > end - value) return kStop;
      // Defined length: SQ in explicit VR; in implicit VR, a value that starts with an item.
      if (!pixel_data && (sequence || (!encoding_.explicit_vr && item_tag_at(value, value + length)))) {
        items(value, value + length, depth + 1, false, /*until_delimiter=*/false);
        if (too_deep_) return kStop;
      }
      pos = value + length;
    }
    return until_delimiter ? kStop : pos;
  }

  size_t items(size_t pos, size_t end, int depth, bool fragments, bool until_delimiter) {
    if (depth > max_depth_) {
      too_deep_ = true;
      return kStop;
    }
    while (pos + 8 <= end && !too_deep_) {
      const uint16_t group = u16(pos);
      const uint16_t element = u16(pos + 2);
      const uint32_t length = u32(pos + 4);
      if (group == 0xFFFE && element == 0xE0DD) return pos + 8;
      if (group != 0xFFFE || element != 0xE000) return kStop;
      const size_t value = pos + 8;
      if (length == 0xFFFFFFFF) {
        if (fragments) return kStop;
        pos = elements(value, end, depth, /*until_delimiter=*/true);
        if (pos == kStop) return kStop;
      } else {
        if (length > end - value) return kStop;
        if (!fragments) {
          elements(value, value + length, depth, false);
          if (too_deep_) return kStop;
        }
        pos = value + length;
      }
    }
    return until_delimiter ? kStop : pos;
  }

  const uint8_t* data_;
  size_t size_;
  Encoding encoding_;
  int max_depth_;
  bool too_deep_ = false;
};

// Raw deflate (the Deflated Explicit VR Little Endian transfer syntax) with an output cap.
absl::StatusOr<std::string> inflate_dataset(const std::string& bytes, size_t offset, int64_t max_bytes) {
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return absl::InternalError("zlib: inflateInit2 failed");
  std::string out;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data() + offset));
  z.avail_in = static_cast<uInt>(bytes.size() - offset);
  int ret = Z_OK;
  char chunk[1 << 16];
  while (ret != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof chunk;
    ret = inflate(&z, Z_NO_FLUSH);
    if (ret != Z_OK && ret != Z_STREAM_END) break;
    out.append(chunk, sizeof chunk - z.avail_out);
    if (static_cast<int64_t>(out.size()) > max_bytes) {
      inflateEnd(&z);
      return absl::InvalidArgumentError(
          absl::StrCat("the deflated dataset inflates beyond the limit of ", max_bytes, " bytes"));
    }
    if (ret == Z_OK && z.avail_in == 0 && z.avail_out != 0) break;  // input ended before the stream did
  }
  inflateEnd(&z);
  if (ret != Z_STREAM_END) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt or truncated deflated dataset (zlib ", ret, ")"));
  }
  return out;
}

struct Parsed {
  std::unique_ptr<std::string> inflated;  // deflated transfer syntax: the dataset DCMTK reads (lazily)
  std::unique_ptr<DcmFileFormat> file;    // after `inflated`: destroyed first
  DcmDataset* dataset = nullptr;
  E_TransferSyntax xfer = EXS_Unknown;    // of `dataset` as DCMTK read it (deflated: explicit LE)
  std::string transfer_syntax_uid;        // as the instance declares it
  std::string sop_instance_uid;
};

absl::Status instance_error(absl::StatusCode code, const std::string& uid, const std::string& source,
                            const std::string& reason) {
  return absl::Status(code, absl::StrCat(instance_label(uid, source), ": ", reason));
}

absl::StatusOr<Parsed> parse(const std::string& bytes, const std::string& source, const DicomReadOptions& options) {
  init_dcmtk_once();
  if (!dcmDataDict.isDictionaryLoaded()) {
    return absl::InternalError(
        "DCMTK's DICOM data dictionary is not loaded (install dcmtk's dicom.dic or set DCMDICTPATH)");
  }
  const Layout layout = sniff_layout(bytes);
  if (layout == Layout::kNotDicom) {
    return instance_error(absl::StatusCode::kInvalidArgument, "", source,
                          "not a DICOM file (no 'DICM' marker at byte 128 and no DICOM dataset at the start)");
  }
  Parsed parsed;
  parsed.file = std::make_unique<DcmFileFormat>();
  auto failure = [&](const OFCondition& cond, bool at_end) {
    if (parsed.file->getDataset() != nullptr) {
      parsed.sop_instance_uid = get_string(parsed.file->getDataset(), DCM_SOPInstanceUID);
    }
    // DCMTK reports a value or item running past the end of the data in several ways (Invalid stream,
    // Sequence Delimitation Item missing, I/O suspension); all of them leave the stream at its end.
    const std::string reason =
        at_end || cond == EC_StreamNotifyClient
            ? absl::StrCat("truncated: the data ends inside an element (", condition_text(cond), ")")
            : absl::StrCat("not a valid DICOM stream (", condition_text(cond), ")");
    return instance_error(absl::StatusCode::kInvalidArgument, parsed.sop_instance_uid, source, reason);
  };

  // 1. File Meta Information, read by DCMTK alone (ERM_metaOnly): the dataset's offset and transfer syntax.
  //    DCMTK is never left to read a deflated dataset itself: it would allocate every element at its declared
  //    length while inflating (cmn-dicom-fuzzer: a meta header with a stray element hid the deflated transfer
  //    syntax from an earlier, simpler scan of ours, and DCMTK asked for 2 GB).
  size_t dataset_offset = 0;
  E_TransferSyntax xfer = EXS_Unknown;
  if (layout != Layout::kBareDataset) {
    MemoryInputStream stream(bytes.data(), static_cast<offile_off_t>(bytes.size()));
    parsed.file->setReadMode(ERM_metaOnly);
    parsed.file->transferInit();
    const OFCondition cond = parsed.file->read(stream, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
    parsed.file->transferEnd();
    parsed.file->setReadMode(ERM_autoDetect);
    if (cond.bad() && cond != EC_FileMetaInfoHeaderMissing) return failure(cond, stream.eos());
    dataset_offset = static_cast<size_t>(stream.tell());
    DcmMetaInfo* meta = parsed.file->getMetaInfo();
    if (meta != nullptr) parsed.transfer_syntax_uid = get_string(meta, DCM_TransferSyntaxUID);
    if (!parsed.transfer_syntax_uid.empty()) xfer = DcmXfer(parsed.transfer_syntax_uid.c_str()).getXfer();
  }

  // 2. The bytes DCMTK parses as the dataset: the file's, or the inflated deflated dataset.
  const char* data = bytes.data() + dataset_offset;
  size_t size = bytes.size() - std::min(dataset_offset, bytes.size());
  if (xfer == EXS_DeflatedLittleEndianExplicit) {
    absl::StatusOr<std::string> inflated = inflate_dataset(bytes, dataset_offset, options.max_inflated_bytes);
    if (!inflated.ok()) {
      return instance_error(inflated.status().code(), "", source, std::string(inflated.status().message()));
    }
    parsed.inflated = std::make_unique<std::string>(*std::move(inflated));
    data = parsed.inflated->data();
    size = parsed.inflated->size();
    xfer = EXS_LittleEndianExplicit;
  }
  const E_TransferSyntax read_xfer = DcmXfer(xfer).isEncapsulated() || xfer == EXS_LittleEndianExplicit ||
                                             xfer == EXS_LittleEndianImplicit || xfer == EXS_BigEndianExplicit
                                         ? xfer
                                         : EXS_Unknown;  // unknown or missing: DCMTK guesses from the data

  // 3. Nesting depth, before DCMTK recurses into it.
  std::vector<Encoding> encodings;
  if (read_xfer == EXS_Unknown) {
    encodings = {{true, true}, {false, true}, {true, false}};
  } else {
    const DcmXfer info(read_xfer);
    encodings = {{info.isExplicitVR() == OFTrue, info.isLittleEndian() == OFTrue}};
  }
  for (const Encoding& encoding : encodings) {
    if (!DepthScan(data, size, encoding, options.max_sequence_depth).within_limit()) {
      return instance_error(absl::StatusCode::kInvalidArgument, "", source,
                            absl::StrCat("sequences nest deeper than ", options.max_sequence_depth, " levels"));
    }
  }

  // 4. The dataset. Large values stay in `bytes` / `inflated` until they are accessed.
  MemoryInputStream stream(data, static_cast<offile_off_t>(size));
  DcmDataset* dataset = parsed.file->getDataset();
  dataset->transferInit();
  const OFCondition cond = dataset->read(stream, read_xfer, EGL_noChange, DCM_MaxReadLength);
  dataset->transferEnd();
  if (cond.bad()) return failure(cond, stream.eos());
  parsed.dataset = dataset;
  parsed.sop_instance_uid = get_string(dataset, DCM_SOPInstanceUID);
  if (dataset->card() == 0) {
    return instance_error(absl::StatusCode::kInvalidArgument, "", source, "not a DICOM file (empty dataset)");
  }
  parsed.xfer = dataset->getOriginalXfer();
  if (parsed.transfer_syntax_uid.empty() && parsed.xfer != EXS_Unknown) {
    parsed.transfer_syntax_uid = DcmXfer(parsed.xfer).getXferID();
  }
  return parsed;
}

// Non-image SOP classes that may still carry pixel-like data elements (we never treat them as images).
bool is_non_image_sop_class(const std::string& uid) {
  static const char* const kPrefixes[] = {
      "1.2.840.10008.5.1.4.1.1.88.",   // structured reports, key object selection
      "1.2.840.10008.5.1.4.1.1.11.",   // presentation states
      "1.2.840.10008.5.1.4.1.1.104.",  // encapsulated documents
      "1.2.840.10008.5.1.4.1.1.9.",    // waveforms
      "1.2.840.10008.5.1.4.1.1.66",    // raw data, spatial registration, fiducials, ...
      "1.2.840.10008.5.1.4.1.1.481.",  // RT (plans, structure sets, doses are not radiographs)
  };
  for (const char* prefix : kPrefixes) {
    if (uid.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

ViewAttributes read_view_attributes(DcmItem* dataset) {
  ViewAttributes a;
  a.view_position = get_string(dataset, DCM_ViewPosition);
  DcmSequenceOfItems* codes = nullptr;
  if (dataset->findAndGetSequence(DCM_ViewCodeSequence, codes).good() && codes != nullptr) {
    for (unsigned long i = 0; i < codes->card(); ++i) {
      DcmItem* item = codes->getItem(i);
      if (item == nullptr) continue;
      a.view_code_values.push_back(get_string(item, DCM_CodeValue));
      a.view_code_meanings.push_back(get_string(item, DCM_CodeMeaning));
    }
  }
  a.image_laterality = get_string(dataset, DCM_ImageLaterality);
  a.patient_orientation = get_strings(dataset, DCM_PatientOrientation);
  a.series_description = get_string(dataset, DCM_SeriesDescription);
  a.protocol_name = get_string(dataset, DCM_ProtocolName);
  return a;
}

InstanceInfo read_info(const Parsed& parsed, const std::string& source) {
  DcmDataset* ds = parsed.dataset;
  InstanceInfo info;
  info.source = source;
  info.sop_instance_uid = parsed.sop_instance_uid;
  info.sop_class_uid = get_string(ds, DCM_SOPClassUID);
  info.study_instance_uid = get_string(ds, DCM_StudyInstanceUID);
  info.series_instance_uid = get_string(ds, DCM_SeriesInstanceUID);
  info.modality = get_string(ds, DCM_Modality);
  info.transfer_syntax_uid = parsed.transfer_syntax_uid;
  info.is_image = ds->tagExists(DCM_PixelData) && !is_non_image_sop_class(info.sop_class_uid);
  info.series_number = get_integer(ds, DCM_SeriesNumber);
  info.instance_number = get_integer(ds, DCM_InstanceNumber);
  info.rows = get_uint16(ds, DCM_Rows).value_or(0);
  info.columns = get_uint16(ds, DCM_Columns).value_or(0);
  info.view = classify_view(read_view_attributes(ds), &info.view_evidence);
  return info;
}

// ---------------------------------------------------------------------------------------------------------
// Pixel module

// A LUT Descriptor + LUT Data pair of a Modality or VOI LUT Sequence item. Returns nullopt and sets *problem
// when the item is unusable.
std::optional<DicomLut> read_lut(DcmItem* item, bool is_signed, std::string* problem) {
  const auto entries = get_count16(item, DCM_LUTDescriptor, 0);
  const auto first = get_xs(item, DCM_LUTDescriptor, 1, is_signed);
  const auto bits = get_count16(item, DCM_LUTDescriptor, 2);
  if (!entries || !first || !bits) {
    *problem = "LUT Descriptor (0028,3002) missing or not 3 values";
    return std::nullopt;
  }
  if (*bits < 1 || *bits > 16) {
    *problem = absl::StrCat("LUT Descriptor gives ", *bits, " bits per entry (1..16 allowed)");
    return std::nullopt;
  }
  const int64_t n = *entries == 0 ? 65536 : *entries;
  DcmElement* data = nullptr;
  Uint16* words = nullptr;
  if (item->findAndGetElement(DCM_LUTData, data).bad() || data == nullptr || data->getUint16Array(words).bad() ||
      words == nullptr) {
    *problem = "LUT Data (0028,3006) missing or unreadable";
    return std::nullopt;
  }
  const int64_t count = data->getLength() / 2;
  DicomLut lut;
  lut.first_mapped = *first;
  lut.bits = static_cast<int>(*bits);
  lut.data.resize(static_cast<size_t>(n));
  if (count >= n) {
    std::copy(words, words + n, lut.data.begin());
  } else if (*bits <= 8 && count * 2 >= n) {  // 8-bit entries packed two per word, low byte first
    for (int64_t k = 0; k < n; ++k) lut.data[k] = static_cast<uint16_t>((words[k / 2] >> (8 * (k % 2))) & 0xFF);
  } else {
    *problem = absl::StrCat("LUT Data has ", count, " entries, the LUT Descriptor says ", n);
    return std::nullopt;
  }
  return lut;
}

bool is_monochrome(const std::string& photometric) {
  return photometric == "MONOCHROME1" || photometric == "MONOCHROME2";
}

bool is_supported_colour(const std::string& photometric) {
  return photometric == "RGB" || photometric == "YBR_FULL" || photometric == "YBR_FULL_422" ||
         photometric == "YBR_RCT" || photometric == "YBR_ICT";
}

// Reads and checks the Image Pixel module and the grey-level attributes. Errors carry the reason only.
absl::Status read_pixel_description(DcmDataset* ds, const DicomReadOptions& options, PixelDescription* p) {
  const auto rows = get_uint16(ds, DCM_Rows);
  const auto columns = get_uint16(ds, DCM_Columns);
  if (!rows || !columns) return absl::InvalidArgumentError("Rows (0028,0010) or Columns (0028,0011) missing");
  p->rows = *rows;
  p->columns = *columns;
  if (p->rows == 0 || p->columns == 0) {
    return absl::InvalidArgumentError(absl::StrCat("zero image dimension (", p->columns, " x ", p->rows, ")"));
  }
  if (p->rows > options.max_dimension || p->columns > options.max_dimension ||
      p->rows * p->columns > options.max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat("image of ", p->columns, " x ", p->rows, " = ",
                                                   p->rows * p->columns, " pixels exceeds the limits (",
                                                   options.max_pixels, " pixels, ", options.max_dimension,
                                                   " per side)"));
  }
  p->samples_per_pixel = static_cast<int>(get_uint16(ds, DCM_SamplesPerPixel).value_or(1));
  const auto bits_allocated = get_uint16(ds, DCM_BitsAllocated);
  if (!bits_allocated) return absl::InvalidArgumentError("Bits Allocated (0028,0100) missing");
  p->bits_allocated = static_cast<int>(*bits_allocated);
  p->bits_stored = static_cast<int>(get_uint16(ds, DCM_BitsStored).value_or(p->bits_allocated));
  p->high_bit = static_cast<int>(get_uint16(ds, DCM_HighBit).value_or(p->bits_stored - 1));
  p->is_signed = get_uint16(ds, DCM_PixelRepresentation).value_or(0) == 1;
  if (p->bits_allocated != 8 && p->bits_allocated != 16) {
    return absl::UnimplementedError(
        absl::StrCat("Bits Allocated ", p->bits_allocated, " is not supported (8 or 16)"));
  }
  if (p->bits_stored < 1 || p->bits_stored > p->bits_allocated) {
    return absl::InvalidArgumentError(absl::StrCat("inconsistent bits: Bits Stored ", p->bits_stored,
                                                   " with Bits Allocated ", p->bits_allocated));
  }
  if (p->high_bit >= p->bits_allocated || p->high_bit + 1 < p->bits_stored) {
    return absl::InvalidArgumentError(absl::StrCat("inconsistent bits: High Bit ", p->high_bit, " with Bits Stored ",
                                                   p->bits_stored, " and Bits Allocated ", p->bits_allocated));
  }
  Sint32 frames = 1;
  if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  p->frames = frames;

  p->photometric = absl::AsciiStrToUpper(get_string(ds, DCM_PhotometricInterpretation));
  if (p->photometric.empty() && p->samples_per_pixel == 1) p->photometric = "MONOCHROME2";  // ACR-NEMA files
  if (p->photometric == "PALETTE COLOR") {
    return absl::UnimplementedError("Photometric Interpretation PALETTE COLOR is not supported");
  }
  if (is_monochrome(p->photometric)) {
    if (p->samples_per_pixel != 1) {
      return absl::InvalidArgumentError(absl::StrCat("inconsistent photometric: ", p->photometric, " with ",
                                                     p->samples_per_pixel, " samples per pixel"));
    }
  } else if (is_supported_colour(p->photometric)) {
    if (p->samples_per_pixel != 3) {
      return absl::InvalidArgumentError(absl::StrCat("inconsistent photometric: ", p->photometric, " with ",
                                                     p->samples_per_pixel, " samples per pixel"));
    }
  } else {
    return absl::UnimplementedError(
        absl::StrCat("Photometric Interpretation '", p->photometric, "' is not supported"));
  }

  // Modality LUT
  const std::vector<double> slope = get_decimals(ds, DCM_RescaleSlope);
  const std::vector<double> intercept = get_decimals(ds, DCM_RescaleIntercept);
  if (!slope.empty()) p->rescale_slope = slope[0];
  if (!intercept.empty()) p->rescale_intercept = intercept[0];
  DcmItem* item = nullptr;
  if (ds->findAndGetSequenceItem(DCM_ModalityLUTSequence, item, 0).good() && item != nullptr) {
    p->modality_lut = read_lut(item, p->is_signed, &p->modality_lut_problem);
  }
  // VOI LUT
  p->window_centers = get_decimals(ds, DCM_WindowCenter);
  p->window_widths = get_decimals(ds, DCM_WindowWidth);
  p->voi_lut_function = absl::AsciiStrToUpper(get_string(ds, DCM_VOILUTFunction));
  item = nullptr;
  if (ds->findAndGetSequenceItem(DCM_VOILUTSequence, item, 0).good() && item != nullptr) {
    // VOI LUT input is the Modality LUT output: negative when the pixels are signed or the intercept is.
    p->voi_lut = read_lut(item, p->is_signed || p->rescale_intercept < 0, &p->voi_lut_problem);
  }
  p->presentation_lut_shape = absl::AsciiStrToUpper(get_string(ds, DCM_PresentationLUTShape));
  p->padding_value = get_xs(ds, DCM_PixelPaddingValue, 0, p->is_signed);
  p->padding_range_limit = get_xs(ds, DCM_PixelPaddingRangeLimit, 0, p->is_signed);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------------------
// Frame 1 of native (uncompressed) pixel data

int bytes_per_sample(const PixelDescription& p) { return p.bits_allocated / 8; }

// Colour-by-plane -> colour-by-pixel, in place (bytes or words).
void interleave_planes(cv::Mat* frame) {
  std::vector<cv::Mat> planes(3);
  const int depth = frame->depth();
  const int rows = frame->rows;
  const int cols = frame->cols;
  const size_t plane_bytes = static_cast<size_t>(rows) * cols * frame->elemSize1();
  auto* base = frame->data;
  for (int c = 0; c < 3; ++c) {
    planes[c] = cv::Mat(rows, cols, CV_MAKETYPE(depth, 1), base + c * plane_bytes).clone();
  }
  cv::merge(planes, *frame);
}

absl::StatusOr<cv::Mat> native_frame(DcmElement* pixel_data, const PixelDescription& p, int planar_configuration) {
  const size_t sample_bytes = static_cast<size_t>(bytes_per_sample(p));
  const bool ybr422 = p.photometric == "YBR_FULL_422";
  if (ybr422 && p.columns % 2 != 0) {
    return absl::InvalidArgumentError("YBR_FULL_422 with an odd number of columns");
  }
  const size_t frame_bytes = static_cast<size_t>(p.rows) * p.columns * sample_bytes *
                             (ybr422 ? 2 : static_cast<size_t>(p.samples_per_pixel));
  Uint8* data = nullptr;
  if (pixel_data->getUint8Array(data).bad() || data == nullptr) {
    if (pixel_data->getLength() == 0) return absl::InvalidArgumentError("Pixel Data (7FE0,0010) is empty");
    return absl::InvalidArgumentError(
        "Pixel Data (7FE0,0010) is not readable as native pixels (encapsulated data in a native transfer syntax?)");
  }
  const size_t length = pixel_data->getLength();
  if (length < frame_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("Pixel Data (7FE0,0010) is short: ", length,
                                                   " bytes, frame 1 needs ", frame_bytes));
  }
  const int depth = p.bits_allocated == 8 ? CV_8U : CV_16U;
  const int rows = static_cast<int>(p.rows);
  const int cols = static_cast<int>(p.columns);
  if (ybr422) {  // Y1 Y2 Cb Cr per pair of pixels -> Y Cb Cr per pixel
    cv::Mat out(rows, cols, CV_MAKETYPE(depth, 3));
    for (int y = 0; y < rows; ++y) {
      for (int x = 0; x < cols; x += 2) {
        const size_t base = (static_cast<size_t>(y) * cols + x) * 2;  // in samples
        for (int k = 0; k < 2; ++k) {
          for (int c = 0; c < 3; ++c) {
            const size_t sample = base + (c == 0 ? static_cast<size_t>(k) : static_cast<size_t>(c + 1));
            if (depth == CV_8U) {
              out.ptr<uint8_t>(y)[(x + k) * 3 + c] = data[sample];
            } else {
              uint16_t w;
              std::memcpy(&w, data + sample * 2, 2);
              out.ptr<uint16_t>(y)[(x + k) * 3 + c] = w;
            }
          }
        }
      }
    }
    return out;
  }
  cv::Mat out(rows, cols, CV_MAKETYPE(depth, p.samples_per_pixel));
  std::memcpy(out.data, data, frame_bytes);
  if (p.samples_per_pixel == 3 && planar_configuration == 1) interleave_planes(&out);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Frame 1 of encapsulated pixel data

bool is_jpeg2000(E_TransferSyntax xfer) {
  return xfer == EXS_JPEG2000LosslessOnly || xfer == EXS_JPEG2000 ||
         xfer == EXS_JPEG2000MulticomponentLosslessOnly || xfer == EXS_JPEG2000Multicomponent;
}

uint32_t read_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

bool ends_with_eoc(const uint8_t* data, size_t length) {
  // JPEG 2000 End of Codestream FF D9, possibly followed by the fragment's even-length pad byte.
  if (length >= 2 && data[length - 2] == 0xFF && data[length - 1] == 0xD9) return true;
  return length >= 3 && data[length - 3] == 0xFF && data[length - 2] == 0xD9 && data[length - 1] == 0x00;
}

// The compressed bytes of frame 1: all fragments of a single-frame image; for multi-frame images the fragments
// before the Basic Offset Table's second entry, or the first fragment when there is one per frame, or the
// fragments up to the first that ends a codestream.
absl::StatusOr<std::string> frame1_bitstream(DcmPixelSequence* sequence, int64_t frames) {
  const unsigned long items = sequence->card();
  if (items < 2) return absl::InvalidArgumentError("encapsulated Pixel Data has no compressed fragment");
  std::vector<uint32_t> offsets;
  DcmPixelItem* item = nullptr;
  if (sequence->getItem(item, 0).good() && item != nullptr && item->getLength() >= 4) {
    Uint8* table = nullptr;
    if (item->getUint8Array(table).good() && table != nullptr) {
      for (Uint32 i = 0; i + 4 <= item->getLength(); i += 4) offsets.push_back(read_le32(table + i));
    }
  }
  std::string out;
  uint64_t position = 0;  // offset of the current fragment's item tag from the first fragment's
  for (unsigned long i = 1; i < items; ++i) {
    if (sequence->getItem(item, i).bad() || item == nullptr) break;
    const Uint32 length = item->getLength();
    if (frames > 1 && offsets.size() >= 2 && position >= offsets[1]) break;
    Uint8* fragment = nullptr;
    if (length > 0) {
      if (item->getUint8Array(fragment).bad() || fragment == nullptr) {
        return absl::InvalidArgumentError("unreadable compressed fragment");
      }
      out.append(reinterpret_cast<const char*>(fragment), length);
    }
    position += 8 + static_cast<uint64_t>(length);
    if (frames > 1 && offsets.size() < 2) {
      if (static_cast<int64_t>(items - 1) == frames) break;  // one fragment per frame
      if (fragment != nullptr && ends_with_eoc(fragment, length)) break;
    }
  }
  if (out.empty()) return absl::InvalidArgumentError("encapsulated Pixel Data: frame 1 is empty");
  return out;
}

// OpenJPEG reads from memory through these callbacks.
struct OpjBuffer {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t offset = 0;
};

OPJ_SIZE_T opj_buffer_read(void* out, OPJ_SIZE_T n, void* user) {
  auto* b = static_cast<OpjBuffer*>(user);
  if (b->offset >= b->size) return static_cast<OPJ_SIZE_T>(-1);
  const size_t k = std::min(static_cast<size_t>(n), b->size - b->offset);
  std::memcpy(out, b->data + b->offset, k);
  b->offset += k;
  return k;
}

OPJ_OFF_T opj_buffer_skip(OPJ_OFF_T n, void* user) {
  auto* b = static_cast<OpjBuffer*>(user);
  if (n < 0) {
    const OPJ_OFF_T back = std::min<OPJ_OFF_T>(-n, static_cast<OPJ_OFF_T>(b->offset));
    b->offset -= static_cast<size_t>(back);
    return -back;
  }
  const OPJ_OFF_T k = std::min<OPJ_OFF_T>(n, static_cast<OPJ_OFF_T>(b->size - b->offset));
  b->offset += static_cast<size_t>(k);
  return k;
}

OPJ_BOOL opj_buffer_seek(OPJ_OFF_T position, void* user) {
  auto* b = static_cast<OpjBuffer*>(user);
  if (position < 0 || static_cast<uint64_t>(position) > b->size) return OPJ_FALSE;
  b->offset = static_cast<size_t>(position);
  return OPJ_TRUE;
}

void opj_collect_error(const char* message, void* user) {
  auto* errors = static_cast<std::string*>(user);
  if (errors->size() < 512) absl::StrAppend(errors, absl::StripTrailingAsciiWhitespace(message), "; ");
}
void opj_ignore_message(const char*, void*) {}

// opj_codec_t and opj_stream_t are the same type (void*): one deleter type each.
struct OpjCodecDeleter {
  void operator()(opj_codec_t* c) const { opj_destroy_codec(c); }
};
struct OpjStreamDeleter {
  void operator()(opj_stream_t* s) const { opj_stream_destroy(s); }
};
struct OpjImageDeleter {
  void operator()(opj_image_t* i) const { opj_image_destroy(i); }
};

absl::StatusOr<cv::Mat> decode_jpeg2000(const std::string& bitstream, const PixelDescription& p) {
  static const uint8_t kJp2Signature[] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20};
  static const uint8_t kJ2kSignature[] = {0xFF, 0x4F, 0xFF, 0x51};
  const auto* data = reinterpret_cast<const uint8_t*>(bitstream.data());
  OPJ_CODEC_FORMAT format;
  if (bitstream.size() >= 8 && std::memcmp(data, kJp2Signature, 8) == 0) {
    format = OPJ_CODEC_JP2;
  } else if (bitstream.size() >= 4 && std::memcmp(data, kJ2kSignature, 4) == 0) {
    format = OPJ_CODEC_J2K;
  } else {
    return absl::InvalidArgumentError("corrupt JPEG 2000 data: frame 1 is not a JPEG 2000 codestream");
  }
  std::unique_ptr<opj_codec_t, OpjCodecDeleter> codec(opj_create_decompress(format));
  if (!codec) return absl::InternalError("OpenJPEG: cannot create a decoder");
  std::string errors;
  opj_set_error_handler(codec.get(), opj_collect_error, &errors);
  opj_set_warning_handler(codec.get(), opj_ignore_message, nullptr);
  opj_set_info_handler(codec.get(), opj_ignore_message, nullptr);
  opj_dparameters_t parameters;
  opj_set_default_decoder_parameters(&parameters);
  if (!opj_setup_decoder(codec.get(), &parameters)) return absl::InternalError("OpenJPEG: decoder set-up failed");
  opj_decoder_set_strict_mode(codec.get(), OPJ_TRUE);  // a truncated codestream is an error, not a blurry image

  OpjBuffer buffer{data, bitstream.size(), 0};
  std::unique_ptr<opj_stream_t, OpjStreamDeleter> stream(opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE));
  if (!stream) return absl::InternalError("OpenJPEG: cannot create a stream");
  opj_stream_set_user_data(stream.get(), &buffer, nullptr);
  opj_stream_set_user_data_length(stream.get(), bitstream.size());
  opj_stream_set_read_function(stream.get(), opj_buffer_read);
  opj_stream_set_skip_function(stream.get(), opj_buffer_skip);
  opj_stream_set_seek_function(stream.get(), opj_buffer_seek);

  opj_image_t* raw_image = nullptr;
  const bool header_ok = opj_read_header(stream.get(), codec.get(), &raw_image);
  std::unique_ptr<opj_image_t, OpjImageDeleter> image(raw_image);
  if (!header_ok || !image) return absl::InvalidArgumentError("corrupt JPEG 2000 header: " + errors);
  const int64_t width = static_cast<int64_t>(image->x1) - image->x0;
  const int64_t height = static_cast<int64_t>(image->y1) - image->y0;
  if (width != p.columns || height != p.rows || static_cast<int>(image->numcomps) != p.samples_per_pixel) {
    return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 codestream is ", width, " x ", height, " x ",
                                                   image->numcomps, ", the dataset says ", p.columns, " x ", p.rows,
                                                   " x ", p.samples_per_pixel));
  }
  for (OPJ_UINT32 c = 0; c < image->numcomps; ++c) {
    const opj_image_comp_t& comp = image->comps[c];
    if (comp.dx != 1 || comp.dy != 1 || comp.w != width || comp.h != height) {
      return absl::UnimplementedError("JPEG 2000 with subsampled components is not supported");
    }
    if (comp.prec < 1 || static_cast<int>(comp.prec) > p.bits_allocated) {
      return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 component precision ", comp.prec,
                                                     " exceeds Bits Allocated ", p.bits_allocated));
    }
  }
  if (!opj_decode(codec.get(), stream.get(), image.get()) || !opj_end_decompress(codec.get(), stream.get())) {
    return absl::InvalidArgumentError("corrupt JPEG 2000 stream: " + errors);
  }
  const int spp = p.samples_per_pixel;
  const int depth = p.bits_allocated == 8 ? CV_8U : CV_16U;
  cv::Mat out(static_cast<int>(height), static_cast<int>(width), CV_MAKETYPE(depth, spp));
  const size_t pixels = static_cast<size_t>(width) * static_cast<size_t>(height);
  for (int c = 0; c < spp; ++c) {
    const OPJ_INT32* src = image->comps[c].data;
    if (src == nullptr) return absl::InvalidArgumentError("corrupt JPEG 2000 stream: a component has no data");
    if (depth == CV_8U) {
      auto* dst = out.ptr<uint8_t>(0);
      for (size_t i = 0; i < pixels; ++i) dst[i * spp + c] = static_cast<uint8_t>(src[i]);
    } else {
      auto* dst = out.ptr<uint16_t>(0);
      for (size_t i = 0; i < pixels; ++i) dst[i * spp + c] = static_cast<uint16_t>(src[i]);
    }
  }
  return out;
}

bool is_dcmjpeg(E_TransferSyntax xfer) {
  return (xfer >= EXS_JPEGProcess1 && xfer <= EXS_JPEGProcess29) || xfer == EXS_JPEGProcess14SV1;
}

// DCMTK 3.6.7's DJCodecDecoder::scanJpegDataForBitDepth never steps past a TEM marker (FF01) met before the
// frame header: an endless loop on a 2 KB input (cmn-dicom-fuzzer). This walks the fragment the way that
// function does and says whether it would reach such a marker.
bool jpeg_bit_depth_scan_would_hang(const uint8_t* data, uint32_t length) {
  uint32_t offset = 0;
  while (offset + 4 < length) {
    const uint32_t marker = (static_cast<uint32_t>(data[offset]) << 8) | data[offset + 1];
    const uint32_t segment = (static_cast<uint32_t>(data[offset + 2]) << 8) | data[offset + 3];
    if (marker == 0xFF01) return true;
    if ((marker >= 0xFFC0 && marker <= 0xFFCF && marker != 0xFFC4 && marker != 0xFFC8 && marker != 0xFFCC)) {
      return false;  // a frame header (SOF): the scan returns
    }
    if (marker == 0xFFC4 || marker == 0xFFC8 || marker == 0xFFCC || (marker >= 0xFFDA && marker <= 0xFFDF) ||
        (marker >= 0xFFE0 && marker <= 0xFFFE)) {
      offset += segment + 2;
    } else if ((marker >= 0xFFD0 && marker <= 0xFFD9)) {
      offset += 2;
    } else if (marker == 0xFFFF) {
      offset += 1;
    } else if (data[offset] == 0xFF && data[offset + 1] > 2 && data[offset + 1] <= 0xBF) {
      offset += 2;
    } else {
      return false;  // invalid marker: the scan stops
    }
  }
  return false;
}

absl::Status check_jpeg_first_fragment(DcmPixelData* pixel_data) {
  E_TransferSyntax rep_type = EXS_Unknown;
  const DcmRepresentationParameter* rep_param = nullptr;
  pixel_data->getOriginalRepresentationKey(rep_type, rep_param);
  DcmPixelSequence* sequence = nullptr;
  DcmPixelItem* item = nullptr;
  Uint8* data = nullptr;
  if (pixel_data->getEncapsulatedRepresentation(rep_type, rep_param, sequence).bad() || sequence == nullptr ||
      sequence->getItem(item, 1).bad() || item == nullptr || item->getUint8Array(data).bad() || data == nullptr) {
    return absl::OkStatus();  // nothing to scan: DCMTK's decoder reports it
  }
  if (jpeg_bit_depth_scan_would_hang(data, item->getLength())) {
    return absl::InvalidArgumentError("corrupt compressed stream: JPEG marker FF01 (TEM) before the frame header");
  }
  return absl::OkStatus();
}

// A DCMTK codec (JPEG, JPEG-LS, RLE) decodes frame 1 only, through DcmPixelData::getUncompressedFrame:
// chooseRepresentation would decompress every frame (a multi-frame object is a decompression bomb).
absl::StatusOr<cv::Mat> dcmtk_codec_frame(DcmDataset* ds, DcmPixelData* pixel_data, E_TransferSyntax xfer,
                                          PixelDescription* p, int planar_configuration) {
  const size_t full_frame = static_cast<size_t>(p->rows) * p->columns * p->samples_per_pixel * bytes_per_sample(*p);
  if (is_dcmjpeg(xfer)) CMN_RETURN_IF_ERROR(check_jpeg_first_fragment(pixel_data));
  Uint32 dcmtk_frame = 0;
  if (pixel_data->getUncompressedFrameSize(ds, dcmtk_frame).bad()) {
    return absl::InvalidArgumentError("cannot compute the size of a decoded frame");
  }
  const int depth = p->bits_allocated == 8 ? CV_8U : CV_16U;
  cv::Mat out(static_cast<int>(p->rows), static_cast<int>(p->columns), CV_MAKETYPE(depth, p->samples_per_pixel));
  // Decode straight into `out` when DCMTK's frame fits it (an even size: codecs may swap 16-bit words);
  // otherwise through a buffer of DCMTK's size.
  const bool direct = dcmtk_frame <= full_frame && full_frame % 2 == 0;
  std::vector<uint8_t> buffer;
  if (!direct) buffer.resize((std::max<size_t>(full_frame, dcmtk_frame) + 2) & ~size_t{1});
  uint8_t* target = direct ? out.data : buffer.data();
  const size_t target_size = direct ? full_frame : buffer.size();
  Uint32 start_fragment = 0;
  OFString colour_model;
  const OFCondition cond = pixel_data->getUncompressedFrame(ds, 0, start_fragment, target,
                                                            static_cast<Uint32>(target_size), colour_model);
  if (cond.bad()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot decode frame 1 (", DcmXfer(xfer).getXferName(),
                                                   "): corrupt compressed stream? (", condition_text(cond), ")"));
  }
  const std::string decoded_model = absl::AsciiStrToUpper(trimmed(colour_model));
  if (!decoded_model.empty()) p->photometric = decoded_model;
  if (p->samples_per_pixel == 3 && !is_supported_colour(p->photometric)) {
    return absl::UnimplementedError(absl::StrCat("decoded colour model '", p->photometric, "' is not supported"));
  }
  if (!direct) std::memcpy(out.data, buffer.data(), full_frame);
  if (p->samples_per_pixel == 3 && planar_configuration == 1) interleave_planes(&out);
  if (p->photometric == "YBR_FULL_422") p->photometric = "YBR_FULL";  // codecs remove the subsampling
  return out;
}

absl::StatusOr<cv::Mat> decode_frame1(DcmDataset* ds, E_TransferSyntax xfer, PixelDescription* p) {
  if (!ds->tagExists(DCM_PixelData)) {
    if (ds->tagExists(DCM_FloatPixelData) || ds->tagExists(DCM_DoubleFloatPixelData)) {
      return absl::UnimplementedError("Float / Double Float Pixel Data is not supported");
    }
    return absl::InvalidArgumentError("no Pixel Data (7FE0,0010)");
  }
  DcmElement* element = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, element).bad() || element == nullptr) {
    return absl::InvalidArgumentError("Pixel Data (7FE0,0010) is unreadable");
  }
  auto* pixel_data = dynamic_cast<DcmPixelData*>(element);
  if (pixel_data == nullptr) return absl::InvalidArgumentError("Pixel Data (7FE0,0010) has an unexpected type");
  const int planar_configuration =
      p->samples_per_pixel == 3 ? static_cast<int>(get_uint16(ds, DCM_PlanarConfiguration).value_or(0)) : 0;
  const DcmXfer xfer_info(xfer);
  if (!xfer_info.isEncapsulated()) {
    cv::Mat frame;
    CMN_ASSIGN_OR_RETURN(frame, native_frame(pixel_data, *p, planar_configuration));
    if (p->photometric == "YBR_FULL_422") p->photometric = "YBR_FULL";
    return frame;
  }
  if (is_jpeg2000(xfer)) {
    E_TransferSyntax rep_type = EXS_Unknown;
    const DcmRepresentationParameter* rep_param = nullptr;
    pixel_data->getOriginalRepresentationKey(rep_type, rep_param);
    DcmPixelSequence* sequence = nullptr;
    if (pixel_data->getEncapsulatedRepresentation(rep_type, rep_param, sequence).bad() || sequence == nullptr) {
      return absl::InvalidArgumentError("JPEG 2000 transfer syntax but the Pixel Data is not encapsulated");
    }
    std::string bitstream;
    CMN_ASSIGN_OR_RETURN(bitstream, frame1_bitstream(sequence, p->frames));
    cv::Mat frame;
    CMN_ASSIGN_OR_RETURN(frame, decode_jpeg2000(bitstream, *p));
    if (p->samples_per_pixel == 3) p->photometric = "RGB";  // OpenJPEG applies the inverse ICT/RCT
    return frame;
  }
  if (!DcmCodecList::canChangeCoding(xfer, EXS_LittleEndianExplicit)) {
    return absl::UnimplementedError(absl::StrCat("unsupported transfer syntax ", xfer_info.getXferID(), " (",
                                                 xfer_info.getXferName(), ")"));
  }
  return dcmtk_codec_frame(ds, pixel_data, xfer, p, planar_configuration);
}

// ---------------------------------------------------------------------------------------------------------
// View classification (DCMTK-free; declared in dcmtk_bridge.h, documented in dicom.h)

enum class TextView { kNone, kPA, kAP, kLateral, kAmbiguous };

TextView view_from_words(const std::string& text, std::string* word) {
  TextView found = TextView::kNone;
  for (absl::string_view token : absl::StrSplit(text, absl::ByAnyChar(" \t,;:/\\_-.()[]+&"), absl::SkipEmpty())) {
    const std::string t = absl::AsciiStrToUpper(token);
    TextView v = TextView::kNone;
    if (t == "PA" || t == "POSTEROANTERIOR") v = TextView::kPA;
    if (t == "AP" || t == "ANTEROPOSTERIOR") v = TextView::kAP;
    if (t == "LAT" || t == "LATERAL" || t == "LL" || t == "RL" || t == "LLAT" || t == "RLAT") v = TextView::kLateral;
    if (v == TextView::kNone) continue;
    if (found != TextView::kNone && found != v) return TextView::kAmbiguous;
    found = v;
    *word = t;
  }
  return found;
}

}  // namespace

std::string instance_label(const std::string& sop_instance_uid, const std::string& source) {
  if (sop_instance_uid.empty()) return absl::StrCat("DICOM '", source, "'");
  return absl::StrCat("DICOM instance ", sop_instance_uid, " ('", source, "')");
}

ViewPosition classify_view(const ViewAttributes& a, std::string* evidence) {
  std::string laterality_note;
  if (!a.image_laterality.empty()) laterality_note = absl::StrCat("; ImageLaterality=", a.image_laterality);
  auto decide = [&](ViewPosition v, const std::string& why) {
    *evidence = why + laterality_note;
    return v;
  };
  // 1. ViewPosition
  const std::string vp = absl::AsciiStrToUpper(a.view_position);
  if (vp == "PA") return decide(ViewPosition::kPA, "ViewPosition=PA");
  if (vp == "AP") return decide(ViewPosition::kAP, "ViewPosition=AP");
  if (vp == "LL" || vp == "RL" || vp == "LAT" || vp == "LATERAL" || vp == "LLAT" || vp == "RLAT") {
    return decide(ViewPosition::kLateral, "ViewPosition=" + vp);
  }
  // 2. View Code Sequence
  for (size_t i = 0; i < a.view_code_values.size(); ++i) {
    const std::string& code = a.view_code_values[i];
    const std::string meaning = i < a.view_code_meanings.size() ? a.view_code_meanings[i] : "";
    const std::string why = absl::StrCat("ViewCodeSequence=", code, meaning.empty() ? "" : " (" + meaning + ")");
    if (code == "R-10214" || code == "399066004") return decide(ViewPosition::kPA, why);
    if (code == "R-10206" || code == "399348003") return decide(ViewPosition::kAP, why);
    if (code == "R-102CD" || code == "399067008" || code == "R-10232" || code == "399198007" || code == "R-10236" ||
        code == "399173006") {
      return decide(ViewPosition::kLateral, why);
    }
    const std::string m = absl::AsciiStrToLower(meaning);
    if (m.find("oblique") != std::string::npos || m.find("decubitus") != std::string::npos) continue;
    if (m.find("postero-anterior") != std::string::npos || m.find("posteroanterior") != std::string::npos) {
      return decide(ViewPosition::kPA, why);
    }
    if (m.find("antero-posterior") != std::string::npos || m.find("anteroposterior") != std::string::npos) {
      return decide(ViewPosition::kAP, why);
    }
    if (m.find("lateral") != std::string::npos) return decide(ViewPosition::kLateral, why);
  }
  // 3. PatientOrientation (row direction)
  bool frontal = false;
  std::string orientation_why;
  if (!a.patient_orientation.empty() && !a.patient_orientation[0].empty()) {
    const char row = static_cast<char>(std::toupper(static_cast<unsigned char>(a.patient_orientation[0][0])));
    orientation_why = "PatientOrientation=" + absl::StrJoin(a.patient_orientation, "\\");
    if (row == 'A' || row == 'P') return decide(ViewPosition::kLateral, orientation_why);
    frontal = row == 'L' || row == 'R';
  }
  // 4. Text
  const std::pair<const char*, const std::string*> texts[] = {{"SeriesDescription", &a.series_description},
                                                              {"ProtocolName", &a.protocol_name}};
  for (const auto& [name, text] : texts) {
    std::string word;
    const TextView v = view_from_words(*text, &word);
    const std::string why = absl::StrCat(name, " says ", word);
    if (v == TextView::kPA) return decide(ViewPosition::kPA, frontal ? orientation_why + ", " + why : why);
    if (v == TextView::kAP) return decide(ViewPosition::kAP, frontal ? orientation_why + ", " + why : why);
    if (v == TextView::kLateral && !frontal) return decide(ViewPosition::kLateral, why);
  }
  if (frontal) return decide(ViewPosition::kPA, orientation_why + " (frontal; AP/PA not stated, PA assumed)");
  // 5. Nothing decided
  return decide(ViewPosition::kOther, "no view attribute decided (ViewPosition, ViewCodeSequence, "
                                      "PatientOrientation, SeriesDescription, ProtocolName)");
}

absl::StatusOr<InstanceInfo> parse_instance_info(const std::string& bytes, const std::string& source,
                                                const DicomReadOptions& options) {
  Parsed parsed;
  CMN_ASSIGN_OR_RETURN(parsed, parse(bytes, source, options));
  return read_info(parsed, source);
}

absl::StatusOr<DecodedInstance> decode_instance(const std::string& bytes, const std::string& source,
                                                const DicomReadOptions& options) {
  Parsed parsed;
  CMN_ASSIGN_OR_RETURN(parsed, parse(bytes, source, options));
  DecodedInstance out;
  out.info = read_info(parsed, source);
  auto fail = [&](const absl::Status& s) {
    return instance_error(s.code(), out.info.sop_instance_uid, source, std::string(s.message()));
  };
  if (absl::Status s = read_pixel_description(parsed.dataset, options, &out.pixels); !s.ok()) return fail(s);
  if (!out.pixels.modality_lut_problem.empty()) {
    return fail(absl::InvalidArgumentError("unusable Modality LUT Sequence: " + out.pixels.modality_lut_problem));
  }
  absl::StatusOr<cv::Mat> frame = decode_frame1(parsed.dataset, parsed.xfer, &out.pixels);
  if (!frame.ok()) return fail(frame.status());
  out.frame = *std::move(frame);
  return out;
}

}  // namespace internal

const char* view_name(ViewPosition v) {
  switch (v) {
    case ViewPosition::kPA:
      return "PA";
    case ViewPosition::kAP:
      return "AP";
    case ViewPosition::kLateral:
      return "LATERAL";
    case ViewPosition::kOther:
      break;
  }
  return "OTHER";
}

absl::StatusOr<InstanceInfo> read_dicom_info(const std::string& bytes, const std::string& source,
                                             const DicomReadOptions& options) {
  return internal::parse_instance_info(bytes, source, options);
}

absl::StatusOr<DicomStoredPixels> read_dicom_stored_pixels(const std::string& bytes, const std::string& source,
                                                           const DicomReadOptions& options) {
  internal::DecodedInstance decoded;
  CMN_ASSIGN_OR_RETURN(decoded, internal::decode_instance(bytes, source, options));
  DicomStoredPixels out;
  out.info = std::move(decoded.info);
  out.photometric = decoded.pixels.photometric;
  out.samples_per_pixel = decoded.pixels.samples_per_pixel;
  out.bits_allocated = decoded.pixels.bits_allocated;
  out.bits_stored = decoded.pixels.bits_stored;
  out.high_bit = decoded.pixels.high_bit;
  out.is_signed = decoded.pixels.is_signed;
  out.frames = decoded.pixels.frames;
  out.frame = std::move(decoded.frame);
  return out;
}

}  // namespace cmn::preprocessing
