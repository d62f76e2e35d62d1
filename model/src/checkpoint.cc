#include "cmn/model/checkpoint.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <caffe2/serialize/inline_container.h>

#include "cmn/common/durable_write.h"
#include "pickle.h"

namespace cmn::model {

namespace {

using pickle::Value;
using pickle::ValuePtr;

struct StorageType {
  const char* name;  // torch.<name>
  c10::ScalarType dtype;
};

// The storage classes torch.save names in persistent ids (the legacy typed-storage names, which PyTorch 2.x
// still writes for compatibility).
constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", c10::ScalarType::Float},
    {"HalfStorage", c10::ScalarType::Half},
    {"BFloat16Storage", c10::ScalarType::BFloat16},
    {"DoubleStorage", c10::ScalarType::Double},
    {"LongStorage", c10::ScalarType::Long},
    {"IntStorage", c10::ScalarType::Int},
    {"ShortStorage", c10::ScalarType::Short},
    {"CharStorage", c10::ScalarType::Char},
    {"ByteStorage", c10::ScalarType::Byte},
    {"BoolStorage", c10::ScalarType::Bool},
    {"ComplexFloatStorage", c10::ScalarType::ComplexFloat},
    {"ComplexDoubleStorage", c10::ScalarType::ComplexDouble},
};

std::optional<c10::ScalarType> storage_dtype(const std::string& name) {
  for (const auto& t : kStorageTypes) {
    if (name == t.name) return t.dtype;
  }
  return std::nullopt;
}

const char* storage_name(c10::ScalarType dtype) {
  for (const auto& t : kStorageTypes) {
    if (t.dtype == dtype) return t.name;
  }
  return nullptr;
}

bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

std::string shape_string(c10::IntArrayRef sizes) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < sizes.size(); ++i) os << (i ? ", " : "") << sizes[i];
  os << "]";
  return os.str();
}

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
    // torch.load). Anything partial is copied so it does not pin the rest of the storage.
    if (!(offset == 0 && numel == storage_numel && t.is_contiguous())) t = t.clone();
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

CheckpointInfo read_checkpoint_impl(const std::string& path) {
  TORCH_CHECK(host_is_little_endian(), "only little-endian hosts are supported");
  bool zip_magic = false;
  {
    // The zip reader's messages are about fopen and central directories; say plainly what is wrong.
    std::ifstream probe(path, std::ios::binary);
    TORCH_CHECK(probe.good(), "cannot open file: ", std::strerror(errno));
    char magic[4] = {};
    probe.read(magic, sizeof magic);
    zip_magic = probe.gcount() == 4 && std::memcmp(magic, "PK\x03\x04", 4) == 0;
  }
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, zip_magic ? "damaged zip archive (truncated?): " : "not a zip archive (torch.save writes one): ",
                e.what_without_backtrace());
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

bool is_ignorable(const std::string& key, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (p.empty()) continue;
    if (key == p) return true;
    if (p.back() == '.' && key.compare(0, p.size(), p) == 0) return true;
  }
  return false;
}

}  // namespace

CheckpointInfo read_checkpoint(const std::string& path) {
  try {
    return read_checkpoint_impl(path);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "cannot read checkpoint '", path, "': ", e.what_without_backtrace());
  }
}

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
  try {
    error = durable::replace_file(
        path,
        [&](const std::string& tmp) -> std::string {
          std::unique_ptr<caffe2::serialize::PyTorchStreamWriter> writer;
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
            // ~PyTorchStreamWriter finalizes an unfinished archive and throws again when the zip writer is in
            // an error state (disk full, ...); from a destructor that is std::terminate. Leak the writer
            // instead: this is a rare error path and the object is small.
            if (writer && !writer->finalized()) (void)writer.release();
            throw;
          }
          return "";
        },
        archive);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "cannot write checkpoint '", path, "': ", e.what_without_backtrace());
  }
  TORCH_CHECK(error.empty(), "cannot write checkpoint '", path, "': ", error);
}

LoadReport load_state_dict(torch::nn::Module& module, const StateDict& state_dict, const LoadStateOptions& options) {
  // The module's tensors by name. A submodule registered under two names shows up under both (LibTorch does
  // not deduplicate, and neither does Python's state_dict), so both names must be in the file.
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (item.value().defined()) targets.emplace_back(item.key(), item.value());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    if (item.value().defined()) targets.emplace_back(item.key(), item.value());
  }

  std::unordered_map<std::string, const torch::Tensor*> file;
  std::vector<std::string> duplicates;
  for (const auto& [key, t] : state_dict) {
    if (!file.emplace(key, &t).second) duplicates.push_back(key);
  }

  std::vector<std::string> missing;
  std::vector<std::string> mismatched;
  std::unordered_set<std::string> wanted;
  for (const auto& [name, target] : targets) {
    wanted.insert(name);
    auto it = file.find(name);
    if (it == file.end()) {
      missing.push_back(name + " " + shape_string(target.sizes()));
    } else if (!it->second->defined()) {
      mismatched.push_back(name + ": module " + shape_string(target.sizes()) + ", state_dict undefined");
    } else if (it->second->sizes() != target.sizes()) {
      mismatched.push_back(name + ": module " + shape_string(target.sizes()) + ", state_dict " +
                           shape_string(it->second->sizes()));
    }
  }
  LoadReport report;
  std::vector<std::string> unexpected;
  for (const auto& [key, t] : state_dict) {
    if (wanted.count(key)) continue;
    if (is_ignorable(key, options.ignorable_unexpected)) {
      report.ignored.push_back(key);
    } else {
      unexpected.push_back(key + " " + (t.defined() ? shape_string(t.sizes()) : std::string("undefined")));
    }
  }

  if (!missing.empty() || !unexpected.empty() || !mismatched.empty() || !duplicates.empty()) {
    std::ostringstream os;
    os << "load_state_dict: the state_dict does not match the module";
    auto list = [&](const char* title, const std::vector<std::string>& items) {
      if (items.empty()) return;
      os << "\n  " << title << " (" << items.size() << "):";
      for (const auto& s : items) os << "\n    " << s;
    };
    list("missing keys (in the module, not in the state_dict)", missing);
    list("unexpected keys (in the state_dict, not in the module)", unexpected);
    list("shape mismatches", mismatched);
    list("duplicate keys in the state_dict", duplicates);
    TORCH_CHECK(false, os.str());
  }

  // Only now, with everything validated, touch the module: a failed load leaves it unchanged.
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    const torch::Tensor& source = *file.at(name);
    target.copy_(source.to(target.dtype()));
    report.loaded.push_back(name);
  }
  return report;
}

StateDict module_state_dict(const torch::nn::Module& module, const std::string& prefix) {
  StateDict out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (item.value().defined()) out.emplace_back(prefix + item.key(), item.value().detach());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    if (item.value().defined()) out.emplace_back(prefix + item.key(), item.value().detach());
  }
  return out;
}

}  // namespace cmn::model
