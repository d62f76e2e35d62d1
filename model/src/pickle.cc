#include "pickle.h"

#include <cstdio>
#include <cstring>
#include <limits>

namespace cmn::model::pickle {

namespace {

// Opcode values from CPython's Lib/pickle.py.
enum Op : uint8_t {
  MARK = '(',
  STOP = '.',
  BINFLOAT = 'G',
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  NONE = 'N',
  BINPERSID = 'Q',
  REDUCE = 'R',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  BINUNICODE = 'X',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  BINGET = 'h',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  PROTO = 0x80,
  NEWOBJ = 0x81,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
};

std::string opcode_name(uint8_t code) {
  char buf[32];
  if (code >= 0x20 && code < 0x7f) {
    std::snprintf(buf, sizeof buf, "0x%02x ('%c')", code, code);
  } else {
    std::snprintf(buf, sizeof buf, "0x%02x", code);
  }
  return buf;
}

std::string quoted(const std::string& s) {
  constexpr size_t kMax = 60;  // error messages stay readable even for huge strings
  return "'" + (s.size() > kMax ? s.substr(0, kMax) + "..." : s) + "'";
}

// Bounds-checked little-endian reads over the pickle bytes. Every read names the opcode being decoded so a
// truncated file gives "truncated pickle: BINUNICODE at offset 123 needs 40 bytes, 7 left".
class Cursor {
 public:
  Cursor(const char* data, size_t size) : data_(data), size_(size) {}

  bool at_end() const { return pos_ >= size_; }
  size_t pos() const { return pos_; }
  void begin_op(uint8_t code) {
    op_ = code;
    op_pos_ = pos_ - 1;
  }
  std::string where() const { return opcode_name(op_) + " at offset " + std::to_string(op_pos_); }

  uint8_t next_byte() { return static_cast<uint8_t>(take(1)[0]); }

  const char* take(uint64_t n) {
    TORCH_CHECK(n <= size_ - pos_, "truncated pickle: ", where(), " needs ", n, " bytes, ", size_ - pos_, " left");
    const char* p = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }

  uint64_t le(size_t n) {
    const auto* p = reinterpret_cast<const uint8_t*>(take(n));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
  }

  std::string line() {
    const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    TORCH_CHECK(nl != nullptr, "truncated pickle: ", where(), " has no end of line");
    size_t n = static_cast<const char*>(nl) - (data_ + pos_);
    std::string s(data_ + pos_, n);
    pos_ += n + 1;
    return s;
  }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  uint8_t op_ = 0;
  size_t op_pos_ = 0;
};

}  // namespace

void Value::dict_set(ValuePtr key, ValuePtr value) {
  if (key->kind == Kind::string) {
    auto [it, inserted] = string_index.emplace(key->text, entries.size());
    if (!inserted) {
      entries[it->second].second = std::move(value);
      return;
    }
  }
  entries.emplace_back(std::move(key), std::move(value));
}

ValuePtr Value::dict_get(const std::string& key) const {
  if (kind != Kind::dict) return nullptr;
  auto it = string_index.find(key);
  return it == string_index.end() ? nullptr : entries[it->second].second;
}

ValuePtr make_none() { return std::make_shared<Value>(); }

ValuePtr make_bool(bool b) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::boolean;
  v->boolean = b;
  return v;
}

ValuePtr make_int(int64_t i) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::integer;
  v->integer = i;
  return v;
}

ValuePtr make_float(double d) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::floating;
  v->floating = d;
  return v;
}

ValuePtr make_string(std::string s) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::string;
  v->text = std::move(s);
  return v;
}

static ValuePtr make_bytes(std::string s) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::bytes;
  v->text = std::move(s);
  return v;
}

ValuePtr make_tuple(std::vector<ValuePtr> items) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::tuple;
  v->items = std::move(items);
  return v;
}

static ValuePtr make_list() {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::list;
  return v;
}

ValuePtr make_dict(bool ordered) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::dict;
  v->ordered = ordered;
  return v;
}

ValuePtr make_global(std::string module, std::string name) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::global;
  v->text = std::move(module);
  v->name = std::move(name);
  return v;
}

ValuePtr make_tensor(torch::Tensor t) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::tensor;
  v->tensor = std::move(t);
  return v;
}

ValuePtr make_object(const Value& callable) {
  auto v = std::make_shared<Value>();
  v->kind = Value::Kind::object;
  v->name = callable.kind == Value::Kind::global ? callable.text + "." + callable.name : describe(callable);
  return v;
}

