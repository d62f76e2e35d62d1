// Hostile checkpoints: what the fuzz target (fuzz/checkpoint_fuzzer.cc) and a review of the reader found.
// Each test is one finding: declared sizes that made LibTorch's zip reader allocate what they said, a tensor
// whose declared shape was materialised by a copy, nesting that overflowed the stack when freed, and
// self-referencing containers that leaked. Archives are built in memory (PyTorchStreamWriter's writer_func)
// and read with read_checkpoint_bytes, whose path twin read_checkpoint shares the implementation.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>

#include "cmn/model/checkpoint.h"
#include "model/c10_error.h"

namespace cmn::model {
namespace {

std::string archive(const std::string& data_pkl, const std::map<std::string, std::string>& records = {}) {
  std::string out;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&out](const void* p, size_t n) {
      out.append(static_cast<const char*>(p), n);
      return n;
    });
    writer.writeRecord("data.pkl", data_pkl.data(), data_pkl.size());
    for (const auto& [name, bytes] : records) writer.writeRecord(name, bytes.data(), bytes.size());
    writer.writeEndOfFile();
  }
  return out;
}

using cmn::testing::error_of;

uint32_t le32(const std::string& s, size_t at) {
  uint32_t v;
  std::memcpy(&v, s.data() + at, 4);
  return v;  // the tests run on little-endian hosts only (as the reader requires)
}

void put16(std::string& s, size_t at, uint16_t v) { std::memcpy(s.data() + at, &v, 2); }
void put32(std::string& s, size_t at, uint32_t v) { std::memcpy(s.data() + at, &v, 4); }

uint32_t crc32_of(const std::string& bytes) {
  uint32_t c = 0xffffffffu;
  for (unsigned char b : bytes) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0xedb88320u : c >> 1;
  }
  return ~c;
}

// Offset of the central directory header whose file name ends with `suffix`.
size_t central_entry(const std::string& zip, const std::string& suffix) {
  for (size_t i = 0; i + 46 <= zip.size(); ++i) {
    if (le32(zip, i) != 0x02014b50) continue;
    uint16_t name_len;
    std::memcpy(&name_len, zip.data() + i + 28, 2);
    const std::string name = zip.substr(i + 46, name_len);
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) return i;
  }
  ADD_FAILURE() << "no central directory entry for " << suffix;
  return 0;
}

// Bytes of a literal that may hold NULs (without the terminating one).
template <size_t N>
std::string B(const char (&s)[N]) {
  return std::string(s, N - 1);
}

const std::string kStopDict = B("\x80\x02}.");  // PROTO 2, EMPTY_DICT, STOP

TEST(CheckpointHostileTest, PlainArchiveReads) {
  EXPECT_TRUE(read_checkpoint_bytes(archive(kStopDict)).state_dict.empty());
}

// Finding 1: the zip reader allocates each record's declared (uncompressed) size before reading it, and its
// constructor reads `version`. A deflated entry declaring 4 GB from a few bytes is now refused up front.
TEST(CheckpointHostileTest, DeclaredEntrySizeBeyondWhatTheBytesCanHoldIsRefused) {
  std::string zip = archive(kStopDict);
  const size_t cd = central_entry(zip, "/version");
  put16(zip, cd + 10, 8);            // method: deflated
  put32(zip, cd + 24, 0xfffffff0u);  // uncompressed size: ~4 GiB
  const std::string msg = error_of([&] { read_checkpoint_bytes(zip); });
  EXPECT_NE(msg.find("damaged zip archive"), std::string::npos) << msg;
  EXPECT_NE(msg.find("more than deflate can expand"), std::string::npos) << msg;

  // A stored entry must hold exactly what it declares.
  zip = archive(kStopDict);
  put32(zip, central_entry(zip, "/data.pkl") + 24, 0x7ffffff0u);
  EXPECT_NE(error_of([&] { read_checkpoint_bytes(zip); }).find("declares"), std::string::npos);
}

