// read_checkpoint: a torch.save zip archive (data.pkl + data/<key> storage records) unpickled into a StateDict,
// bare or inside R2GenCMN's {epoch, state_dict, optimizer, monitor_best} wrapper.
#include "cmn/model/checkpoint.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <unordered_map>

#include <caffe2/serialize/inline_container.h>

#include "checkpoint_internal.h"
#include "pickle.h"
#include "zip_bounds.h"

namespace cmn::model {

namespace {

using checkpoint_detail::host_is_little_endian;
using checkpoint_detail::shape_string;
using checkpoint_detail::storage_dtype;
using pickle::Value;
using pickle::ValuePtr;

int64_t as_int(const ValuePtr& v, const char* what) {
  TORCH_CHECK(v->kind == Value::Kind::integer, what, " is ", pickle::describe(*v), ", not an int");
  return v->integer;
}

std::vector<int64_t> as_int_tuple(const ValuePtr& v, const char* what) {
  TORCH_CHECK(v->kind == Value::Kind::tuple, what, " is ", pickle::describe(*v), ", not a tuple");
  std::vector<int64_t> out;
  out.reserve(v->items.size());
  for (const auto& item : v->items) {
    int64_t i = as_int(item, what);
    TORCH_CHECK(i >= 0, what, " has a negative entry ", i);
    out.push_back(i);
  }
  return out;
}

// Reads torch.save's objects out of one archive: storages come from `data/<key>` records (each read once,
// even when several tensors view the same storage), tensors from torch._utils' rebuild functions.
class ArchiveLoader {
 public:
  explicit ArchiveLoader(caffe2::serialize::PyTorchStreamReader& reader) : reader_(reader) {}

  ValuePtr persistent_load(const ValuePtr& pid) {
    TORCH_CHECK(pid->kind == Value::Kind::tuple && pid->items.size() == 5 &&
                    pid->items[0]->kind == Value::Kind::string && pid->items[0]->text == "storage",
                "unsupported persistent id ", pickle::describe(*pid), " (expected ('storage', type, key, location, numel))");
    const Value& cls = *pid->items[1];
    TORCH_CHECK(cls.kind == Value::Kind::global && cls.text == "torch", "unknown storage type ", pickle::describe(cls));
    const std::optional<c10::ScalarType> dtype = storage_dtype(cls.name);
    TORCH_CHECK(dtype.has_value(), "unknown storage type torch.", cls.name);
    TORCH_CHECK(pid->items[2]->kind == Value::Kind::string, "storage key is ", pickle::describe(*pid->items[2]));
    const std::string& key = pid->items[2]->text;
    const int64_t numel = as_int(pid->items[4], "storage numel");
    TORCH_CHECK(numel >= 0, "storage '", key, "' has negative numel ", numel);

    if (auto it = storages_.find(key); it != storages_.end()) {
      TORCH_CHECK(it->second->tensor.scalar_type() == *dtype && it->second->tensor.numel() == numel,
                  "storage '", key, "' is referenced with two different types or sizes");
      return it->second;
    }

    const std::string record = "data/" + key;
    TORCH_CHECK(reader_.hasRecord(record), "missing storage record '", record, "'");
    auto [data, nbytes] = reader_.getRecord(record);
    const auto itemsize = static_cast<int64_t>(c10::elementSize(*dtype));
    TORCH_CHECK(static_cast<uint64_t>(numel) <= nbytes / static_cast<uint64_t>(itemsize), "storage record '", record,
                "' has ", nbytes, " bytes, too few for ", numel, " elements of torch.", cls.name);

    torch::Tensor storage;
    const auto options = torch::TensorOptions().dtype(*dtype).device(torch::kCPU);
    if (numel == 0) {
      storage = torch::empty({0}, options);
    } else {
      // Zero copy: the tensor owns the buffer the zip reader allocated for the record.
      auto holder = std::make_shared<at::DataPtr>(std::move(data));
      storage = torch::from_blob(holder->get(), {numel}, [holder](void*) {}, options);
    }
    auto value = std::make_shared<Value>();
    value->kind = Value::Kind::storage;
    value->tensor = std::move(storage);
    storages_.emplace(key, value);
    return value;
  }

