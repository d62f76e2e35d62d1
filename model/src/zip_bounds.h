#pragma once
// A check of a zip archive's declared entry sizes, run before caffe2::serialize::PyTorchStreamReader sees the
// archive. Why: that reader (LibTorch 1.13, miniz underneath) allocates a record's buffer from the size the
// central directory declares before reading a byte of it, and its constructor already does so for the
// `version` record, so a few crafted bytes could ask for gigabytes (or 2^60 bytes through a zip64 field).
// Private to cmn_model.
#include <cstdint>
#include <istream>

namespace cmn::model::checkpoint_detail {

// Deflate cannot expand more than ~1032:1, so a deflated entry declaring more is not a real one; stored
// entries (what torch.save writes) must declare exactly their compressed size.
inline constexpr uint64_t kMaxDeflateRatio = 1032;

// Finds the end of central directory record as miniz does (the last signature, scanning back at most ~64 KiB,
// with the zip64 locator in front of it when present) and checks every central directory entry: method
// stored or deflated, compressed size and local header inside the archive, uncompressed size equal to the
// compressed one (stored) or within kMaxDeflateRatio of it (deflated). Throws c10::Error naming the entry
// and the sizes. Also checks the version record LibTorch's reader reads while it is being constructed (see
// zip_bounds.cc: a throw there leaks). `in` is left at an unspecified position with its state cleared.
void check_zip_entry_sizes(std::istream& in, uint64_t archive_size);

}  // namespace cmn::model::checkpoint_detail
