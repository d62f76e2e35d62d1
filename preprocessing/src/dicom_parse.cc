// Parsing: a Part 10 file or a bare dataset in memory -> DcmDataset, with the guards against hostile headers
// that DCMTK lacks (lengths beyond the data, deep nesting, deflate bombs). Decoding is pixel_decoding.cc's.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dcmtk_dataset.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcdict.h>
#include <dcmtk/dcmdata/dcistrma.h>
#include <dcmtk/dcmdata/dcmetinf.h>

#include <zlib.h>

namespace cmn::preprocessing::internal {
namespace {

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

}  // namespace

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

}  // namespace cmn::preprocessing::internal
