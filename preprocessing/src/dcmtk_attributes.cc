// DCMTK set-up and the attribute getters every file of the DICOM layer uses (dcmtk_dataset.h).
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "dcmtk_dataset.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

namespace cmn::preprocessing::internal {
namespace {

// The string attributes read here are short (UI, CS, LO, DS, IS). A longer value is treated as absent: after a
// failed parse an element may still claim its bogus length, and reading it would allocate that much.
constexpr Uint32 kMaxStringValueLength = 64 * 1024;

bool has_short_value(DcmItem* item, const DcmTagKey& tag) {
  DcmElement* element = nullptr;
  return item->findAndGetElement(tag, element).good() && element != nullptr &&
         element->getLengthField() <= kMaxStringValueLength;
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

}  // namespace

// Codecs registered once; DCMTK's log output of the reading modules limited to FATAL, since every problem
// reaches the caller as an absl::Status (and stderr lines would break the one-line-per-failure contract of
// cmn-dicom-png).
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

absl::Status instance_error(absl::StatusCode code, const std::string& uid, const std::string& source,
                            const std::string& reason) {
  return absl::Status(code, absl::StrCat(instance_label(uid, source), ": ", reason));
}

std::string instance_label(const std::string& sop_instance_uid, const std::string& source) {
  if (sop_instance_uid.empty()) return absl::StrCat("DICOM '", source, "'");
  return absl::StrCat("DICOM instance ", sop_instance_uid, " ('", source, "')");
}

}  // namespace cmn::preprocessing::internal