// Finding 1b (LeakSanitizer in the fuzz target): PyTorchStreamReader's constructor opens the zip, then throws
// on a missing or unsupported version record without closing it (~700 bytes leaked per read). The record is
// now checked first. Renaming it, or writing a version LibTorch does not read, gives our error.
TEST(CheckpointHostileTest, VersionRecordIsCheckedBeforeLibTorchOpensTheArchive) {
  std::string zip = archive(kStopDict);
  for (size_t at = zip.find("archive/version"); at != std::string::npos; at = zip.find("archive/version", at + 1)) {
    zip[at + 14] = 'X';  // local header and central directory name: archive/versioX
  }
  EXPECT_NE(error_of([&] { read_checkpoint_bytes(zip); }).find("no version record"), std::string::npos);

  zip = archive(kStopDict);
  const size_t cd = central_entry(zip, "/version");
  uint32_t local;
  std::memcpy(&local, zip.data() + cd + 42, 4);
  uint16_t name_len, extra_len;
  std::memcpy(&name_len, zip.data() + local + 26, 2);
  std::memcpy(&extra_len, zip.data() + local + 28, 2);
  const size_t data = local + 30 + name_len + extra_len;
  ASSERT_EQ(le32(zip, cd + 20), 2u) << "expected a two-byte version record";
  zip.replace(data, 2, "99");
  const uint32_t crc = crc32_of("99");  // keep the CRC right, so only the version itself is wrong
  put32(zip, local + 14, crc);
  put32(zip, cd + 16, crc);
  const std::string msg = error_of([&] { read_checkpoint_bytes(zip); });
  EXPECT_NE(msg.find("file format version 99 is not one LibTorch 1.13 reads"), std::string::npos) << msg;

  // A deflated version record came back empty from LibTorch's reader, which then threw from its constructor.
  zip = archive(kStopDict);
  put16(zip, central_entry(zip, "/version") + 10, 8);
  EXPECT_NE(error_of([&] { read_checkpoint_bytes(zip); }).find("is compressed"), std::string::npos);

  // Nor one marked encrypted ("unsupported encryption" from the constructor).
  zip = archive(kStopDict);
  put16(zip, central_entry(zip, "/version") + 8, 1);
  EXPECT_NE(error_of([&] { read_checkpoint_bytes(zip); }).find("marked encrypted"), std::string::npos);
}

// Finding 2: a tensor whose strides overlap (stride 0, as expand() saves) was cloned, allocating its declared
// element count: here 2^40 floats (4 TiB) over a one-element record. It is now kept as a view.
TEST(CheckpointHostileTest, OverlappingViewIsNotMaterialised) {
  std::string p = B("\x80\x02}X\x01\x00\x00\x00w");  // PROTO 2, EMPTY_DICT, BINUNICODE 'w'
  p += "ctorch._utils\n_rebuild_tensor_v2\n(";
  p += B("(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x01tQ");
  p += B("K\x00");                                        // storage offset 0
  p += B("\x8a\x06\x00\x00\x00\x00\x00\x01\x85");         // size (2^40,) as LONG1 + TUPLE1
  p += B("K\x00\x85");                                     // stride (0,)
  p += "\x89" "ccollections\nOrderedDict\n)RtRs.";
  const float one = 1.5f;
  const CheckpointInfo info =
      read_checkpoint_bytes(archive(p, {{"data/0", std::string(reinterpret_cast<const char*>(&one), 4)}}));
  ASSERT_EQ(info.state_dict.size(), 1u);
  const torch::Tensor& t = info.state_dict[0].second;
  EXPECT_EQ(t.size(0), int64_t{1} << 40);
  EXPECT_EQ(t.stride(0), 0);
  EXPECT_EQ(t[12345].item<float>(), 1.5f);
}

// Finding 3: freeing a deeply nested object recursed once per level; a million TUPLE1 opcodes (1 MB)
// overflowed the stack. Values now free their children iteratively.
TEST(CheckpointHostileTest, DeepNestingIsFreedWithoutRecursion) {
  std::string p = B("\x80\x02}X\x01\x00\x00\x00wN");  // {'w': ((((None,),),)...)}
  p += std::string(1'000'000, '\x85');
  p += "s.";
  const std::string msg = error_of([&] { read_checkpoint_bytes(archive(p)); });
  EXPECT_NE(msg.find("entry 'w' is tuple of 1, not a tensor"), std::string::npos) << msg;
}

// Finding 4: a list or dict that holds itself (through the memo) was a shared_ptr cycle, leaked on every
// read (LeakSanitizer in the fuzz target). Cycles are refused and broken; failed reads free everything.
TEST(CheckpointHostileTest, SelfReferenceIsRefused) {
  // l = []; l.append(l)
  const std::string list_in_itself = B("\x80\x02]q\x00h\x00" "a.");
  EXPECT_NE(error_of([&] { read_checkpoint_bytes(archive(list_in_itself)); }).find("contains itself"),
            std::string::npos);
  // d = {}; d['k'] = (d,)
  const std::string dict_via_tuple = B("\x80\x02}q\x00X\x01\x00\x00\x00kh\x00\x85s.");
  EXPECT_NE(error_of([&] { read_checkpoint_bytes(archive(dict_via_tuple)); }).find("contains itself"),
            std::string::npos);
  // A shared (acyclic) reference is fine: d = {}; x = []; d['a'] = x; d['b'] = x
  const std::string shared = B("\x80\x02}X\x01\x00\x00\x00" "a]q\x00sX\x01\x00\x00\x00" "bh\x00s.");
  EXPECT_NE(error_of([&] { read_checkpoint_bytes(archive(shared)); }).find("entry 'a' is list of 0"),
            std::string::npos);
}

}  // namespace
}  // namespace cmn::model