  ValuePtr reduce(const Value& callable, const ValuePtr& args) {
    if (callable.is_global("torch._utils", "_rebuild_tensor_v2")) {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      TORCH_CHECK(args->items.size() == 6 || args->items.size() == 7,
                  "_rebuild_tensor_v2 takes 6 or 7 arguments, got ", args->items.size());
      return rebuild_tensor(args);
    }
    if (callable.is_global("torch._utils", "_rebuild_tensor")) {
      // The pre-1.1 form: (storage, storage_offset, size, stride).
      TORCH_CHECK(args->items.size() == 4, "_rebuild_tensor takes 4 arguments, got ", args->items.size());
      return rebuild_tensor(args);
    }
    if (callable.is_global("torch._utils", "_rebuild_parameter") ||
        callable.is_global("torch._utils", "_rebuild_parameter_with_state")) {
      // (tensor, requires_grad, backward_hooks[, state]): a Parameter is just its tensor here.
      TORCH_CHECK(!args->items.empty() && args->items[0]->kind == Value::Kind::tensor, callable.name,
                  " expects a tensor, got ", args->items.empty() ? "nothing" : pickle::describe(*args->items[0]));
      return pickle::make_tensor(args->items[0]->tensor);
    }
    return nullptr;
  }

 private:
  ValuePtr rebuild_tensor(const ValuePtr& args) {
    const Value& storage = *args->items[0];
    TORCH_CHECK(storage.kind == Value::Kind::storage, "tensor storage is ", pickle::describe(storage));
    const int64_t offset = as_int(args->items[1], "tensor storage offset");
    const std::vector<int64_t> size = as_int_tuple(args->items[2], "tensor size");
    const std::vector<int64_t> stride = as_int_tuple(args->items[3], "tensor stride");
    TORCH_CHECK(size.size() == stride.size(), "tensor size ", shape_string(size), " and stride ", shape_string(stride),
                " differ in length");
    TORCH_CHECK(offset >= 0, "negative storage offset ", offset);

    // A crafted or damaged file must not make as_strided read outside the record: the last element addressed
    // (offset + sum((size_i - 1) * stride_i)) has to lie inside the storage.
    const int64_t storage_numel = storage.tensor.numel();
    int64_t numel = 1;
    int64_t last = offset;
    bool overflow = false;
    for (size_t i = 0; i < size.size(); ++i) {
      int64_t span = 0;
      overflow |= __builtin_mul_overflow(size[i], numel, &numel);
      if (size[i] > 0) {
        overflow |= __builtin_mul_overflow(size[i] - 1, stride[i], &span);
        overflow |= __builtin_add_overflow(last, span, &last);
      }
    }
    TORCH_CHECK(!overflow, "tensor size ", shape_string(size), " / stride ", shape_string(stride), " overflows");
    if (numel == 0) {
      TORCH_CHECK(offset <= storage_numel, "storage offset ", offset, " is past a storage of ", storage_numel, " elements");
    } else {
      TORCH_CHECK(last < storage_numel, "storage of ", storage_numel, " elements is too small for a tensor of size ",
                  shape_string(size), ", stride ", shape_string(stride), " at offset ", offset);
    }

    torch::Tensor t = storage.tensor.as_strided(size, stride, offset);
    // A view of the whole storage is kept as is (no copy; tensors tied to one storage stay tied, as with
    // torch.load). Anything partial is copied so it does not pin the rest of the storage. A view with more
    // elements than its storage (overlapping strides, e.g. stride 0 of an expand()) stays a view too: a copy
    // would allocate what the declared size says, e.g. 2^40 elements over a one-element record.
    const bool whole = offset == 0 && numel == storage_numel && t.is_contiguous();
    if (!whole && numel <= storage_numel) t = t.clone();
    return pickle::make_tensor(std::move(t));
  }

