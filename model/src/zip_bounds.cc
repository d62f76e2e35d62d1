// check_zip_entry_sizes: the central directory walk that bounds what PyTorchStreamReader will allocate.
#include "zip_bounds.h"

#include <algorithm>
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
constexpr uint64_t kLocalHeaderSize = 30;

uint64_t le(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

std::string read_at(std::istream& in, uint64_t pos, uint64_t n) {
  in.clear();
  in.seekg(static_cast<std::streamoff>(pos));
  std::string buf(n, '\0');
  in.read(buf.data(), static_cast<std::streamsize>(n));
  TORCH_CHECK(in.gcount() == static_cast<std::streamsize>(n), "cannot read ", n, " bytes at offset ", pos);
  return buf;
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
    pos += kCentralSize + name_len + extra_len + comment_len;
  }
  in.clear();
}

}  // namespace cmn::model::checkpoint_detail
