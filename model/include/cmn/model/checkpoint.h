#pragma once
// Reading and writing PyTorch `torch.save` archives (the zip format of PyTorch >= 1.6) without Python.
//
// Why not torch::pickle_load: LibTorch 1.13's unpickler turns `collections.OrderedDict` into None and then
// aborts on SETITEMS ("Expected GenericDict but got None"); every state_dict is an OrderedDict. So we read
// the subset of pickle protocol 2 that torch.save writes ourselves, and take the tensor records from the zip
// with caffe2::serialize::PyTorchStreamReader, which LibTorch ships.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace cmn::model {

// A state_dict in file order: (key, tensor). Tensors are on the CPU, in the dtype stored in the file.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

struct CheckpointInfo {
  StateDict state_dict;
  int64_t epoch = -1;               // `epoch` of an R2GenCMN checkpoint, -1 when absent
  std::vector<std::string> top_level_keys;  // keys of the top-level dict, in file order (empty if the file IS the state_dict)
};

// Reads a torch.save zip. The top-level object may be an R2GenCMN checkpoint {epoch, state_dict, optimizer,
// monitor_best} (its `state_dict` is taken) or a bare state_dict. Dicts may be plain or OrderedDict; tensors
// may be float32/float16/bfloat16/float64/int64/... and saved from any device ("cpu", "cuda:0", ...): they
// are always materialised on the CPU. Anything else in the file (optimizer state, numbers) is parsed and
// skipped. Throws c10::Error with the file name and the reason (not a zip, no data.pkl, unsupported pickle
// opcode, missing storage record, storage too small for a tensor's size/stride, ...).
CheckpointInfo read_checkpoint(const std::string& path);
// The same from the archive's bytes in memory (what the fuzz target feeds; errors say "in memory" instead of
// the file name). Before LibTorch's zip reader runs, every entry's declared size is checked against the
// archive's (a stored entry must hold what it declares), so no declared size makes it allocate more than
// ~1000x the input.
CheckpointInfo read_checkpoint_bytes(const std::string& bytes);

struct CheckpointWriteOptions {
  bool ordered_dict = true;              // write state_dict as collections.OrderedDict (as PyTorch does)
  bool r2gencmn_wrapper = true;          // {epoch, state_dict, optimizer: {}, monitor_best} rather than bare
  int64_t epoch = 0;                     // `epoch` of the wrapper
  double monitor_best = 0.0;             // `monitor_best` of the wrapper
  std::string location = "cpu";          // storage location recorded in the pickle ("cpu", "cuda:0", ...)
  std::string archive_name = "archive";  // zip folder name (torch.save uses the file's stem)
};

// Writes tensors (contiguous copies, any dtype) in the torch.save zip format, loadable by torch.load in
// Python and by read_checkpoint. The write is durable (cmn/common/durable_write.h): a temporary file in the
// same folder, fsynced, renamed over `path`, then the folder fsynced; a failure leaves no temporary file.
void write_checkpoint(const std::string& path, const StateDict& state_dict, const CheckpointWriteOptions& options = {});

struct LoadReport {
  std::vector<std::string> loaded;
  std::vector<std::string> ignored;  // unexpected keys that the options allowed to be dropped
};

struct LoadStateOptions {
  // Keys in the file that the module does not have and that are fine to drop (exact names or prefixes
  // ending in '.'), e.g. buffers a reference model saves that we recompute.
  std::vector<std::string> ignorable_unexpected;
};

// Copies a state_dict into a module's parameters and buffers by name, casting to each parameter's dtype and
// device. Any missing key, unexpected key (not ignorable) or shape mismatch is a c10::Error that lists ALL of
// them with their names and shapes; the module is left unchanged in that case.
LoadReport load_state_dict(torch::nn::Module& module, const StateDict& state_dict, const LoadStateOptions& options = {});

// The module's parameters and buffers as a StateDict (names as registered), for write_checkpoint.
StateDict module_state_dict(const torch::nn::Module& module, const std::string& prefix = "");

}  // namespace cmn::model