std::string describe(const Value& v) {
  switch (v.kind) {
    case Value::Kind::none: return "None";
    case Value::Kind::boolean: return v.boolean ? "True" : "False";
    case Value::Kind::integer: return "int " + std::to_string(v.integer);
    case Value::Kind::floating: return "float " + std::to_string(v.floating);
    case Value::Kind::string: return "str " + quoted(v.text);
    case Value::Kind::bytes: return "bytes of length " + std::to_string(v.text.size());
    case Value::Kind::tuple: return "tuple of " + std::to_string(v.items.size());
    case Value::Kind::list: return "list of " + std::to_string(v.items.size());
    case Value::Kind::dict: return (v.ordered ? "OrderedDict of " : "dict of ") + std::to_string(v.entries.size());
    case Value::Kind::global: return "global " + v.text + "." + v.name;
    case Value::Kind::tensor: return "tensor";
    case Value::Kind::storage: return "storage";
    case Value::Kind::object: return "object of " + v.name;
  }
  return "?";
}

ValuePtr unpickle(const char* data, size_t size, const UnpicklerHooks& hooks) {
  TORCH_CHECK(hooks.persistent_load, "unpickle: no persistent_load hook");
  Cursor in(data, size);
  std::vector<ValuePtr> stack;
  std::vector<size_t> marks;  // stack heights at each MARK (CPython's metastack)
  std::unordered_map<uint64_t, ValuePtr> memo;

  // Pops respect the innermost mark, as CPython does, so a malformed pickle cannot eat into an outer frame.
  auto floor = [&]() -> size_t { return marks.empty() ? 0 : marks.back(); };
  auto pop = [&]() -> ValuePtr {
    TORCH_CHECK(stack.size() > floor(), "malformed pickle: stack underflow at ", in.where());
    ValuePtr v = std::move(stack.back());
    stack.pop_back();
    return v;
  };
  auto top = [&]() -> ValuePtr& {
    TORCH_CHECK(stack.size() > floor(), "malformed pickle: stack underflow at ", in.where());
    return stack.back();
  };
  auto pop_mark = [&]() -> std::vector<ValuePtr> {
    TORCH_CHECK(!marks.empty(), "malformed pickle: no MARK for ", in.where());
    size_t m = marks.back();
    marks.pop_back();
    std::vector<ValuePtr> items(std::make_move_iterator(stack.begin() + static_cast<std::ptrdiff_t>(m)),
                                std::make_move_iterator(stack.end()));
    stack.resize(m);
    return items;
  };
  auto memo_get = [&](uint64_t idx) {
    auto it = memo.find(idx);
    TORCH_CHECK(it != memo.end(), "malformed pickle: memo key ", idx, " not found at ", in.where());
    stack.push_back(it->second);
  };
  auto memo_put = [&](uint64_t idx) { memo[idx] = top(); };
  auto set_items = [&](Value& target, std::vector<ValuePtr>& kv) {
    TORCH_CHECK(kv.size() % 2 == 0, "malformed pickle: odd number of items for ", in.where());
    // Objects we keep opaque (e.g. a defaultdict in optimizer state) may receive items; they are dropped.
    if (target.kind == Value::Kind::object) return;
    TORCH_CHECK(target.kind == Value::Kind::dict, "malformed pickle: ", in.where(), " on ", describe(target));
    for (size_t i = 0; i < kv.size(); i += 2) target.dict_set(std::move(kv[i]), std::move(kv[i + 1]));
  };
  auto append_items = [&](Value& target, std::vector<ValuePtr>& items) {
    if (target.kind == Value::Kind::object) return;
    TORCH_CHECK(target.kind == Value::Kind::list, "malformed pickle: ", in.where(), " on ", describe(target));
    for (auto& item : items) target.items.push_back(std::move(item));
  };
  // REDUCE and NEWOBJ: the hook knows torch's rebuild functions; OrderedDict() is the one generic constructor
  // that matters (every state_dict is one); everything else becomes an opaque object.
  auto construct = [&](const ValuePtr& callable, const ValuePtr& args, bool use_hook) -> ValuePtr {
    TORCH_CHECK(args->kind == Value::Kind::tuple, "malformed pickle: ", in.where(), " arguments are ",
                describe(*args), ", not a tuple");
    if (callable->kind == Value::Kind::global) {
      if (use_hook && hooks.reduce) {
        if (ValuePtr built = hooks.reduce(*callable, args)) return built;
      }
      if (callable->is_global("collections", "OrderedDict") && args->items.empty()) return make_dict(true);
    }
    return make_object(*callable);
  };

  while (!in.at_end()) {
    const uint8_t code = in.next_byte();
    in.begin_op(code);
    switch (code) {
      case PROTO: {
        const uint8_t proto = in.next_byte();
        TORCH_CHECK(proto <= 5, "unsupported pickle protocol ", int(proto), " at ", in.where());
        break;
      }
      case FRAME:
        in.le(8);  // frame length: we read the whole buffer anyway
        break;
      case STOP: {
        ValuePtr result = pop();
        return result;
      }
      case MARK: marks.push_back(stack.size()); break;
      case NONE: stack.push_back(make_none()); break;
      case NEWTRUE: stack.push_back(make_bool(true)); break;
      case NEWFALSE: stack.push_back(make_bool(false)); break;
      case BININT: stack.push_back(make_int(static_cast<int32_t>(static_cast<uint32_t>(in.le(4))))); break;
      case BININT1: stack.push_back(make_int(static_cast<int64_t>(in.le(1)))); break;
      case BININT2: stack.push_back(make_int(static_cast<int64_t>(in.le(2)))); break;
      case LONG1: {
        const uint8_t n = in.next_byte();
        TORCH_CHECK(n <= 8, "unsupported pickle integer of ", int(n), " bytes at ", in.where());
        uint64_t v = n == 0 ? 0 : in.le(n);
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
        stack.push_back(make_int(static_cast<int64_t>(v)));
        break;
      }
      case BINFLOAT: {
        const auto* p = reinterpret_cast<const uint8_t*>(in.take(8));
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big endian, unlike everything else
        double d;
        std::memcpy(&d, &bits, sizeof d);
        stack.push_back(make_float(d));
        break;
      }
      case BINUNICODE:
      case BINSTRING: {
        const uint64_t n = in.le(4);
        if (code == BINSTRING) {
          TORCH_CHECK(n <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max()),
                      "malformed pickle: negative length at ", in.where());
        }
        const char* p = in.take(n);
        stack.push_back(make_string(std::string(p, n)));
        break;
      }
      case SHORT_BINUNICODE:
      case SHORT_BINSTRING: {
        const uint64_t n = in.next_byte();
        const char* p = in.take(n);
        stack.push_back(make_string(std::string(p, n)));
        break;
      }
      case BINUNICODE8: {
        const uint64_t n = in.le(8);
        const char* p = in.take(n);
        stack.push_back(make_string(std::string(p, n)));
        break;
      }
      case BINBYTES:
      case SHORT_BINBYTES: {
        const uint64_t n = code == BINBYTES ? in.le(4) : in.next_byte();
        const char* p = in.take(n);
        stack.push_back(make_bytes(std::string(p, n)));
        break;
      }
      case EMPTY_TUPLE: stack.push_back(make_tuple({})); break;
      case TUPLE1: {
        ValuePtr a = pop();
        stack.push_back(make_tuple({std::move(a)}));
        break;
      }
      case TUPLE2: {
        ValuePtr b = pop();
        ValuePtr a = pop();
        stack.push_back(make_tuple({std::move(a), std::move(b)}));
        break;
      }
      case TUPLE3: {
        ValuePtr c = pop();
        ValuePtr b = pop();
        ValuePtr a = pop();
        stack.push_back(make_tuple({std::move(a), std::move(b), std::move(c)}));
        break;
      }
      case TUPLE: stack.push_back(make_tuple(pop_mark())); break;
      case EMPTY_LIST: stack.push_back(make_list()); break;
      case LIST: {
        ValuePtr list = make_list();
        list->items = pop_mark();
        stack.push_back(std::move(list));
        break;
      }
      case EMPTY_DICT: stack.push_back(make_dict(false)); break;
      case DICT: {
        std::vector<ValuePtr> kv = pop_mark();
        ValuePtr dict = make_dict(false);
        set_items(*dict, kv);
        stack.push_back(std::move(dict));
        break;
      }
      case APPEND: {
        std::vector<ValuePtr> one{pop()};
        append_items(*top(), one);
        break;
      }
      case APPENDS: {
        std::vector<ValuePtr> items = pop_mark();
        append_items(*top(), items);
        break;
      }
      case SETITEM: {
        ValuePtr value = pop();
        ValuePtr key = pop();
        std::vector<ValuePtr> kv{std::move(key), std::move(value)};
        set_items(*top(), kv);
        break;
      }
      case SETITEMS: {
        std::vector<ValuePtr> kv = pop_mark();
        set_items(*top(), kv);
        break;
      }
      case GLOBAL: {
        std::string module = in.line();
        std::string name = in.line();
        stack.push_back(make_global(std::move(module), std::move(name)));
        break;
      }
      case STACK_GLOBAL: {
        ValuePtr name = pop();
        ValuePtr module = pop();
        TORCH_CHECK(module->kind == Value::Kind::string && name->kind == Value::Kind::string,
                    "malformed pickle: ", in.where(), " needs two strings");
        stack.push_back(make_global(module->text, name->text));
        break;
      }
      case BINPUT: memo_put(in.le(1)); break;
      case LONG_BINPUT: memo_put(in.le(4)); break;
      case MEMOIZE: memo_put(memo.size()); break;
      case BINGET: memo_get(in.le(1)); break;
      case LONG_BINGET: memo_get(in.le(4)); break;
      case REDUCE: {
        ValuePtr args = pop();
        ValuePtr callable = pop();
        stack.push_back(construct(callable, args, /*use_hook=*/true));
        break;
      }
      case NEWOBJ: {
        ValuePtr args = pop();
        ValuePtr cls = pop();
        stack.push_back(construct(cls, args, /*use_hook=*/false));
        break;
      }
      case BUILD:
        // State for an object: {'_metadata': ...} on a state_dict OrderedDict, or the __dict__ of an object we
        // keep opaque. Neither matters for reading weights.
        pop();
        top();
        break;
      case BINPERSID: {
        ValuePtr pid = pop();
        ValuePtr obj = hooks.persistent_load(pid);
        TORCH_CHECK(obj != nullptr, "persistent_load returned nothing at ", in.where());
        stack.push_back(std::move(obj));
        break;
      }
      default:
        TORCH_CHECK(false, "unsupported pickle opcode ", opcode_name(code), " at offset ", in.pos() - 1);
    }
  }
  TORCH_CHECK(false, "truncated pickle: no STOP opcode in ", size, " bytes");
}

