// write_checkpoint: a StateDict pickled as torch.save does (protocol 2, _rebuild_tensor_v2, optional R2GenCMN
// wrapper) into a zip archive PyTorch's torch.load reads, written durably.
#include "cmn/model/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <memory>
#include <unordered_set>

#include <unistd.h>

#include <caffe2/serialize/inline_container.h>

#include "checkpoint_internal.h"
#include "cmn/common/durable_write.h"
#include "pickle.h"

// LeakSanitizer is told about the one object leaked on purpose below (gcc: __SANITIZE_ADDRESS__; clang: the
// feature test).
#if defined(__SANITIZE_ADDRESS__)
#define CMN_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CMN_LSAN 1
#endif
#endif
#ifdef CMN_LSAN
#include <sanitizer/lsan_interface.h>
#endif

namespace cmn::model {

namespace {

using checkpoint_detail::host_is_little_endian;
using checkpoint_detail::storage_name;

// CPython's pickler splits SETITEMS into batches of 1000 (and uses SETITEM for a single pair); match it.
template <typename Emit>
void emit_items(pickle::Writer& w, size_t n, Emit&& emit_pair) {
  constexpr size_t kBatch = 1000;
  for (size_t begin = 0; begin < n; begin += kBatch) {
    const size_t end = std::min(n, begin + kBatch);
    if (end - begin == 1) {
      emit_pair(begin);
      w.setitem();
    } else {
      w.mark();
      for (size_t i = begin; i < end; ++i) emit_pair(i);
      w.setitems();
    }
  }
}

}  // namespace

void write_checkpoint(const std::string& path, const StateDict& state_dict, const CheckpointWriteOptions& options) {
  TORCH_CHECK(host_is_little_endian(), "write_checkpoint: only little-endian hosts are supported");
  const std::string& archive = options.archive_name;
  TORCH_CHECK(!archive.empty() && archive.find_first_of("/\\\n") == std::string::npos && archive != "." &&
                  archive != "..",
              "write_checkpoint: invalid archive name '", archive, "'");
  TORCH_CHECK(!options.location.empty() && options.location.find('\n') == std::string::npos,
              "write_checkpoint: invalid storage location '", options.location, "'");

  // Contiguous CPU copies: their bytes are the storage records and their strides are the standard ones.
  std::vector<torch::Tensor> tensors;
  tensors.reserve(state_dict.size());
  std::unordered_set<std::string> seen;
  for (const auto& [key, t] : state_dict) {
    TORCH_CHECK(seen.insert(key).second, "write_checkpoint: duplicate key '", key, "'");
    TORCH_CHECK(t.defined(), "write_checkpoint: tensor '", key, "' is undefined");
    TORCH_CHECK(storage_name(t.scalar_type()) != nullptr, "write_checkpoint: tensor '", key, "' has unsupported dtype ",
                t.scalar_type());
    tensors.push_back(t.detach().to(torch::kCPU).contiguous());
  }

  pickle::Writer w;
  auto emit_tensor = [&](size_t i) {
    const torch::Tensor& t = tensors[i];
    const std::vector<int64_t> sizes = t.sizes().vec();
    std::vector<int64_t> strides(sizes.size());
    int64_t running = 1;
    for (size_t d = sizes.size(); d-- > 0;) {
      strides[d] = running;
      running *= std::max<int64_t>(sizes[d], 1);
    }
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.mark();
    {  // persistent id ('storage', torch.<Type>Storage, key, location, numel)
      w.mark();
      w.string("storage");
      w.global("torch", storage_name(t.scalar_type()));
      w.string(std::to_string(i));
      w.string(options.location);
      w.integer(t.numel());
      w.tuple_from_mark();
      w.binpersid();
    }
    w.integer(0);  // storage offset
    w.int_tuple(sizes);
    w.int_tuple(strides);
    w.boolean(false);  // requires_grad
    w.ordered_dict();  // backward_hooks
    w.tuple_from_mark();
    w.reduce();
  };
  auto emit_state_dict = [&]() {
    if (options.ordered_dict) {
      w.ordered_dict();
    } else {
      w.empty_dict();
    }
    emit_items(w, state_dict.size(), [&](size_t i) {
      w.string(state_dict[i].first);
      emit_tensor(i);
    });
    if (options.ordered_dict) {
      // nn.Module.state_dict() attaches `_metadata` (per-module versions); an empty one keeps Python's
      // load_state_dict happy and is what the pickle of a real state_dict looks like.
      w.empty_dict();
      w.string("_metadata");
      w.ordered_dict();
      w.setitem();
      w.build();
    }
  };

  if (options.r2gencmn_wrapper) {
    // The trainer saves {'epoch', 'state_dict', 'optimizer', 'monitor_best'} in this order.
    w.empty_dict();
    w.mark();
    w.string("epoch");
    w.integer(options.epoch);
    w.string("state_dict");
    emit_state_dict();
    w.string("optimizer");
    w.empty_dict();
    w.string("monitor_best");
    w.floating(options.monitor_best);
    w.setitems();
  } else {
    emit_state_dict();
  }
  w.stop();

  // durable_write.h: temporary file beside `path`, fsync, rename, fsync of the folder. The temporary file's
  // name keeps `archive` before its last '.', which is where PyTorchStreamWriter takes the zip folder from.
  std::string error;
  // PyTorchStreamWriter reports a failed write as "file write failed" without the system's reason; the errno
  // its stream left behind is that reason (disk full, quota, I/O error), kept so the message can say it.
  int write_errno = 0;
  try {
    error = durable::replace_file(
        path,
        [&](const std::string& tmp) -> std::string {
          std::unique_ptr<caffe2::serialize::PyTorchStreamWriter> writer;
          errno = 0;
          try {
            writer = std::make_unique<caffe2::serialize::PyTorchStreamWriter>(tmp);
            TORCH_CHECK(writer->archiveName() == archive, "zip folder came out as '", writer->archiveName(),
                        "' instead of '", archive, "'");
            writer->writeRecord("data.pkl", w.data().data(), w.data().size());
            static const char kEmpty = 0;
            for (size_t i = 0; i < tensors.size(); ++i) {
              const torch::Tensor& t = tensors[i];
              const void* bytes = t.numel() > 0 ? t.data_ptr() : &kEmpty;
              writer->writeRecord("data/" + std::to_string(i), bytes, t.nbytes());
            }
            // writeEndOfFile adds the `version` record ("3\n", as in torch.save archives) and the zip directory.
            writer->writeEndOfFile();
            writer.reset();
          } catch (...) {
            write_errno = errno;
            // ~PyTorchStreamWriter (LibTorch 1.13) finalizes an unfinished archive and throws again when the zip
            // writer is in an error state (disk full, ...); from a destructor that is std::terminate. So the
            // writer is leaked (its miniz state and buffers, ~25 KB). Its open stream would keep the temporary
            // file's blocks allocated after replace_file unlinks it, so the file is emptied first: the space
            // comes back at once. LeakSanitizer is told the leak is deliberate (found by the ASan run of
            // FaultCli.BundleWriteOnAFullDiskFailsCleanlyAndKeepsTheOldBundle).
            if (writer && !writer->finalized()) {
              (void)::truncate(tmp.c_str(), 0);
              caffe2::serialize::PyTorchStreamWriter* leaked = writer.release();
#ifdef CMN_LSAN
              __lsan_ignore_object(leaked);
#else
              (void)leaked;
#endif
            }
            throw;
          }
          return "";
        },
        archive);
  } catch (const c10::Error& e) {
    // Only the reasons a write itself gives: anything else in errno may be left over from an unrelated call.
    const bool system_reason = write_errno == ENOSPC || write_errno == EDQUOT || write_errno == EIO ||
                               write_errno == EFBIG || write_errno == EROFS;
    TORCH_CHECK(false, "cannot write checkpoint '", path, "': ",
                system_reason ? durable::errno_text(write_errno) + " (" : std::string(), e.what_without_backtrace(),
                system_reason ? ")" : "");
  }
  TORCH_CHECK(error.empty(), "cannot write checkpoint '", path, "': ", error);
}

}  // namespace cmn::model
