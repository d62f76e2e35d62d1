// check_zip_entry_sizes: the central directory walk that bounds what PyTorchStreamReader will allocate.
#include "zip_bounds.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <string>
#include <vector>

#include <c10/util/Exception.h>

namespace cmn::model::checkpoint_detail {

namespace {

constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint64_t kEocdSize = 22, kZip64LocatorSize = 20, kZip64EocdSize = 56, kCentralSize = 46;
constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint64_t kLocalHeaderSize = 30;
// LibTorch 1.13 reads file format versions 1..10 (caffe2/serialize/versions.h).
constexpr uint64_t kMinVersion = 1, kMaxVersion = 10;

uint64_t le(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

// CRC-32 (zip's), bitwise: only the few bytes of the version record go through it.
uint32_t crc32(const std::string& bytes) {
  uint32_t c = 0xffffffffu;
  for (unsigned char b : bytes) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

bool iequal(const std::string& a, const std::string& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string read_at(std::istream& in, uint64_t pos, uint64_t n) {
  in.clear();
  in.seekg(static_cast<std::streamoff>(pos));
  std::string buf(n, '\0');
  in.read(buf.data(), static_cast<std::streamsize>(n));
  TORCH_CHECK(in.gcount() == static_cast<std::streamsize>(n), "cannot read ", n, " bytes at offset ", pos);
  return buf;
}

// PyTorchStreamReader's constructor, after opening the zip, takes the folder of the first entry as the
// archive name and reads <folder>/.data/version or <folder>/version (miniz's lookup ignores case). Anything it
// then throws on (no such record, a damaged record, a version it cannot parse or does not support) leaks
// the zip state it opened (~700 bytes, LeakSanitizer in fuzz/), and a version too large for stoull escapes as
// std::out_of_range. So those are checked here first.
template <typename Entries>
void check_version_record(std::istream& in, uint64_t size, const Entries& entries) {
  TORCH_CHECK(!entries.empty(), "the archive has no files");
  const std::string& first = entries.front().name;
  const size_t slash = first.find('/');
  TORCH_CHECK(slash != std::string::npos, "the first file '", first, "' is not in a folder (torch.save writes one)");
  const std::string folder = first.substr(0, slash + 1);
  bool found = false;
  for (const char* record : {".data/version", "version"}) {
    for (const auto& e : entries) {
      if (!iequal(e.name, folder + record)) continue;
      found = true;
      // torch.save stores it; a deflated one (a re-zipped archive) came back empty from LibTorch's reader in
      // the fuzz run, which then threw from its constructor and leaked.
      TORCH_CHECK(e.method == 0, "'", e.name, "' is compressed (torch.save stores it)");
      // What miniz will not extract: encrypted or patch data (general purpose bits 0, 5, 6), a directory (DOS
      // attribute bit 4).
      TORCH_CHECK((e.flags & 0x61u) == 0 && (e.external & 0x10u) == 0, "'", e.name,
                  "' is marked encrypted, patch data or a directory");
      TORCH_CHECK(e.comp <= 32, "'", e.name, "' has ", e.comp, " bytes; a version number has a few");
      const std::string header = read_at(in, e.local, kLocalHeaderSize);
      TORCH_CHECK(le(header.data(), 4) == kLocalSig, "'", e.name, "' has no local header at offset ", e.local);
      const uint64_t data = e.local + kLocalHeaderSize + le(header.data() + 26, 2) + le(header.data() + 28, 2);
      TORCH_CHECK(data <= size && e.comp <= size - data, "'", e.name, "' runs past the end of the file");
      const std::string text = read_at(in, data, e.comp);
      TORCH_CHECK(crc32(text) == e.crc, "'", e.name, "' does not match its CRC-32");
      uint64_t version = 0;
      try {
        version = std::stoull(text);  // what LibTorch calls (caffe2::stoull)
      } catch (const std::exception&) {
        TORCH_CHECK(false, "'", e.name, "' holds no version number");
      }
      TORCH_CHECK(version >= kMinVersion && version <= kMaxVersion, "file format version ", version,
                  " is not one LibTorch 1.13 reads (", kMinVersion, "..", kMaxVersion, ")");
    }
    if (found) break;  // .data/version wins when present, as in LibTorch
  }
  TORCH_CHECK(found, "no version record in '", folder, "' (torch.save writes ", folder, "version)");
}

}  // namespace

void check_zip_entry_sizes(std::istream& in, uint64_t size) {
  TORCH_CHECK(size >= kEocdSize, "no end of central directory (", size, " bytes)");
  // miniz takes the signature nearest the end that leaves room for the record, within 64 KiB + 22 bytes.
  const uint64_t tail_len = std::min<uint64_t>(size, 0xffff + kEocdSize);
  const std::string tail = read_at(in, size - tail_len, tail_len);
  int64_t found = -1;
  for (int64_t i = static_cast<int64_t>(tail_len) - static_cast<int64_t>(kEocdSize); i >= 0; --i) {
    if (le(tail.data() + i, 4) == kEocdSig) {
      found = i;
      break;
    }
  }
  TORCH_CHECK(found >= 0, "no end of central directory record");
  const uint64_t eocd = size - tail_len + static_cast<uint64_t>(found);
  const char* e = tail.data() + found;
  uint64_t entries = le(e + 10, 2), cd_size = le(e + 12, 4), cd_offset = le(e + 16, 4);

  if (eocd >= kZip64LocatorSize) {
    const std::string loc = read_at(in, eocd - kZip64LocatorSize, kZip64LocatorSize);
    if (le(loc.data(), 4) == kZip64LocatorSig) {
      const uint64_t z64 = le(loc.data() + 8, 8);
      TORCH_CHECK(z64 <= size && size - z64 >= kZip64EocdSize, "zip64 end of central directory outside the file");
      const std::string r = read_at(in, z64, kZip64EocdSize);
      TORCH_CHECK(le(r.data(), 4) == kZip64EocdSig, "bad zip64 end of central directory signature");
      entries = le(r.data() + 32, 8);
      cd_size = le(r.data() + 40, 8);
      cd_offset = le(r.data() + 48, 8);
    }
  }
  TORCH_CHECK(cd_offset <= size && cd_size <= size - cd_offset, "central directory (", cd_size, " bytes at ",
              cd_offset, ") outside a file of ", size, " bytes");
  TORCH_CHECK(entries <= cd_size / kCentralSize, "central directory of ", cd_size, " bytes cannot hold ", entries,
              " entries");
  const std::string cd = read_at(in, cd_offset, cd_size);

  struct Entry {
    std::string name;
    uint64_t method, comp, local, crc, flags, external;
  };
  std::vector<Entry> listed;
  uint64_t pos = 0;
  for (uint64_t n = 0; n < entries; ++n) {
    TORCH_CHECK(cd_size - pos >= kCentralSize && le(cd.data() + pos, 4) == kCentralSig, "central directory entry ", n,
                " is damaged");
    const char* h = cd.data() + pos;
    const uint64_t method = le(h + 10, 2);
    uint64_t comp = le(h + 20, 4), uncomp = le(h + 24, 4), local = le(h + 42, 4);
    const uint64_t name_len = le(h + 28, 2), extra_len = le(h + 30, 2), comment_len = le(h + 32, 2);
    TORCH_CHECK(cd_size - pos - kCentralSize >= name_len + extra_len + comment_len, "central directory entry ", n,
                " runs past the directory");
    const std::string name(h + kCentralSize, name_len);
    // zip64: the 32-bit fields that are all ones come from the 0x0001 extra field, in this order.
    const char* x = h + kCentralSize + name_len;
    for (uint64_t xp = 0; xp + 4 <= extra_len;) {
      const uint64_t id = le(x + xp, 2), len = le(x + xp + 2, 2);
      TORCH_CHECK(xp + 4 + len <= extra_len, "entry '", name, "' has a damaged extra field");
      if (id == 0x0001) {
        uint64_t f = xp + 4;
        for (uint64_t* field : {&uncomp, &comp, &local}) {
          if (*field != 0xffffffffu) continue;
          TORCH_CHECK(f + 8 <= xp + 4 + len, "entry '", name, "' has a short zip64 extra field");
          *field = le(x + f, 8);
          f += 8;
        }
      }
      xp += 4 + len;
    }
    TORCH_CHECK(method == 0 || method == 8, "entry '", name, "' uses compression method ", method,
                " (only stored and deflated entries are read)");
    TORCH_CHECK(local <= size && size - local >= kLocalHeaderSize && comp <= size - local - kLocalHeaderSize,
                "entry '", name, "' declares ", comp, " bytes at offset ", local, ", past the end of a ", size,
                "-byte file");
    if (method == 0) {
      TORCH_CHECK(uncomp == comp, "stored entry '", name, "' declares ", uncomp, " bytes but holds ", comp);
    } else {
      TORCH_CHECK(uncomp / kMaxDeflateRatio <= comp, "deflated entry '", name, "' declares ", uncomp,
                  " bytes from ", comp, " compressed ones, more than deflate can expand");
    }
    listed.push_back({name, method, comp, local, le(h + 16, 4), le(h + 8, 2), le(h + 38, 4)});
    pos += kCentralSize + name_len + extra_len + comment_len;
  }
  check_version_record(in, size, listed);
  in.clear();
}

}  // namespace cmn::model::checkpoint_detail
