#pragma once
// A reader and a writer for the subset of Python's pickle format that torch.save produces (protocol 2, plus
// the few protocol 3/4 opcodes a newer pickler may emit). Private to cmn_model: checkpoint.cc gives the
// torch-specific meaning (storages, tensors, OrderedDict) through the hooks below, so this file knows nothing
// about the zip container.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace cmn::model::pickle {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

// One unpickled object. Containers are shared (ValuePtr) because the pickle memo hands out references to
// the same dict or list that SETITEMS/APPENDS later fill in.
struct Value {
  enum class Kind {
    none,
    boolean,
    integer,
    floating,
    string,   // BINUNICODE and the protocol-1 BINSTRING family
    bytes,
    tuple,
    list,
    dict,
    global,   // a class or function reference (GLOBAL / STACK_GLOBAL): module + name
    tensor,   // produced by the reduce hook (torch._utils._rebuild_tensor_v2, ...)
    storage,  // produced by the persistent_load hook: a 1-D tensor over the whole storage record
    object,   // anything else a REDUCE/NEWOBJ builds; kept opaque so unknown objects parse and are skipped
  };

  Kind kind = Kind::none;
  bool boolean = false;
  int64_t integer = 0;
  double floating = 0.0;
  std::string text;    // string / bytes payload; for a global, the module
  std::string name;    // for a global, the attribute name; for an object, "module.name" of its callable
  std::vector<ValuePtr> items;                         // tuple / list
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;  // dict, in insertion order
  std::unordered_map<std::string, size_t> string_index;  // dict: string key -> position in entries
  bool ordered = false;  // dict built from collections.OrderedDict
  torch::Tensor tensor;  // tensor / storage

  Value() = default;
  Value(const Value&) = default;
  Value(Value&&) = default;
  Value& operator=(const Value&) = default;
  Value& operator=(Value&&) = default;
  // Releases children iteratively: the default destructor recurses once per nesting level, and a pickle of a
  // few megabytes (one TUPLE1 byte per level) nests deep enough to overflow the stack.
  ~Value();

  // Python dict assignment semantics: an existing (string) key keeps its position and gets the new value.
  void dict_set(ValuePtr key, ValuePtr value);
  // Dict lookup by string key; nullptr when absent (or when this is not a dict).
  ValuePtr dict_get(const std::string& key) const;

  bool is_global(const char* module, const char* attr) const {
    return kind == Kind::global && text == module && name == attr;
  }
};

ValuePtr make_none();
ValuePtr make_bool(bool b);
ValuePtr make_int(int64_t i);
ValuePtr make_float(double d);
ValuePtr make_string(std::string s);
ValuePtr make_tuple(std::vector<ValuePtr> items);
ValuePtr make_dict(bool ordered);
ValuePtr make_global(std::string module, std::string name);
ValuePtr make_tensor(torch::Tensor t);
ValuePtr make_object(const Value& callable);

// A short description for error messages: "str 'abc'", "tuple of 5", "global torch.FloatStorage", ...
std::string describe(const Value& v);

struct UnpicklerHooks {
  // BINPERSID: turns a persistent id into an object (torch.save: a storage). Required.
  std::function<ValuePtr(const ValuePtr& pid)> persistent_load;
  // REDUCE / NEWOBJ with a callable that is a global: return the built object, or nullptr to fall back to the
  // generic behaviour (an OrderedDict for collections.OrderedDict(), an opaque object otherwise).
  std::function<ValuePtr(const Value& callable, const ValuePtr& args)> reduce;
};

// Unpickles `data`. Throws c10::Error naming the opcode and byte offset on anything malformed or unsupported.
ValuePtr unpickle(const char* data, size_t size, const UnpicklerHooks& hooks);

// Emits pickle protocol 2 the way CPython's pickler does for the objects torch.save writes (no memo: the
// output is valid without BINPUT/BINGET and only slightly larger).
class Writer {
 public:
  Writer();  // writes PROTO 2
  void none();
  void boolean(bool b);
  void integer(int64_t i);
  void floating(double d);
  void string(const std::string& s);
  void global(const std::string& module, const std::string& name);
  void mark();
  void tuple_from_mark();  // TUPLE
  void empty_tuple();
  // A tuple of small ints as CPython writes it: EMPTY_TUPLE, TUPLE1..3, or MARK ... TUPLE.
  void int_tuple(const std::vector<int64_t>& values);
  void empty_dict();
  void setitem();   // SETITEM
  void setitems();  // SETITEMS (pops to the mark)
  void reduce();
  void build();
  void binpersid();
  void stop();
  // collections.OrderedDict(): GLOBAL + EMPTY_TUPLE + REDUCE.
  void ordered_dict();

  const std::string& data() const { return out_; }

 private:
  void op(uint8_t code) { out_.push_back(static_cast<char>(code)); }
  void raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string out_;
};

}  // namespace cmn::model::pickle