Writer::Writer() {
  op(PROTO);
  op(2);
}

void Writer::none() { op(NONE); }
void Writer::boolean(bool b) { op(b ? NEWTRUE : NEWFALSE); }

void Writer::integer(int64_t i) {
  if (i >= 0 && i <= 0xff) {
    op(BININT1);
    op(static_cast<uint8_t>(i));
  } else if (i >= 0 && i <= 0xffff) {
    op(BININT2);
    op(static_cast<uint8_t>(i & 0xff));
    op(static_cast<uint8_t>(i >> 8));
  } else if (i >= std::numeric_limits<int32_t>::min() && i <= std::numeric_limits<int32_t>::max()) {
    op(BININT);
    const auto u = static_cast<uint32_t>(static_cast<int32_t>(i));
    for (int k = 0; k < 4; ++k) op(static_cast<uint8_t>(u >> (8 * k)));
  } else {
    // LONG1 with the shortest two's complement little-endian encoding, as CPython's encode_long.
    const auto u = static_cast<uint64_t>(i);
    uint8_t bytes[8];
    for (int k = 0; k < 8; ++k) bytes[k] = static_cast<uint8_t>(u >> (8 * k));
    int n = 8;
    while (n > 1 && ((bytes[n - 1] == 0x00 && !(bytes[n - 2] & 0x80)) || (bytes[n - 1] == 0xff && (bytes[n - 2] & 0x80)))) {
      --n;
    }
    op(LONG1);
    op(static_cast<uint8_t>(n));
    raw(bytes, static_cast<size_t>(n));
  }
}