  caffe2::serialize::PyTorchStreamReader& reader_;
  std::unordered_map<std::string, ValuePtr> storages_;
};

StateDict to_state_dict(const Value& dict, const std::string& what) {
  StateDict out;
  out.reserve(dict.entries.size());
  for (const auto& [key, value] : dict.entries) {
    TORCH_CHECK(key->kind == Value::Kind::string, what, " has a key that is ", pickle::describe(*key), ", not a str");
    TORCH_CHECK(value->kind == Value::Kind::tensor, what, " entry '", key->text, "' is ", pickle::describe(*value),
                ", not a tensor");
    out.emplace_back(key->text, value->tensor);
  }
  return out;
}

// `in` holds the whole archive; `zip_magic` says whether it starts like a zip (for the error message).
CheckpointInfo read_checkpoint_impl(std::istream& in) {
  TORCH_CHECK(host_is_little_endian(), "only little-endian hosts are supported");
  bool zip_magic = false;
  uint64_t size = 0;
  {
    // The zip reader's messages are about fopen and central directories; say plainly what is wrong.
    char magic[4] = {};
    in.read(magic, sizeof magic);
    zip_magic = in.gcount() == 4 && std::memcmp(magic, "PK\x03\x04", 4) == 0;
    in.clear();
    in.seekg(0, std::ios::end);
    size = static_cast<uint64_t>(in.tellg());
    in.seekg(0);
  }
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    checkpoint_detail::check_zip_entry_sizes(in, size);
    in.seekg(0);
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(&in);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, zip_magic ? "damaged zip archive (truncated?): " : "not a zip archive (torch.save writes one): ",
                e.what_without_backtrace());
  } catch (const std::exception& e) {
    // LibTorch's reader lets a few standard exceptions out (stoull on the version record); the contract here
    // is c10::Error only.
    TORCH_CHECK(false, "damaged zip archive: ", e.what());
  }
  TORCH_CHECK(reader->hasRecord("data.pkl"), "no data.pkl in the archive (a TorchScript file or not torch.save?)");
  if (reader->hasRecord("byteorder")) {
    auto [data, n] = reader->getRecord("byteorder");
    const std::string order(static_cast<const char*>(data.get()), n);
    TORCH_CHECK(order == "little", "storages are stored in '", order, "' byte order; only little is supported");
  }

  auto [pkl, pkl_size] = reader->getRecord("data.pkl");
  ArchiveLoader loader(*reader);
  pickle::UnpicklerHooks hooks;
  hooks.persistent_load = [&](const ValuePtr& pid) { return loader.persistent_load(pid); };
  hooks.reduce = [&](const Value& callable, const ValuePtr& args) { return loader.reduce(callable, args); };
  ValuePtr root;
  try {
    root = pickle::unpickle(static_cast<const char*>(pkl.get()), pkl_size, hooks);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "data.pkl: ", e.what_without_backtrace());
  }

  TORCH_CHECK(root->kind == Value::Kind::dict, "the saved object is ", pickle::describe(*root), ", not a dict");
  CheckpointInfo info;
  ValuePtr state = root->dict_get("state_dict");
  if (state && state->kind == Value::Kind::dict) {
    // An R2GenCMN checkpoint {epoch, state_dict, optimizer, monitor_best}.
    for (const auto& [key, value] : root->entries) {
      info.top_level_keys.push_back(key->kind == Value::Kind::string ? key->text : pickle::describe(*key));
    }
    if (ValuePtr epoch = root->dict_get("epoch"); epoch && epoch->kind == Value::Kind::integer) {
      info.epoch = epoch->integer;
    }
    info.state_dict = to_state_dict(*state, "state_dict");
  } else {
    info.state_dict = to_state_dict(*root, "the saved dict (taken as a bare state_dict)");
  }
  return info;
}

}  // namespace

CheckpointInfo read_checkpoint(const std::string& path) {
  try {
    std::ifstream in(path, std::ios::binary);
    TORCH_CHECK(in.good(), "cannot open file: ", std::strerror(errno));
    return read_checkpoint_impl(in);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "cannot read checkpoint '", path, "': ", e.what_without_backtrace());
  }
}

CheckpointInfo read_checkpoint_bytes(const std::string& bytes) {
  try {
    std::istringstream in(bytes);
    return read_checkpoint_impl(in);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "cannot read checkpoint (", bytes.size(), " bytes in memory): ", e.what_without_backtrace());
  }
}

}  // namespace cmn::model