void Writer::floating(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  op(BINFLOAT);
  for (int k = 7; k >= 0; --k) op(static_cast<uint8_t>(bits >> (8 * k)));
}

void Writer::string(const std::string& s) {
  TORCH_CHECK(s.size() <= std::numeric_limits<uint32_t>::max(), "pickle: string too long");
  op(BINUNICODE);
  const auto n = static_cast<uint32_t>(s.size());
  for (int k = 0; k < 4; ++k) op(static_cast<uint8_t>(n >> (8 * k)));
  raw(s.data(), s.size());
}

void Writer::global(const std::string& module, const std::string& name) {
  op(GLOBAL);
  out_ += module;
  out_ += '\n';
  out_ += name;
  out_ += '\n';
}

void Writer::mark() { op(MARK); }
void Writer::tuple_from_mark() { op(TUPLE); }
void Writer::empty_tuple() { op(EMPTY_TUPLE); }

void Writer::int_tuple(const std::vector<int64_t>& values) {
  if (values.empty()) {
    op(EMPTY_TUPLE);
    return;
  }
  const bool short_form = values.size() <= 3;
  if (!short_form) op(MARK);
  for (int64_t v : values) integer(v);
  if (short_form) {
    op(static_cast<uint8_t>(TUPLE1 + values.size() - 1));
  } else {
    op(TUPLE);
  }
}

void Writer::empty_dict() { op(EMPTY_DICT); }
void Writer::setitem() { op(SETITEM); }
void Writer::setitems() { op(SETITEMS); }
void Writer::reduce() { op(REDUCE); }
void Writer::build() { op(BUILD); }
void Writer::binpersid() { op(BINPERSID); }
void Writer::stop() { op(STOP); }

void Writer::ordered_dict() {
  global("collections", "OrderedDict");
  op(EMPTY_TUPLE);
  op(REDUCE);
}

}  // namespace cmn::model::pickle
